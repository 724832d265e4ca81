"""Plain reference implementations, written to mirror the published code line by line.

The fast paths in this package must agree with these: the tests compare them on random data
and the benchmarks time both in the same run. They hold whole matrices and loop per query,
so use them only on small inputs (or, for timing, on a subset).

* :func:`eval_market1501_loop`: torchreid's per-query ``eval_market1501`` (numpy version),
  with a stable sort (ties by gallery order), junk (pid -1) ignored, queries with pid <= 0
  skipped, mINP as fast-reid computes it, and the official code's trapezoid AP as an option.
* :func:`re_ranking_dense`: the k-reciprocal re-ranking of Zhong et al. (CVPR 2017) as in
  the authors' python release (zhunzhong07/person-re-ranking), stable argsort.
* :func:`local_dist_dense`: AlignedReID's ``parallel_local_dist`` / ``shortest_dist``
  (huanghoujing/AlignedReID-Re-Production-Pytorch, ``aligned_reid/utils/distance.py``).
"""

from __future__ import annotations

import numpy as np


def eval_market1501_loop(
    distmat: np.ndarray,
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    q_camids: np.ndarray,
    g_camids: np.ndarray,
    max_rank: int = 50,
    ap: str = "step",
) -> tuple[np.ndarray, float, float, int]:
    """(cmc [max_rank], mAP, mINP, num_valid) by a per-query loop over sorted rows."""
    num_q, _ = distmat.shape
    all_cmc, all_ap, all_inp = [], [], []
    for q in range(num_q):
        if q_pids[q] <= 0:
            continue
        order = np.argsort(distmat[q], kind="stable")
        remove = ((g_pids[order] == q_pids[q]) & (g_camids[order] == q_camids[q])) | (
            g_pids[order] == -1
        )
        raw = (g_pids[order] == q_pids[q])[~remove].astype(np.int64)
        if not raw.any():
            continue
        cmc = raw.cumsum()
        pos = np.flatnonzero(raw)
        all_inp.append(cmc[pos[-1]] / (pos[-1] + 1.0))
        cmc[cmc > 1] = 1
        padded = np.full(max_rank, cmc[-1], dtype=np.float64)
        n = min(max_rank, len(cmc))
        padded[:n] = cmc[:n]
        all_cmc.append(padded)
        num_rel = raw.sum()
        if ap == "step":
            tmp = raw.cumsum() / (np.arange(len(raw)) + 1.0)
            all_ap.append((tmp * raw).sum() / num_rel)
        else:
            total, old_recall, old_precision, hits = 0.0, 0.0, 1.0, 0
            for j, flag in enumerate(raw):
                hits += int(flag)
                recall, precision = hits / num_rel, hits / (j + 1.0)
                total += (recall - old_recall) * (old_precision + precision) / 2
                old_recall, old_precision = recall, precision
                if hits == num_rel:
                    break
            all_ap.append(total)
    if not all_cmc:
        raise ValueError("no valid query")
    cmc = np.asarray(all_cmc).sum(0) / len(all_cmc)
    return cmc, float(np.mean(all_ap)), float(np.mean(all_inp)), len(all_cmc)


def re_ranking_dense(
    q_g_dist: np.ndarray,
    q_q_dist: np.ndarray,
    g_g_dist: np.ndarray,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
) -> np.ndarray:
    """The authors' k-reciprocal re-ranking on full matrices: final distance [Nq, Ng]."""
    original_dist = np.concatenate(
        [
            np.concatenate([q_q_dist, q_g_dist], axis=1),
            np.concatenate([q_g_dist.T, g_g_dist], axis=1),
        ],
        axis=0,
    )
    original_dist = np.power(original_dist, 2).astype(np.float32)
    original_dist = np.transpose(1.0 * original_dist / np.max(original_dist, axis=0))
    V = np.zeros_like(original_dist).astype(np.float32)
    initial_rank = np.argsort(original_dist, kind="stable").astype(np.int32)

    query_num = q_g_dist.shape[0]
    all_num = original_dist.shape[0]
    half = int(np.around(k1 / 2.0))
    for i in range(all_num):
        forward = initial_rank[i, : k1 + 1]
        backward = initial_rank[forward, : k1 + 1]
        fi = np.where(backward == i)[0]
        k_reciprocal_index = forward[fi]
        expansion = k_reciprocal_index
        for candidate in k_reciprocal_index:
            c_forward = initial_rank[candidate, : half + 1]
            c_backward = initial_rank[c_forward, : half + 1]
            fi_c = np.where(c_backward == candidate)[0]
            c_index = c_forward[fi_c]
            if len(np.intersect1d(c_index, k_reciprocal_index)) > 2.0 / 3 * len(c_index):
                expansion = np.append(expansion, c_index)
        expansion = np.unique(expansion)
        weight = np.exp(-original_dist[i, expansion])
        V[i, expansion] = 1.0 * weight / np.sum(weight)
    original_dist = original_dist[:query_num,]
    if k2 != 1:
        V_qe = np.zeros_like(V, dtype=np.float32)
        for i in range(all_num):
            V_qe[i, :] = np.mean(V[initial_rank[i, :k2], :], axis=0)
        V = V_qe
    inv_index = [np.where(V[:, i] != 0)[0] for i in range(all_num)]
    jaccard_dist = np.zeros_like(original_dist, dtype=np.float32)
    for i in range(query_num):
        temp_min = np.zeros(shape=[1, all_num], dtype=np.float32)
        ind_non_zero = np.where(V[i, :] != 0)[0]
        ind_images = [inv_index[ind] for ind in ind_non_zero]
        for j in range(len(ind_non_zero)):
            temp_min[0, ind_images[j]] = temp_min[0, ind_images[j]] + np.minimum(
                V[i, ind_non_zero[j]], V[ind_images[j], ind_non_zero[j]]
            )
        jaccard_dist[i] = 1 - temp_min / (2.0 - temp_min)
    final_dist = jaccard_dist * (1 - lambda_value) + original_dist * lambda_value
    return final_dist[:query_num, query_num:]


def _euclidean(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    square1 = np.sum(np.square(x), axis=1)[..., np.newaxis]
    square2 = np.sum(np.square(y), axis=1)[np.newaxis, ...]
    squared = -2 * np.matmul(x, y.T) + square1 + square2
    squared[squared < 0] = 0
    return np.sqrt(squared)


def _shortest_dist(dist_mat: np.ndarray) -> np.ndarray:
    m, n = dist_mat.shape[:2]
    dist = np.zeros_like(dist_mat)
    for i in range(m):
        for j in range(n):
            if i == 0 and j == 0:
                dist[i, j] = dist_mat[i, j]
            elif i == 0:
                dist[i, j] = dist[i, j - 1] + dist_mat[i, j]
            elif j == 0:
                dist[i, j] = dist[i - 1, j] + dist_mat[i, j]
            else:
                dist[i, j] = np.minimum(dist[i - 1, j], dist[i, j - 1]) + dist_mat[i, j]
    return dist[-1, -1].copy()


def local_dist_dense(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """AlignedReID ``parallel_local_dist``: ``x`` [M, m, d], ``y`` [N, n, d] -> [M, N]."""
    big_m, m, d = x.shape
    big_n, n, _ = y.shape
    dist_mat = _euclidean(x.reshape(big_m * m, d), y.reshape(big_n * n, d))
    dist_mat = (np.exp(dist_mat) - 1.0) / (np.exp(dist_mat) + 1.0)
    dist_mat = dist_mat.reshape(big_m, m, big_n, n).transpose(1, 3, 0, 2)
    return _shortest_dist(dist_mat)
