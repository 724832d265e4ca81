"""CMC / mAP / mINP: hand-computed cases, and the fast path against the reference loop."""

from __future__ import annotations

import numpy as np
import pytest

from reidctl.errors import BadDataError, ShapeMismatchError, UnknownNameError
from reidctl.evaluate.rank import evaluate_rank, evaluate_topk
from reidctl.evaluate.reference import eval_market1501_loop

# one gallery: pid, camera, and the distance of each item from queries 0..3
G_PIDS = np.array([1, 2, 1, 0, -1, 1, 3, 3])
G_CAMS = np.array([1, 2, 2, 2, 2, 3, 1, 2])
DIST = np.array(
    [
        # q0 (pid 1, cam 1): item 0 same cam -> ignored, item 4 junk -> ignored,
        # item 2 (match) ties with item 3 (distractor) and wins by gallery order
        [0.1, 0.2, 0.3, 0.3, 0.05, 0.9, 0.5, 0.6],
        # q1 (pid 1, cam 2): item 2 same cam ignored; distractor item 3 ties with match
        # item 5 and precedes it (smaller index) -> matches at ranks 3 and 5
        [0.7, 0.5, 0.0, 0.4, 0.0, 0.4, 0.8, 0.2],
        # q2 (pid 3, cam 2): its only other-camera image is item 6 -> valid
        [0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.1, 0.2],
        # q3 (pid 0): distractors are never queries
        [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7],
    ],
    dtype=np.float32,
)
Q_PIDS = np.array([1, 1, 3, 0])
Q_CAMS = np.array([1, 2, 2, 1])


def test_golden_market_case():
    r = evaluate_rank(DIST, Q_PIDS, G_PIDS, Q_CAMS, G_CAMS, max_rank=5)
    # q0 valid order: 2(0.2 pid2) -> item1, item2 (match), item3, item6, item7, item5 (match)
    # matches at ranks 2 and 6: AP = (1/2 + 2/6) / 2, INP = 2/6
    # q1 valid order: item7(0.2), item3(0.4), item5(0.4, match), item1, item0(match), item6
    # matches at ranks 3 and 5: AP = (1/3 + 2/5) / 2, INP = 2/5
    # q2 valid order: item6 (match, 0.1) first: AP 1, INP 1
    assert r.num_query == 4 and r.num_valid == 3
    assert r.first_rank.tolist() == [2, 3, 1, 0]
    ap = [(1 / 2 + 2 / 6) / 2, (1 / 3 + 2 / 5) / 2, 1.0]
    assert r.mAP == pytest.approx(np.mean(ap), abs=1e-12)
    assert r.mINP == pytest.approx(np.mean([2 / 6, 2 / 5, 1.0]), abs=1e-12)
    assert r.cmc.tolist() == pytest.approx([1 / 3, 2 / 3, 1.0, 1.0, 1.0])
    assert np.isnan(r.ap[3])


def test_golden_interpolated_ap():
    r = evaluate_rank(DIST[:1], Q_PIDS[:1], G_PIDS, Q_CAMS[:1], G_CAMS, ap="interpolated")
    # official code: sum over matches of (1/ngood) * (old_precision + precision) / 2
    # match 1 at rank 2: old precision 0/1, precision 1/2; match 2 at rank 6: 1/5, 2/6
    expected = 0.5 * ((0 + 1 / 2) / 2 + (1 / 5 + 2 / 6) / 2)
    assert r.mAP == pytest.approx(expected, abs=1e-12)


def test_query_without_valid_match_is_left_out_and_counted():
    d = np.array([[0.1, 0.2]], np.float32)
    with pytest.raises(BadDataError, match="none of the 1 queries"):
        evaluate_rank(d, [5], [5, 6], [1], [1, 2])
    r = evaluate_rank(d, [5], [5, 6], [1], [1, 2], allow_no_valid=True)
    assert r.num_valid == 0 and r.num_query == 1


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("ap", ["step", "interpolated"])
def test_fast_path_equals_reference_loop_with_ties(seed, ap):
    rng = np.random.default_rng(seed)
    nq, ng = int(rng.integers(5, 60)), int(rng.integers(20, 300))
    dtype = np.float32 if seed % 2 else np.float64
    # few distinct values: many ties, which must break by gallery order
    dist = rng.integers(-2, 8, (nq, ng)).astype(dtype) / 4
    q_pids, g_pids = rng.integers(-1, 8, nq), rng.integers(-1, 8, ng)
    q_cams, g_cams = rng.integers(0, 3, nq), rng.integers(0, 3, ng)
    cmc, m_ap, m_inp, n_valid = eval_market1501_loop(dist, q_pids, g_pids, q_cams, g_cams, 20, ap)
    r = evaluate_rank(dist, q_pids, g_pids, q_cams, g_cams, 20, ap, chunk=int(rng.integers(1, 9)))
    assert r.num_valid == n_valid
    np.testing.assert_array_equal(r.cmc, cmc)
    assert r.mAP == pytest.approx(m_ap, abs=1e-12)
    assert r.mINP == pytest.approx(m_inp, abs=1e-12)


def test_negative_zero_ties_with_zero():
    d = np.array([[0.0, -0.0, 0.0]], np.float32)
    r = evaluate_rank(d, [1], [2, 1, 1], [1], [2, 2, 2])
    assert r.first_rank[0] == 2  # -0.0 == 0.0: the tie breaks by index


def test_bad_inputs():
    with pytest.raises(BadDataError, match="NaN"):
        evaluate_rank(np.array([[np.nan, 1.0]]), [1], [1, 2], [1], [2, 2])
    with pytest.raises(ShapeMismatchError, match="gallery"):
        evaluate_rank(np.zeros((1, 2)), [1], [1, 2, 3], [1], [2, 2, 2])
    with pytest.raises(UnknownNameError, match="interpolated"):
        evaluate_rank(np.zeros((1, 2)), [1], [1, 2], [1], [2, 2], ap="trapezoid")


def test_cuhk03_single_shot():
    rng = np.random.default_rng(0)
    nq, ids = 30, 10
    q_pids = rng.integers(1, ids + 1, nq)
    q_cams = np.ones(nq, int)
    # one gallery image per identity: single-shot sampling has nothing to choose
    g_pids, g_cams = np.arange(1, ids + 1), np.full(ids, 2)
    d = rng.random((nq, ids)).astype(np.float32)
    m = evaluate_rank(d, q_pids, g_pids, q_cams, g_cams, 5)
    c = evaluate_rank(d, q_pids, g_pids, q_cams, g_cams, 5, protocol="cuhk03")
    np.testing.assert_allclose(c.cmc, m.cmc)
    assert c.mAP == m.mAP
    # several images per identity: sampling can only move the first match earlier
    g_pids, g_cams = np.repeat(np.arange(1, ids + 1), 4), np.full(4 * ids, 2)
    d = rng.random((nq, 4 * ids)).astype(np.float32)
    m = evaluate_rank(d, q_pids, g_pids, q_cams, g_cams, 5)
    c1 = evaluate_rank(d, q_pids, g_pids, q_cams, g_cams, 5, protocol="cuhk03", seed=3)
    c2 = evaluate_rank(d, q_pids, g_pids, q_cams, g_cams, 5, protocol="cuhk03", seed=3)
    np.testing.assert_array_equal(c1.cmc, c2.cmc)
    assert c1.mAP == m.mAP
    assert (np.diff(c1.cmc) >= 0).all() and c1.cmc[-1] <= 1.0


def test_topk_full_lists_equal_evaluate_rank():
    rng = np.random.default_rng(5)
    nq, ng = 40, 150
    d = rng.random((nq, ng)).astype(np.float32)
    q_pids, g_pids = rng.integers(1, 10, nq), rng.integers(-1, 10, ng)
    q_cams, g_cams = rng.integers(0, 3, nq), rng.integers(0, 3, ng)
    full = evaluate_rank(d, q_pids, g_pids, q_cams, g_cams, 20)
    order = np.argsort(d, axis=1, kind="stable")
    t = evaluate_topk(order, np.take_along_axis(d, order, 1), q_pids, g_pids, q_cams, g_cams, 20)
    assert t.mAP == pytest.approx(full.mAP) and t.mINP == pytest.approx(full.mINP)
    np.testing.assert_allclose(t.cmc, full.cmc)
    # truncated lists: CMC within k unchanged, AP a lower bound, -1 padding tolerated
    k = 8
    short = order[:, :k].copy()
    short[0, -1] = -1
    tk = evaluate_topk(short, None, q_pids, g_pids, q_cams, g_cams, 20)
    assert len(tk.cmc) == k and tk.num_valid == full.num_valid
    assert tk.mAP <= full.mAP + 1e-12 and tk.mAP > 0
    np.testing.assert_allclose(tk.cmc[: k - 1], full.cmc[: k - 1], atol=1 / full.num_valid)


def test_cuhk03_single_shot_expectation():
    # query pid 1 (camera 1); matches at 0.2 and 0.6; identity 2 at 0.1 and 0.5; identity 3
    # at 0.4; a junk image at 0.0 and a same-camera image of pid 1 at 0.05 are never drawn.
    # The four equally likely draws put the match at ranks 2, 1, 3, 3.
    d = np.array([[0.2, 0.6, 0.1, 0.5, 0.4, 0.0, 0.05]], np.float32)
    g_pids, g_cams = np.array([1, 1, 2, 2, 3, -1, 1]), np.array([2, 2, 1, 1, 1, 1, 1])
    r = evaluate_rank(d, [1], g_pids, [1], g_cams, 3, protocol="cuhk03", num_repeats=4000)
    np.testing.assert_allclose(r.cmc, [0.25, 0.5, 1.0], atol=0.03)
