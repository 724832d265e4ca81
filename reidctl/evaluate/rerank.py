"""k-reciprocal re-ranking (Zhong et al., CVPR 2017) from nearest-neighbour lists.

Same algorithm and numbers as the authors' python release (``re_ranking`` in
zhunzhong07/person-re-ranking, also torchreid's ``utils/rerank.py``), without ever holding
an N x N matrix (N = queries + gallery):

1. ``original_dist`` is the distance squared and divided by its maximum over all N items
   (the authors' per-column maximum: for item i, the largest squared distance from i).
   One chunked pass over the upper triangle of the (symmetric) distance matrix keeps each
   item's maximum and its ``k1 + 1`` nearest items, ordered like the authors' argsort of
   the normalised matrix (block minima and running bounds limit the candidates that are
   sorted), plus the query x gallery block.
2. For every item, its k-reciprocal set from those lists, expanded by the candidates'
   ``round(k1 / 2)``-reciprocal sets that overlap it by more than 2/3; weights
   ``exp(-original_dist)`` normalised to sum 1 form a sparse row of V.
3. Local query expansion: each row of V becomes the mean of the rows of its ``k2`` nearest
   items (a sparse product).
4. Jaccard distance for query x gallery: ``1 - s / (2 - s)`` with
   ``s = sum_k min(V[q, k], V[g, k])``, accumulated over V's sparse columns in query chunks.
5. ``final = jaccard * (1 - lambda_value) + original_dist * lambda_value``.

Memory: the [Nq, Ng] float32 result, the features and O(N * k1^2) neighbour structures.
"""

from __future__ import annotations

import itertools

import numpy as np
from scipy import sparse
from tqdm import tqdm

from reidctl.errors import InputError
from reidctl.evaluate.distance import DEFAULT_METRIC, DistanceFn
from reidctl.evaluate.rank import _monotone_bits, _stable_rank_order
from reidctl.progress import bar_disable


def _check_params(k1: int, k2: int, lambda_value: float) -> None:
    if k1 < 1 or k2 < 1:
        raise InputError(f"re-ranking needs k1 >= 1 and k2 >= 1, got k1={k1}, k2={k2}")
    if not 0.0 <= lambda_value <= 1.0:
        raise InputError(f"re-ranking lambda must lie in [0, 1], got {lambda_value}")


def _smallest_k(
    od: np.ndarray, k: int, bound: np.ndarray | None = None, axis: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` smallest entries of each row (``axis=1``) or column (``axis=0``) of ``od``,
    ordered by (value, index) and limited to entries ``<= bound`` (one bound per list).

    Returns ``(values, indices)`` of shape [lists, k], padded with ``(inf, -1)``. The
    entries of a list are grouped into blocks (block t = entries t, t + nb, t + 2 nb, ...);
    the k-th smallest block minimum bounds the k-th smallest entry, so only blocks whose
    minimum is within that bound are read again. Works on either axis without a transpose.
    """
    num_lists, n = (od.shape[0], od.shape[1]) if axis == 1 else (od.shape[1], od.shape[0])
    # about 8k blocks per list keep the bound tight; up to 64 entries per block
    lanes = max(1, min(64, n // (8 * k)))
    nb = n // lanes
    main = lanes * nb
    if axis == 1:
        mins = od[:, :main].reshape(num_lists, lanes, nb).min(axis=1)
        tail = od[:, main:].min(axis=1) if main < n else None
    else:
        mins = od[:main].reshape(lanes, nb, num_lists).min(axis=0).T
        tail = od[main:].min(axis=0) if main < n else None
    if tail is not None:
        mins = np.concatenate([mins, tail[:, None]], axis=1)
    if mins.shape[1] >= k:
        thr = np.partition(mins, k - 1, axis=1)[:, k - 1]
    else:
        thr = np.full(num_lists, np.inf, dtype=od.dtype)
    if bound is not None:
        thr = np.minimum(thr, bound)
    br, bc = np.nonzero(mins <= thr[:, None])
    lane = np.arange(lanes)[None, :]
    pos = bc[:, None] + lane * nb
    in_tail = np.flatnonzero(bc == nb)
    if len(in_tail):
        pos[in_tail] = main + lane
    inside = pos < n
    if len(in_tail):
        np.minimum(pos, n - 1, out=pos)
    vals = od[br[:, None], pos] if axis == 1 else od[pos, br[:, None]]
    keep = inside & (vals <= thr[br][:, None])
    r = np.broadcast_to(br[:, None], pos.shape)[keep]
    c, v = pos[keep], vals[keep]
    order = _stable_rank_order(r, v, c, num_lists, n)
    r, c, v = r[order], c[order], v[order]
    rank = np.arange(len(r)) - np.searchsorted(r, np.arange(num_lists))[r]
    sel = rank < k
    out_v = np.full((num_lists, k), np.inf, dtype=np.float32)
    out_i = np.full((num_lists, k), -1, dtype=np.int64)
    out_v[r[sel], rank[sel]] = v[sel]
    out_i[r[sel], rank[sel]] = c[sel]
    return out_v, out_i


def _top_k_rows(od: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` smallest entries of each row, ordered by (value, index)."""
    return _smallest_k(od, k)[1]


def _merge_neighbours(
    v1: np.ndarray, i1: np.ndarray, v2: np.ndarray, i2: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` smallest of two candidate lists per row, by (value, index); padding
    entries ``(inf, -1)`` sort last."""
    vals = np.concatenate([v1, v2], axis=1)
    idx = np.concatenate([np.where(v1 == np.inf, -1, i1), i2], axis=1)
    key = (_monotone_bits(vals) << np.uint64(32)) | idx.astype(np.uint64)
    order = np.argsort(key, axis=1)[:, :k]
    return np.take_along_axis(vals, order, axis=1), np.take_along_axis(idx, order, axis=1)


def _normalised_order(
    dist: DistanceFn,
    rows: np.ndarray,
    vals: np.ndarray,
    idx: np.ndarray,
    rowmax: np.ndarray,
    k: int,
) -> tuple[np.ndarray, np.ndarray]:
    """First ``k`` neighbours by (float32 distance / row maximum, index), as the authors'
    argsort of the normalised matrix orders them. ``vals`` / ``idx``: each row's smallest
    distances (more than ``k``); a row whose spare candidates still tie with the k-th is
    recomputed in full. Returns the neighbours and their distances."""
    norm = vals / rowmax[:, None]
    key = (_monotone_bits(norm) << np.uint64(32)) | np.where(idx < 0, -1, idx).astype(np.uint64)
    order = np.argsort(key, axis=1)
    out = np.take_along_axis(idx, order[:, :k], axis=1)
    out_val = np.take_along_axis(vals, order[:, :k], axis=1)
    kth = np.take_along_axis(norm, order[:, k - 1 : k], axis=1)[:, 0]
    unsure = np.flatnonzero((norm[:, -1] <= kth) & (idx[:, -1] >= 0))
    for r in unsure:
        od = dist.block(rows[r : r + 1], 0, dist.n, squared=True)[0]
        out[r] = np.argsort(od / rowmax[r], kind="stable")[:k]
        out_val[r] = od[out[r]]
    return out, out_val


def _reciprocal(top: np.ndarray, rows: np.ndarray, k: int) -> np.ndarray:
    """mask[i, a]: item top[i, a] has row i among its own first ``k`` neighbours."""
    lists = top[rows, :k]
    back = top[lists, :k]
    return (back == rows[:, None, None]).any(axis=2)


def re_ranking_fn(
    dist: DistanceFn,
    num_query: int,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
    chunk: int = 1024,
    progress: bool = False,
) -> np.ndarray:
    """Re-ranked distance [Nq, Ng] (float32) over the items of ``dist`` (queries first)."""
    _check_params(k1, k2, lambda_value)
    n, nq = dist.n, num_query
    ng = n - nq
    if nq < 1 or ng < 1:
        raise InputError(f"re-ranking needs queries and gallery items, got {nq} and {ng}")
    kk = min(k1 + 1, n)
    half = min(int(np.around(k1 / 2.0)) + 1, n)
    k2 = min(k2, n)

    # 1. one pass over the upper triangle (the distance is symmetric): each row chunk meets
    # the columns from its own start on; what it contributes to later rows (the transposed
    # block) is folded into their running maxima and neighbour candidates
    top = np.empty((n, kk), dtype=np.int64)
    top_od = np.empty((n, kk), dtype=np.float32)
    rowmax = np.zeros(n, dtype=np.float32)
    # a few spare candidates: the authors sort by distance / row maximum in float32, which
    # can turn nearly equal distances into ties broken by index
    cap = min(kk + 8, n)
    run_val = np.full((n, cap), np.inf, dtype=np.float32)
    run_idx = np.full((n, cap), -1, dtype=np.int64)
    qg = np.empty((nq, ng), dtype=np.float32)
    for a in tqdm(range(0, n, chunk), desc="re-ranking: neighbours", disable=bar_disable(progress)):
        b = min(a + chunk, n)
        blk = dist.block(np.arange(a, b), a, n, squared=True)
        np.maximum(rowmax[a:b], blk.max(axis=1), out=rowmax[a:b])
        v, i = _smallest_k(blk, cap, run_val[a:b, -1], axis=1)
        v, i = _merge_neighbours(v, i + a, run_val[a:b], run_idx[a:b], cap)
        top[a:b], top_od[a:b] = _normalised_order(dist, np.arange(a, b), v, i, rowmax[a:b], kk)
        if a < nq:
            qg[a : min(b, nq)] = blk[: min(b, nq) - a, nq - a :]
        if b < n:
            low = blk[:, b - a :]  # od[a:b, j] for j >= b, i.e. row segments of later rows
            np.maximum(rowmax[b:], low.max(axis=0), out=rowmax[b:])
            v, i = _smallest_k(low, cap, run_val[b:, -1], axis=0)
            run_val[b:], run_idx[b:] = _merge_neighbours(v, i + a, run_val[b:], run_idx[b:], cap)
        del blk
    del run_val, run_idx
    rowmax = np.maximum(rowmax, np.float32(np.finfo(np.float32).tiny))

    # 2. expanded k-reciprocal sets and their weights (sparse V)
    rows_all, cols_all = [], []
    step = 2048
    for a in tqdm(
        range(0, n, step), desc="re-ranking: reciprocal sets", disable=bar_disable(progress)
    ):
        rows = np.arange(a, min(a + step, n))
        recip = _reciprocal(top, rows, kk)  # [B, kk]
        lists = top[rows]
        cand_sets = top[lists, :half]  # [B, kk, half]
        cand_mask = _reciprocal(top, lists.ravel(), half).reshape(len(rows), kk, half)
        member = (cand_sets[..., None] == lists[:, None, None, :]) & recip[:, None, None, :]
        overlap = (member.any(axis=3) & cand_mask).sum(axis=2)
        accept = recip & (overlap > 2.0 / 3 * cand_mask.sum(axis=2))
        expanded = np.concatenate(
            [
                np.where(recip, lists, -1),
                np.where(accept[..., None] & cand_mask, cand_sets, -1).reshape(len(rows), -1),
            ],
            axis=1,
        )
        expanded.sort(axis=1)
        fresh = expanded >= 0
        fresh[:, 1:] &= expanded[:, 1:] != expanded[:, :-1]
        r, c = np.nonzero(fresh)
        rows_all.append(rows[r])
        cols_all.append(expanded[r, c])
    vi = np.concatenate(rows_all)
    vj = np.concatenate(cols_all)
    del rows_all, cols_all
    # most pairs are in the row's own neighbour list, whose distances are known
    od = np.empty(len(vi), dtype=np.float32)
    hit = top[vi] == vj[:, None]
    known = hit.any(axis=1)
    od[known] = top_od[vi[known]][hit[known]]
    del hit
    rest = np.flatnonzero(~known)
    od[rest] = np.square(dist.pairs(vi[rest], vj[rest]))
    w = np.exp(-(od / rowmax[vi]).astype(np.float64))
    w /= np.bincount(vi, weights=w, minlength=n)[vi]
    V = sparse.csr_matrix((w.astype(np.float32), (vi, vj)), shape=(n, n))
    del vi, vj, od, w

    # 3. local query expansion
    if k2 != 1:
        qe = sparse.csr_matrix(
            (
                np.full(n * k2, 1.0 / k2, dtype=np.float32),
                top[:, :k2].ravel(),
                np.arange(0, n * k2 + 1, k2),
            ),
            shape=(n, n),
        )
        V = (qe @ V).tocsr()
    del top, top_od
    V.sort_indices()

    # 4.-5. Jaccard distance for query x gallery, combined in place with the original
    vq = V[:nq]
    vg = V[nq:].tocsc()
    vg.sort_indices()
    g_ptr = vg.indptr.astype(np.int64)
    g_cnt = np.diff(g_ptr)
    q_rows = np.repeat(np.arange(nq), np.diff(vq.indptr))
    work = np.bincount(q_rows, weights=g_cnt[vq.indices], minlength=nq)
    # bound both the (query, column, gallery) triples and the dense rows held at once
    budget, max_rows = 1 << 22, max(1, (1 << 21) // ng)
    bounds = [0]
    acc = 0.0
    for q in range(nq):
        if q > bounds[-1] and (acc + work[q] > budget or q - bounds[-1] >= max_rows):
            bounds.append(q)
            acc = 0.0
        acc += work[q]
    bounds.append(nq)
    lam = np.float32(lambda_value)
    for a, b in tqdm(
        list(itertools.pairwise(bounds)),
        desc="re-ranking: jaccard",
        disable=bar_disable(progress),
    ):
        p0, p1 = vq.indptr[a], vq.indptr[b]
        ks = vq.indices[p0:p1]
        av = vq.data[p0:p1]
        rl = q_rows[p0:p1] - a
        cnt = g_cnt[ks]
        total = int(cnt.sum())
        src = np.repeat(np.arange(len(ks)), cnt)
        offs = np.arange(total) - np.repeat(np.cumsum(cnt) - cnt, cnt) + g_ptr[ks][src]
        mins = np.minimum(av[src], vg.data[offs])
        flat = rl[src].astype(np.int64) * ng + vg.indices[offs]
        s = np.bincount(flat, weights=mins, minlength=(b - a) * ng).reshape(b - a, ng)
        # 1 - s / (2 - s) == 2 (1 - s) / (2 - s)
        jac = (2.0 - 2.0 * s) / (2.0 - s)
        jac *= 1.0 - lambda_value
        block = qg[a:b]
        block /= rowmax[a:b, None]
        block *= lam
        block += jac
    return qg


def re_ranking(
    q_feat: np.ndarray | None,
    g_feat: np.ndarray | None,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
    metric: str = DEFAULT_METRIC,
    q_local: np.ndarray | None = None,
    g_local: np.ndarray | None = None,
    local_weight: float | None = None,
    chunk: int = 1024,
    progress: bool = False,
) -> np.ndarray:
    """k-reciprocal re-ranked distance [Nq, Ng] (float32) from features.

    ``q_feat`` [Nq, D], ``g_feat`` [Ng, D]: global features, compared with ``metric``
    (default ``euclidean``; the re-ranking squares it, as the authors' code squares the
    distances it is given). With ``q_local`` / ``g_local`` [N, S, D] the original distance
    is AlignedReID's local distance alone (when ``local_weight`` is None) or
    ``global + local_weight * local``. ``k1`` (20), ``k2`` (6) and ``lambda_value`` (0.3)
    as in the paper; ``chunk`` rows of N are held at once (``chunk * N * 4`` bytes).
    """
    glob = None
    if q_feat is not None and g_feat is not None:
        glob = np.concatenate([np.asarray(q_feat, np.float32), np.asarray(g_feat, np.float32)])
    loc = None
    if q_local is not None and g_local is not None:
        loc = np.concatenate([np.asarray(q_local, np.float32), np.asarray(g_local, np.float32)])
    if glob is None and loc is None:
        raise InputError("re-ranking needs global features, local features or both")
    if loc is not None and local_weight is None:
        glob = None  # the local distance alone
    nq = len(q_feat) if q_feat is not None else len(q_local)
    weight = 1.0 if local_weight is None else local_weight
    dist = DistanceFn(glob, metric=metric, local_feat=loc, local_weight=weight)
    return re_ranking_fn(dist, nq, k1, k2, lambda_value, chunk=chunk, progress=progress)
