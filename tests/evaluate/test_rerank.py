"""Sparse k-reciprocal re-ranking against a direct dense implementation of the authors' code."""

from __future__ import annotations

import numpy as np
import pytest

from reidctl.errors import InputError
from reidctl.evaluate.distance import compute_distance
from reidctl.evaluate.local import local_distance
from reidctl.evaluate.rank import evaluate_rank
from reidctl.evaluate.reference import re_ranking_dense
from reidctl.evaluate.rerank import _top_k_rows, re_ranking


def _set(nq, ng, ids, dim, noise, seed):
    rng = np.random.default_rng(seed)
    pids = rng.integers(1, ids + 1, nq + ng)
    cams = rng.integers(1, 7, nq + ng)
    centres = rng.standard_normal((ids + 1, dim))
    x = (centres[pids] + noise * rng.standard_normal((nq + ng, dim))).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x[:nq], x[nq:], pids[:nq], pids[nq:], cams[:nq], cams[nq:]


def _dense(q, g, metric="euclidean", **kw):
    return re_ranking_dense(
        compute_distance(q, g, metric),
        compute_distance(q, q, metric),
        compute_distance(g, g, metric),
        **kw,
    )


@pytest.fixture(scope="module")
def market_300x1200():
    return _set(300, 1200, 150, 64, 1.3, 0)


def test_equals_dense_on_300x1200(market_300x1200):
    q, g, qp, gp, qc, gc = market_300x1200
    fast = re_ranking(q, g, chunk=512)
    ref = _dense(q, g)
    assert fast.shape == ref.shape == (300, 1200)
    assert np.abs(fast - ref).max() <= 1e-4
    a = evaluate_rank(fast, qp, gp, qc, gc)
    b = evaluate_rank(ref, qp, gp, qc, gc)
    base = evaluate_rank(compute_distance(q, g), qp, gp, qc, gc)
    assert a.rank1 == b.rank1 and a.mAP == pytest.approx(b.mAP, abs=1e-6)
    assert a.mAP != pytest.approx(base.mAP, abs=1e-3)  # re-ranking changed something


@pytest.mark.parametrize(
    ("k1", "k2", "lam", "metric"),
    [
        (7, 1, 0.0, "euclidean"),
        (5, 3, 1.0, "cosine"),
        (11, 2, 0.5, "sqeuclidean"),
        (1, 1, 0.3, "euclidean"),
    ],
)
def test_parameters_and_metrics_equal_dense(k1, k2, lam, metric):
    q, g, *_ = _set(40, 160, 30, 24, 1.0, k1)
    fast = re_ranking(q, g, k1, k2, lam, metric=metric, chunk=37)
    ref = _dense(q, g, metric, k1=k1, k2=k2, lambda_value=lam)
    assert np.abs(fast - ref).max() <= 1e-4


def test_local_and_global_plus_local_equal_dense():
    rng = np.random.default_rng(4)
    q, g, *_ = _set(30, 90, 20, 16, 1.0, 9)
    ql = rng.standard_normal((30, 4, 8)).astype(np.float32)
    gl = rng.standard_normal((90, 4, 8)).astype(np.float32)
    fast = re_ranking(None, None, q_local=ql, g_local=gl, chunk=25)
    ref = re_ranking_dense(local_distance(ql, gl), local_distance(ql, ql), local_distance(gl, gl))
    assert np.abs(fast - ref).max() <= 1e-4
    fast = re_ranking(q, g, q_local=ql, g_local=gl, local_weight=0.5)
    dist = lambda a, b, la, lb: compute_distance(a, b) + 0.5 * local_distance(la, lb)  # noqa: E731
    ref = re_ranking_dense(dist(q, g, ql, gl), dist(q, q, ql, ql), dist(g, g, gl, gl))
    assert np.abs(fast - ref).max() <= 1e-4


@pytest.mark.parametrize("n", [30, 700, 1401])
def test_top_k_rows_equals_stable_argsort(n):
    od = np.random.default_rng(n).integers(0, 40, (23, n)).astype(np.float32)
    np.testing.assert_array_equal(
        _top_k_rows(od, 21), np.argsort(od, axis=1, kind="stable")[:, :21]
    )


def test_bad_parameters():
    q, g, *_ = _set(5, 10, 3, 4, 1.0, 0)
    with pytest.raises(InputError, match="k1"):
        re_ranking(q, g, k1=0)
    with pytest.raises(InputError, match="lambda"):
        re_ranking(q, g, lambda_value=1.5)


def test_smallest_k_columns_with_bound():
    from reidctl.evaluate.rerank import _smallest_k

    od = np.random.default_rng(1).integers(0, 30, (500, 40)).astype(np.float32)
    bound = np.random.default_rng(2).integers(0, 4, 40).astype(np.float32)
    v, i = _smallest_k(od, 21, bound, axis=0)
    for col in range(40):
        order = np.argsort(od[:, col], kind="stable")
        order = order[od[order, col] <= bound[col]][:21]
        n = len(order)
        np.testing.assert_array_equal(i[col, :n], order)
        np.testing.assert_array_equal(v[col, :n], od[order, col])
        assert (i[col, n:] == -1).all() and np.isinf(v[col, n:]).all()


def test_fewer_items_than_k1():
    q, g, *_ = _set(3, 5, 2, 4, 1.0, 3)
    fast = re_ranking(q, g)  # k1 = 20 > N - 1: every list holds all 8 items
    assert np.abs(fast - _dense(q, g)).max() <= 1e-4
