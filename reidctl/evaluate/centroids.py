"""Centroids-ReID retrieval (Wieczorek et al. 2021): identities as mean embeddings.

Each gallery identity (pid >= 1) becomes one entry, the mean of its embeddings; junk
(pid -1) is dropped and every distractor (pid 0) stays an individual entry. A centroid
mixes cameras, so it carries camera id -1 and the same-camera rule of the Market-1501
protocol no longer removes it. With ``per_camera``, a query from camera c is compared with
centroids built only from its identity's gallery images of the other cameras (the paper's
protocol-respecting variant).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from reidctl.evaluate.distance import l2_normalize

CENTROID_CAMID = -1


@dataclass
class CentroidGallery:
    """Gallery entries: ``feat`` [E, D], ``pids`` [E], ``camids`` [E]; ``members[e]`` lists
    the original gallery indices averaged into entry e."""

    feat: np.ndarray
    pids: np.ndarray
    camids: np.ndarray
    members: list[np.ndarray]


def build_centroids(
    g_feat: np.ndarray,
    g_pids: np.ndarray,
    g_camids: np.ndarray,
    exclude_camid: int | None = None,
    normalize: bool = False,
) -> CentroidGallery:
    """One entry per identity (mean of its features) plus each distractor on its own.

    ``exclude_camid``: leave out the images of that camera (per-camera centroids); an
    identity seen only by that camera gets no entry. ``normalize``: L2-normalise the means.
    Entries are ordered by pid, then distractors in gallery order (deterministic).
    """
    g_feat = np.asarray(g_feat, dtype=np.float32)
    g_pids = np.asarray(g_pids).astype(np.int64)
    g_camids = np.asarray(g_camids).astype(np.int64)
    use = g_pids >= 1
    if exclude_camid is not None:
        use &= g_camids != exclude_camid
    idx = np.flatnonzero(use)
    pids, inverse = np.unique(g_pids[idx], return_inverse=True)
    sums = np.zeros((len(pids), g_feat.shape[1]), dtype=np.float64)
    np.add.at(sums, inverse, g_feat[idx])
    counts = np.bincount(inverse, minlength=len(pids))
    means = (sums / counts[:, None]).astype(np.float32)
    if normalize:
        means = l2_normalize(means)
    order = np.argsort(inverse, kind="stable")
    members = np.split(idx[order], np.cumsum(counts)[:-1]) if len(pids) else []
    dis = np.flatnonzero(g_pids == 0)
    return CentroidGallery(
        feat=np.concatenate([means, g_feat[dis]]),
        pids=np.concatenate([pids, np.zeros(len(dis), np.int64)]),
        camids=np.concatenate([np.full(len(pids), CENTROID_CAMID, np.int64), g_camids[dis]]),
        members=[*members, *(np.array([i]) for i in dis)],
    )
