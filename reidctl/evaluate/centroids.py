"""Centroids-ReID retrieval (Wieczorek et al. 2021): gallery identities as mean embeddings.

As the reference code does it (mikwieczorek/centroids-reid ``modelling/bases.py``,
``validation_create_centroids``; evaluation in ``utils/eval_reid.py``):

* a centroid is the plain mean of the identity's *raw* embeddings (the BNNeck output); the
  L2 normalisation, when asked for, is applied afterwards to the queries and the centroids;
* :func:`build_centroids` (``--centroids``): one centroid per gallery label, distractors
  (pid 0) included as one more label; a centroid mixes cameras and nothing is removed for
  a query (the reference gives all queries camera 0 and all centroids camera 1);
* :func:`build_camera_centroids` (``--per-camera``): for each gallery identity and each
  distinct camera c among that identity's *queries*, one centroid of its gallery images
  from cameras other than c, tagged with the cameras it used (equal camera sets are built
  once). A query drops the centroids of its own identity whose camera set holds the
  query's camera; every other centroid stays. Identities without a query get no centroid.

Junk (pid -1) never enters a centroid: the reference's Market-1501 reader drops junk images
when it loads the data, so its centroid code never sees them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from reidctl.evaluate.distance import l2_normalize

CENTROID_CAMID = -1


@dataclass
class CentroidGallery:
    """Gallery entries: ``feat`` [E, D] float32, ``pids`` [E], ``camids`` [E] (all
    ``CENTROID_CAMID``); ``members[e]`` lists the original gallery indices averaged into
    entry e; ``camsets[e]`` (per-camera centroids only, else None) the sorted camera ids of
    those members, the cameras a query must not share with a centroid of its identity."""

    feat: np.ndarray
    pids: np.ndarray
    camids: np.ndarray
    members: list[np.ndarray]
    camsets: list[np.ndarray] | None = None


def _mean(g_feat: np.ndarray, idx: np.ndarray) -> np.ndarray:
    return (g_feat[idx].astype(np.float64).sum(axis=0) / len(idx)).astype(np.float32)


def _gallery(
    g_feat: np.ndarray,
    pids: list[int],
    members: list[np.ndarray],
    normalize: bool,
    camsets: list[np.ndarray] | None = None,
    dim: int | None = None,
) -> CentroidGallery:
    feat = (
        np.stack([_mean(g_feat, m) for m in members])
        if members
        else np.zeros((0, dim or g_feat.shape[1]), np.float32)
    )
    if normalize:
        feat = l2_normalize(feat)
    return CentroidGallery(
        feat=feat,
        pids=np.asarray(pids, np.int64),
        camids=np.full(len(pids), CENTROID_CAMID, np.int64),
        members=members,
        camsets=camsets,
    )


def build_centroids(
    g_feat: np.ndarray,
    g_pids: np.ndarray,
    g_camids: np.ndarray,
    normalize: bool = False,
) -> CentroidGallery:
    """One centroid per gallery label >= 0 (each identity, and all distractors together as
    label 0): the mean of its raw features [D], L2-normalised afterwards with ``normalize``.

    ``g_feat`` [Ng, D], ``g_pids`` / ``g_camids`` [Ng]. Junk (pid -1) is left out. Entries
    are ordered by pid; ``members`` keep gallery order (deterministic).
    """
    g_feat = np.asarray(g_feat, dtype=np.float32)
    g_pids = np.asarray(g_pids).astype(np.int64)
    del g_camids  # a centroid mixes cameras: nothing is removed for a query
    labels = np.unique(g_pids[g_pids >= 0])
    members = [np.flatnonzero(g_pids == p) for p in labels]
    return _gallery(g_feat, labels.tolist(), members, normalize)


def build_camera_centroids(
    g_feat: np.ndarray,
    g_pids: np.ndarray,
    g_camids: np.ndarray,
    q_pids: np.ndarray,
    q_camids: np.ndarray,
    normalize: bool = False,
) -> CentroidGallery:
    """Per-camera centroids: for each gallery identity (junk left out), for each distinct
    camera c of its queries (``q_pids`` / ``q_camids`` [Nq]), the mean of its gallery images
    from cameras other than c, unless no such image exists or a centroid of the same
    camera set was built already.

    Entries are ordered by pid, then by query camera. ``camsets[e]`` holds the cameras of
    entry e's members; :func:`reidctl.evaluate.rank.evaluate_rank` (``g_camsets``) ignores
    an entry for a query of the same pid whose camera is in that set.
    """
    g_feat = np.asarray(g_feat, dtype=np.float32)
    g_pids = np.asarray(g_pids).astype(np.int64)
    g_camids = np.asarray(g_camids).astype(np.int64)
    q_pids = np.asarray(q_pids).astype(np.int64)
    q_camids = np.asarray(q_camids).astype(np.int64)
    pids: list[int] = []
    members: list[np.ndarray] = []
    camsets: list[np.ndarray] = []
    for label in np.unique(g_pids[g_pids >= 0]):
        own = np.flatnonzero(g_pids == label)
        seen: set[tuple[int, ...]] = set()
        for cam in np.unique(q_camids[q_pids == label]):
            use = own[g_camids[own] != cam]
            if len(use) == 0:
                continue
            used = np.unique(g_camids[use])
            key = tuple(used.tolist())
            if key in seen:
                continue
            seen.add(key)
            pids.append(int(label))
            members.append(use)
            camsets.append(used)
    return _gallery(g_feat, pids, members, normalize, camsets)
