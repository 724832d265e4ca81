"""CMC, mAP and mINP under the Market-1501 and CUHK03 protocols, without sorting rows.

Protocol (Market-1501, as torchreid's ``eval_market1501`` and the official code):

* for a query, gallery items with the same pid *and* the same camera are ignored, junk
  (pid -1) is ignored, distractors (pid 0) count as wrong matches;
* queries with pid <= 0 are never evaluated, and a query without any valid match (a
  same-pid item from another camera) is left out and counted (``num_query - num_valid``);
* ties in distance are broken by gallery order, as a stable sort would;
* CMC(r) = fraction of valid queries whose first match is at rank <= r; AP is the step AP
  (mean of precision at each match, torchreid) or the trapezoid ("interpolated") AP of the
  official Market-1501 evaluation code; INP = (number of matches) / (rank of the last one).

Speed: instead of sorting each row, the rank of every match is counted: only items no
farther than the query's farthest match can precede a match, so those few candidates are
found with one vectorised comparison per row chunk and sorted by (distance, gallery index).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from reidctl.errors import BadDataError, InputError, ShapeMismatchError, UnknownNameError

AP_KINDS = ("step", "interpolated")
PROTOCOLS = ("market1501", "cuhk03")


@dataclass
class RankResult:
    """Accuracy over a query set.

    ``cmc`` [max_rank] (float64) holds CMC(1..max_rank) as fractions; ``mAP`` and ``mINP``
    are fractions. Per-query arrays (length ``num_query``): ``ap``, ``inp`` (NaN for queries
    left out) and ``first_rank`` (1-based rank of the first valid match, 0 when none).
    """

    cmc: np.ndarray
    mAP: float
    mINP: float
    num_query: int
    num_valid: int
    ap: np.ndarray = field(repr=False)
    inp: np.ndarray = field(repr=False)
    first_rank: np.ndarray = field(repr=False)

    def rank(self, r: int) -> float:
        """CMC at rank ``r`` (1-based); the last value when ``r`` exceeds ``max_rank``."""
        return float(self.cmc[min(r, len(self.cmc)) - 1])

    @property
    def rank1(self) -> float:
        return self.rank(1)

    @property
    def valid(self) -> np.ndarray:
        return self.first_rank > 0


def check_labels(
    shape: tuple[int, int],
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    q_camids: np.ndarray,
    g_camids: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    arrs = [np.asarray(a).astype(np.int64).ravel() for a in (q_pids, g_pids, q_camids, g_camids)]
    nq, ng = shape
    if len(arrs[0]) != nq or len(arrs[2]) != nq:
        raise ShapeMismatchError(
            f"{nq} query rows but {len(arrs[0])} query pids and {len(arrs[2])} query camids"
        )
    if len(arrs[1]) != ng or len(arrs[3]) != ng:
        raise ShapeMismatchError(
            f"{ng} gallery columns but {len(arrs[1])} gallery pids and {len(arrs[3])} camids"
        )
    return arrs[0], arrs[1], arrs[2], arrs[3]


def _check_options(max_rank: int, ap: str, protocol: str) -> None:
    if int(max_rank) < 1:
        raise InputError(f"max_rank must be >= 1, got {max_rank}")
    if ap not in AP_KINDS:
        raise UnknownNameError("AP kind", ap, AP_KINDS)
    if protocol not in PROTOCOLS:
        raise UnknownNameError("protocol", protocol, PROTOCOLS)


def _in_camsets(
    gi: np.ndarray, cams: np.ndarray, camsets: Sequence[np.ndarray], ng: int
) -> np.ndarray:
    """Whether camera ``cams[p]`` is in ``camsets[gi[p]]``, for every pair p: bool [P]."""
    if len(camsets) != ng:
        raise ShapeMismatchError(f"{ng} gallery columns but {len(camsets)} camera sets")
    lens = np.array([len(s) for s in camsets], np.int64)
    ent = np.repeat(np.arange(ng, dtype=np.int64), lens)
    sets = np.concatenate([np.asarray(s, np.int64) for s in camsets]) if ent.size else ent
    lo = min(int(sets.min(initial=0)), int(cams.min(initial=0)))
    width = max(int(sets.max(initial=0)), int(cams.max(initial=0))) - lo + 1
    return np.isin(gi * width + (cams - lo), ent * width + (sets - lo))


def _match_lists(
    q_pids: np.ndarray,
    q_camids: np.ndarray,
    g_pids: np.ndarray,
    g_camids: np.ndarray,
    g_camsets: Sequence[np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For every query with pid > 0, the gallery items of its pid.

    Returns flat arrays (query index, gallery index, is_match) where is_match is False for
    same-camera items (ignored by the protocol): the item's camera equals the query's, or,
    with ``g_camsets`` (one array of camera ids per gallery item), the query's camera is in
    the item's set. Queries appear in ascending order.
    """
    order = np.argsort(g_pids, kind="stable")
    sorted_pids = g_pids[order]
    lo = np.searchsorted(sorted_pids, q_pids, side="left")
    hi = np.searchsorted(sorted_pids, q_pids, side="right")
    cnt = np.where(q_pids > 0, hi - lo, 0)
    qi = np.repeat(np.arange(len(q_pids)), cnt)
    starts = np.repeat(lo - (np.cumsum(cnt) - cnt), cnt)
    gi = order[starts + np.arange(cnt.sum())]
    if g_camsets is None:
        is_match = g_camids[gi] != q_camids[qi]
    else:
        is_match = ~_in_camsets(gi, q_camids[qi], g_camsets, len(g_pids))
    return qi, gi, is_match


def _monotone_bits(v: np.ndarray) -> np.ndarray:
    """float32 -> uint64 whose integer order is the float order (-0.0 equals +0.0)."""
    b = (v.astype(np.float32) + np.float32(0.0)).view(np.uint32).astype(np.uint64)
    neg = (b >> np.uint64(31)).astype(bool)
    return np.where(neg, np.uint64(0xFFFFFFFF) - b, b | np.uint64(0x80000000))


def _stable_rank_order(r: np.ndarray, v: np.ndarray, c: np.ndarray, nrows: int, ncols: int):
    """Permutation sorting candidates by (row, value, column)."""
    cbits = max(1, int(ncols - 1).bit_length())
    rbits = max(1, int(nrows - 1).bit_length())
    if v.dtype == np.float32 and rbits + 32 + cbits <= 64:
        key = (r.astype(np.uint64) << np.uint64(32 + cbits)) | (
            _monotone_bits(v) << np.uint64(cbits)
        )
        key |= c.astype(np.uint64)
        return np.argsort(key)
    return np.lexsort((c, v, r))


def _match_ranks_chunk(
    dist: np.ndarray,
    qi: np.ndarray,
    gi: np.ndarray,
    is_match: np.ndarray,
    junk: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray]:
    """1-based ranks of the matches of the rows of ``dist`` [B, G] among valid items.

    ``qi`` (local row), ``gi``, ``is_match``: the same-pid lists of these rows. Returns
    (row, rank) of every match.
    """
    b, ng = dist.shape
    mr, mg = qi[is_match], gi[is_match]
    mv = dist[mr, mg]
    vmax = np.full(b, -np.inf, dtype=dist.dtype)
    np.maximum.at(vmax, mr, mv)
    cand = dist <= vmax[:, None]
    if junk is not None:
        cand &= ~junk[None, :]
    ign = ~is_match
    cand[qi[ign], gi[ign]] = False
    r, c = np.nonzero(cand)
    cbits = max(1, int(ng - 1).bit_length())
    rbits = max(1, int(b - 1).bit_length())
    if dist.dtype == np.float32 and rbits + 32 + cbits <= 64:
        # count instead of sort: bucket every candidate between the sorted match keys
        shift_r, shift_v = np.uint64(32 + cbits), np.uint64(cbits)
        ckey = (r.astype(np.uint64) << shift_r) | (_monotone_bits(dist[r, c]) << shift_v)
        ckey |= c.astype(np.uint64)
        mkey = (mr.astype(np.uint64) << shift_r) | (_monotone_bits(mv) << shift_v)
        mkey |= mg.astype(np.uint64)
        morder = np.argsort(mkey)
        skeys = mkey[morder]
        counts = np.cumsum(np.bincount(np.searchsorted(skeys, ckey), minlength=len(skeys)))
        row_start = np.searchsorted(r, np.arange(b))
        ranks = np.empty(len(mkey), dtype=np.int64)
        ranks[morder] = counts[: len(skeys)] - row_start[mr[morder]]
        return mr, ranks
    order = _stable_rank_order(r, dist[r, c], c, b, ng)
    pos = np.empty(len(order), dtype=np.int64)
    pos[order] = np.arange(len(order))
    row_start = np.searchsorted(r, np.arange(b))
    flat = r.astype(np.int64) * ng + c
    idx = np.searchsorted(flat, mr.astype(np.int64) * ng + mg)
    return mr, pos[idx] - row_start[mr] + 1


def _scores_from_ranks(
    rows: np.ndarray, ranks: np.ndarray, n: int, ap_kind: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-row (AP, INP, first rank) from the 1-based ranks of each row's matches."""
    ap = np.full(n, np.nan)
    inp = np.full(n, np.nan)
    first = np.zeros(n, dtype=np.int64)
    if len(rows) == 0:
        return ap, inp, first
    o = np.lexsort((ranks, rows))
    rows, ranks = rows[o], ranks[o].astype(np.float64)
    m = np.bincount(rows, minlength=n)
    start = np.cumsum(m) - m
    k = np.arange(len(rows)) - start[rows] + 1.0
    if ap_kind == "step":
        terms = k / ranks
    else:
        old = np.where(ranks > 1, (k - 1) / np.maximum(ranks - 1, 1), 1.0)
        terms = (old + k / ranks) / 2
    sums = np.bincount(rows, weights=terms, minlength=n)
    has = m > 0
    ap[has] = sums[has] / m[has]
    last = start + m - 1
    inp[has] = m[has] / ranks[last[has]]
    first[has] = ranks[start[has]].astype(np.int64)
    return ap, inp, first


def evaluate_rank(
    distmat: np.ndarray,
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    q_camids: np.ndarray,
    g_camids: np.ndarray,
    max_rank: int = 50,
    ap: str = "step",
    protocol: str = "market1501",
    chunk: int = 256,
    seed: int = 0,
    num_repeats: int = 10,
    allow_no_valid: bool = False,
    g_camsets: Sequence[np.ndarray] | None = None,
) -> RankResult:
    """CMC / mAP / mINP from a distance matrix ``distmat`` [Nq, Ng] (smaller = closer).

    ``ap``: ``"step"`` (default, as torchreid) or ``"interpolated"`` (trapezoid rule of the
    official Market-1501 code). ``protocol``: ``"market1501"`` (default) or ``"cuhk03"``
    (single-gallery-shot CMC: one randomly chosen gallery image per identity, averaged over
    ``num_repeats`` draws from a generator seeded with ``seed``, as torchreid's
    ``eval_cuhk03``; AP and INP use the whole gallery). Rows are processed ``chunk`` at a
    time. ``g_camsets`` (Market-1501 protocol only) gives each gallery item a set of camera
    ids instead of one (per-camera centroids): a same-pid item is ignored when the query's
    camera is in its set. Raises :class:`BadDataError` for NaN distances or when no query
    has a valid match (unless ``allow_no_valid``).
    """
    _check_options(max_rank, ap, protocol)
    distmat = np.asarray(distmat)
    if distmat.ndim != 2:
        raise ShapeMismatchError(f"distmat must be [Nq, Ng], got shape {distmat.shape}")
    if distmat.dtype not in (np.float32, np.float64):
        distmat = distmat.astype(np.float64)
    q_pids, g_pids, q_camids, g_camids = check_labels(
        distmat.shape, q_pids, g_pids, q_camids, g_camids
    )
    nq, ng = distmat.shape
    if np.isnan(distmat).any():
        raise BadDataError("the distance matrix holds NaN values; check the features")
    junk = g_pids == -1
    junk = junk if junk.any() else None
    if g_camsets is not None and protocol != "market1501":
        raise InputError("camera sets per gallery item apply to the market1501 protocol only")
    qi, gi, is_match = _match_lists(q_pids, q_camids, g_pids, g_camids, g_camsets)
    bounds = np.searchsorted(qi, np.arange(0, nq + chunk, chunk))
    all_rows, all_ranks = [], []
    for n, a in enumerate(range(0, nq, chunk)):
        s0, s1 = bounds[n], bounds[n + 1]
        rows, ranks = _match_ranks_chunk(
            distmat[a : a + chunk], qi[s0:s1] - a, gi[s0:s1], is_match[s0:s1], junk
        )
        all_rows.append(rows + a)
        all_ranks.append(ranks)
    rows = np.concatenate(all_rows) if all_rows else np.zeros(0, np.int64)
    ranks = np.concatenate(all_ranks) if all_ranks else np.zeros(0, np.int64)
    ap_q, inp_q, first = _scores_from_ranks(rows, ranks, nq, ap)
    valid = first > 0
    num_valid = int(valid.sum())
    if num_valid == 0 and not allow_no_valid:
        raise BadDataError(
            f"none of the {nq} queries has a valid match in the {ng} gallery items (a "
            "gallery item with the same pid from another camera); check the query/gallery "
            "splits, pids and camera ids"
        )
    if protocol == "cuhk03":
        cmc_q = _single_shot_cmc(
            distmat, q_pids, g_pids, q_camids, g_camids, valid, max_rank, seed, num_repeats
        )
        cmc = cmc_q.sum(axis=0) / max(num_valid, 1)
    else:
        hist = np.bincount(np.minimum(first[valid], max_rank + 1), minlength=max_rank + 2)
        cmc = np.cumsum(hist[1 : max_rank + 1]) / max(num_valid, 1)
    return RankResult(
        cmc=cmc.astype(np.float64),
        mAP=float(np.nanmean(ap_q)) if num_valid else 0.0,
        mINP=float(np.nanmean(inp_q)) if num_valid else 0.0,
        num_query=nq,
        num_valid=num_valid,
        ap=ap_q,
        inp=inp_q,
        first_rank=first,
    )


def _single_shot_cmc(distmat, q_pids, g_pids, q_camids, g_camids, valid, max_rank, seed, reps):
    """CUHK03 single-gallery-shot CMC per valid query: [Nq, max_rank] (zeros elsewhere).

    Per draw, one kept image per gallery identity is chosen uniformly; the match's rank is
    one plus the number of chosen images before it in (distance, gallery index) order, which
    is compared directly instead of sorting the row.
    """
    rng = np.random.default_rng(seed)
    out = np.zeros((len(q_pids), max_rank))
    order = np.argsort(g_pids, kind="stable")
    uniq, starts, counts = np.unique(g_pids[order], return_index=True, return_counts=True)
    usable = uniq != -1  # junk is never drawn
    for q in np.flatnonzero(valid):
        row = distmat[q]
        own = int(np.searchsorted(uniq, q_pids[q]))
        members = order[starts[own] : starts[own] + counts[own]]
        matches = members[g_camids[members] != q_camids[q]]
        u = rng.random((reps, len(uniq)))
        pick = order[starts + np.floor(u * counts).astype(np.int64)]  # [reps, groups]
        target = matches[np.floor(u[:, own] * len(matches)).astype(np.int64)]
        tv, pv = row[target][:, None], row[pick]
        before = (pv < tv) | ((pv == tv) & (pick < target[:, None]))
        before &= usable[None, :]
        before[:, own] = False
        first = before.sum(axis=1)  # 0-based rank of the match in each draw
        hist = np.bincount(np.minimum(first, max_rank), minlength=max_rank + 1)[:max_rank]
        out[q] = np.cumsum(hist) / reps
    return out


def evaluate_topk(
    topk_indices: np.ndarray,
    topk_distances: np.ndarray | None,
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    q_camids: np.ndarray,
    g_camids: np.ndarray,
    max_rank: int = 50,
    ap: str = "step",
    allow_no_valid: bool = False,
) -> RankResult:
    """CMC / mAP / mINP from per-query top-k lists (e.g. a FAISS search), Market-1501 rules.

    ``topk_indices`` [Nq, k] holds gallery indices, nearest first (``-1`` for empty slots,
    as FAISS returns); ``topk_distances`` is accepted for symmetry and only checked for
    shape (the list order is trusted). A query is valid when the whole gallery holds a valid
    match for it, so ``num_valid`` and the denominators equal :func:`evaluate_rank`'s. AP
    sums precision over the matches found within k and divides by all of the query's
    matches: it is a lower bound of the full AP, equal when every match is within k. INP is
    0 for a query whose last match is beyond k. CMC beyond rank k is not known: ``cmc`` has
    ``min(max_rank, k)`` entries.
    """
    _check_options(max_rank, ap, "market1501")
    idx = np.asarray(topk_indices).astype(np.int64)
    if idx.ndim != 2:
        raise ShapeMismatchError(f"topk_indices must be [Nq, k], got shape {idx.shape}")
    if topk_distances is not None and np.shape(topk_distances) != idx.shape:
        raise ShapeMismatchError(
            f"topk_distances {np.shape(topk_distances)} and topk_indices {idx.shape} differ"
        )
    nq, k = idx.shape
    q_pids, g_pids, q_camids, g_camids = check_labels(
        (nq, len(np.asarray(g_pids).ravel())), q_pids, g_pids, q_camids, g_camids
    )
    if idx.size and idx.max() >= len(g_pids):
        raise InputError(f"topk_indices refer to item {idx.max()} of a {len(g_pids)}-item gallery")
    qi, _, is_match = _match_lists(q_pids, q_camids, g_pids, g_camids)
    num_pos = np.bincount(qi[is_match], minlength=nq)
    empty = idx < 0
    safe = np.where(empty, 0, idx)
    gp, gc = g_pids[safe], g_camids[safe]
    qp, qc = q_pids[:, None], q_camids[:, None]
    ignored = empty | (gp == -1) | ((gp == qp) & (gc == qc))
    match = ~ignored & (gp == qp) & (qp > 0)
    rank_in_list = np.cumsum(~ignored, axis=1)  # 1-based rank among valid items
    rows, cols = np.nonzero(match)
    ranks = rank_in_list[rows, cols]
    ap_found, _, first = _scores_from_ranks(rows, ranks, nq, ap)
    valid = num_pos > 0
    num_valid = int(valid.sum())
    if num_valid == 0 and not allow_no_valid:
        raise BadDataError(f"none of the {nq} queries has a valid match in the gallery")
    found = np.bincount(rows, minlength=nq)
    ap_q = np.where(valid, np.nan_to_num(ap_found) * found / np.maximum(num_pos, 1), np.nan)
    last = np.zeros(nq)
    np.maximum.at(last, rows, ranks.astype(np.float64))
    inp_q = np.where(valid, np.where(found == num_pos, num_pos / np.maximum(last, 1), 0.0), np.nan)
    depth = min(max_rank, k)
    hit = np.where(valid & (first > 0), first, depth + 1)
    hist = np.bincount(np.minimum(hit, depth + 1), minlength=depth + 2)
    cmc = np.cumsum(hist[1 : depth + 1]) / max(num_valid, 1)
    return RankResult(
        cmc=cmc.astype(np.float64),
        mAP=float(np.nanmean(ap_q)) if num_valid else 0.0,
        mINP=float(np.nanmean(inp_q)) if num_valid else 0.0,
        num_query=nq,
        num_valid=num_valid,
        ap=ap_q,
        inp=inp_q,
        first_rank=np.where(valid, first, 0),
    )
