"""AlignedReID local distance and the distance functions."""

from __future__ import annotations

import numpy as np
import pytest

from reidctl.errors import ShapeMismatchError, UnknownNameError
from reidctl.evaluate.distance import DistanceFn, compute_distance
from reidctl.evaluate.local import LocalDistance, local_distance
from reidctl.evaluate.reference import local_dist_dense


def test_golden_two_stripes():
    a, b = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    x = np.array([[a, b]], np.float32)
    y = np.array([[a, b], [b, a]], np.float32)
    d = local_distance(x, y)
    # same stripes: the path must cross one off-diagonal cell, distance sqrt(2)
    # swapped stripes: every path holds both corner cells (distance sqrt(2) each) and one
    # zero off-diagonal cell
    assert d[0, 0] == pytest.approx(np.tanh(np.sqrt(2) / 2), abs=1e-6)
    assert d[0, 1] == pytest.approx(2 * np.tanh(np.sqrt(2) / 2), abs=1e-6)
    z = np.array([[a, a]], np.float32)
    assert local_distance(z, z)[0, 0] == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize(("rows", "tile"), [(1, 1), (4, 7), (64, 1024)])
def test_equals_alignedreid_reference(rows, tile):
    rng = np.random.default_rng(tile)
    x = rng.standard_normal((13, 6, 8)).astype(np.float32)
    y = rng.standard_normal((29, 6, 8)).astype(np.float32)
    ref = local_dist_dense(x, y)
    np.testing.assert_allclose(local_distance(x, y), ref, atol=1e-5)
    loc = LocalDistance(np.concatenate([x, y]))
    np.testing.assert_allclose(
        loc.block(np.arange(13), 13, 42, rows_per_chunk=rows, tile=tile), ref, atol=1e-5
    )
    # distinct items only: sqrt amplifies float32 cancellation at distance ~0
    i, j = rng.integers(0, 13, 50), rng.integers(13, 42, 50)
    full = local_dist_dense(loc.x, loc.x)
    np.testing.assert_allclose(loc.pairs(i, j), full[i, j], atol=1e-5)


def test_local_shape_errors():
    with pytest.raises(ShapeMismatchError, match="stripes"):
        local_distance(np.zeros((2, 8)), np.zeros((2, 4, 8)))
    with pytest.raises(ShapeMismatchError, match="differ"):
        local_distance(np.zeros((2, 4, 8)), np.zeros((2, 3, 8)))


@pytest.mark.parametrize("metric", ["euclidean", "sqeuclidean", "cosine"])
def test_compute_distance_metrics(metric):
    rng = np.random.default_rng(0)
    q, g = rng.standard_normal((7, 5)), rng.standard_normal((11, 5))
    diff = q[:, None, :] - g[None, :, :]
    expected = {
        "euclidean": np.sqrt((diff**2).sum(-1)),
        "sqeuclidean": (diff**2).sum(-1),
        "cosine": 1
        - (q / np.linalg.norm(q, axis=1, keepdims=True))
        @ (g / np.linalg.norm(g, axis=1, keepdims=True)).T,
    }[metric]
    d = compute_distance(q, g, metric)
    assert d.dtype == np.float32
    np.testing.assert_allclose(d, expected, atol=1e-5)
    fn = DistanceFn(np.concatenate([q, g]).astype(np.float32), metric)
    i, j = rng.integers(0, 7, 30), rng.integers(7, 18, 30)  # distinct items
    full = fn.block(np.arange(18), 0, 18)
    np.testing.assert_allclose(fn.pairs(i, j), full[i, j], atol=1e-5)


def test_unknown_metric_lists_choices():
    with pytest.raises(UnknownNameError, match="cosine"):
        compute_distance(np.zeros((1, 2)), np.zeros((1, 2)), "manhattan")
