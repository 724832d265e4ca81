"""Evaluation as a chain of small steps, composed by :func:`evaluate_features_detailed`.

::

    features  --prepare_features-->  checked, L2-normalised query / gallery features
              --aggregate_centroids-->  gallery identities as mean embeddings (optional;
                                        averaged raw, normalised afterwards)
              --distance_matrix-->  global, local, global + weight * local, re-ranked
              --evaluate_rank-->  CMC / mAP / mINP  (:class:`Evaluation`)

Per-camera centroids carry the set of cameras they were built from, which
:func:`evaluate_rank` uses in place of one camera per gallery item.
:func:`evaluate_dir` is the one entry point of ``reidctl eval`` for a result directory or a
vendor dump. The settings (:class:`reidctl.evaluate.results.EvalSettings`) are validated
when they are built; no step re-checks their combinations.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from reidctl.errors import InputError
from reidctl.evaluate.centroids import (
    CentroidGallery,
    build_camera_centroids,
    build_centroids,
)
from reidctl.evaluate.distance import check_finite, compute_distance, l2_normalize
from reidctl.evaluate.local import local_distance
from reidctl.evaluate.rank import evaluate_rank
from reidctl.evaluate.rerank import re_ranking

if TYPE_CHECKING:
    from reidctl.evaluate.results import EvalSettings, Evaluation


@dataclass(frozen=True)
class Features:
    """Query and gallery rows ready for a distance: float32, finite, normalised as asked.

    ``q`` / ``g`` global features [N, D] (None with local distance alone), ``q_local`` /
    ``g_local`` stripe features [N, S, D] (None without local distance); labels int64 [N].
    """

    q: np.ndarray | None
    g: np.ndarray | None
    q_local: np.ndarray | None
    g_local: np.ndarray | None
    q_pids: np.ndarray
    g_pids: np.ndarray
    q_camids: np.ndarray
    g_camids: np.ndarray


def prepare_features(
    q_feat: np.ndarray | None,
    g_feat: np.ndarray | None,
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    q_camids: np.ndarray,
    g_camids: np.ndarray,
    settings: EvalSettings,
    q_local: np.ndarray | None = None,
    g_local: np.ndarray | None = None,
) -> Features:
    """Check that every feature is finite and present where the settings need it, cast to
    float32 and L2-normalise when ``settings.normalize`` (already resolved, not None)."""
    for arr, what in (
        (q_feat, "query features"),
        (g_feat, "gallery features"),
        (q_local, "query local features"),
        (g_local, "gallery local features"),
    ):
        if arr is not None:
            check_finite(np.asarray(arr), what)
    if settings.local and (q_local is None or g_local is None):
        raise InputError("local distance needs local features for queries and gallery")
    if settings.uses_global and (q_feat is None or g_feat is None):
        raise InputError("the global distance needs global features for queries and gallery")
    norm = bool(settings.normalize)
    if q_feat is not None and g_feat is not None:
        q_feat, g_feat = np.asarray(q_feat, np.float32), np.asarray(g_feat, np.float32)
        if norm:
            q_feat, g_feat = l2_normalize(q_feat), l2_normalize(g_feat)
    if not settings.local:
        q_local = g_local = None
    elif norm:
        q_local, g_local = l2_normalize(q_local), l2_normalize(g_local)
    return Features(
        q_feat,
        g_feat,
        q_local,
        g_local,
        np.asarray(q_pids, np.int64),
        np.asarray(g_pids, np.int64),
        np.asarray(q_camids, np.int64),
        np.asarray(g_camids, np.int64),
    )


def aggregate_centroids(
    f: Features, normalize: bool, per_camera: bool = False
) -> tuple[Features, CentroidGallery]:
    """The gallery replaced by Centroids-ReID centroids (:mod:`reidctl.evaluate.centroids`)
    of the *raw* gallery features ``f.g``; with ``normalize`` the queries and the centroids
    are L2-normalised afterwards, as the reference code does. Returns the new features and
    the centroid gallery (its members and, with ``per_camera``, its camera sets)."""
    if per_camera:
        cg = build_camera_centroids(f.g, f.g_pids, f.g_camids, f.q_pids, f.q_camids, normalize)
    else:
        cg = build_centroids(f.g, f.g_pids, f.g_camids, normalize)
    q = l2_normalize(f.q) if normalize else f.q
    return replace(f, q=q, g=cg.feat, g_pids=cg.pids, g_camids=cg.camids), cg


def distance_matrix(f: Features, settings: EvalSettings, progress: bool = False) -> np.ndarray:
    """Query x gallery distances [Nq, Ng] float32: k-reciprocal re-ranking of the global,
    local or combined distance (``settings.rerank``), else AlignedReID local distance (plus
    the global one weighted, ``settings.local_weight``), else the global distance."""
    if settings.rerank:
        return re_ranking(
            f.q if settings.uses_global else None,
            f.g if settings.uses_global else None,
            settings.k1,
            settings.k2,
            settings.lambda_value,
            metric=settings.distance,
            q_local=f.q_local,
            g_local=f.g_local,
            local_weight=settings.local_weight,
            progress=progress,
        )
    if settings.local:
        distmat = local_distance(f.q_local, f.g_local, progress=progress)
        if settings.local_weight is not None:
            distmat *= np.float32(settings.local_weight)
            distmat += compute_distance(f.q, f.g, settings.distance)
        return distmat
    return compute_distance(f.q, f.g, settings.distance)


def evaluate_features_detailed(
    q_feat: np.ndarray | None,
    g_feat: np.ndarray | None,
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    q_camids: np.ndarray,
    g_camids: np.ndarray,
    settings: EvalSettings | None = None,
    q_local: np.ndarray | None = None,
    g_local: np.ndarray | None = None,
    progress: bool = False,
) -> Evaluation:
    """:func:`reidctl.evaluate.evaluate_features` returning the distance matrix and
    per-query results too: the steps of this module in order."""
    from reidctl.evaluate.results import EvalSettings, Evaluation, Metrics

    s = settings or EvalSettings()
    s = replace(s, normalize=True if s.normalize is None else s.normalize)
    members = camsets = None
    if s.centroids:
        # centroids average the raw features; normalisation comes after (reference code)
        raw = replace(s, normalize=False)
        f = prepare_features(q_feat, g_feat, q_pids, g_pids, q_camids, g_camids, raw)
        f, cg = aggregate_centroids(f, bool(s.normalize), s.per_camera)
        members, camsets = cg.members, cg.camsets
    else:
        f = prepare_features(
            q_feat, g_feat, q_pids, g_pids, q_camids, g_camids, s, q_local, g_local
        )
    distmat = distance_matrix(f, s, progress)
    result = evaluate_rank(
        distmat, f.q_pids, f.g_pids, f.q_camids, f.g_camids, s.max_rank, s.ap, s.protocol,
        seed=s.seed, g_camsets=camsets,
    )  # fmt: skip
    metrics = Metrics.from_rank(result, len(f.g_pids), s.describe())
    return Evaluation(metrics, result, distmat, f.g_pids, f.g_camids, members)


def evaluate_dir(
    path: str | os.PathLike[str],
    settings: EvalSettings,
    *,
    prep: str | os.PathLike[str] | None = None,
    output_index: int | None = None,
    dim: int | None = None,
    progress: bool = False,
    **dump_options: Any,
) -> Evaluation:
    """``reidctl eval``: a result directory, or with ``prep`` a vendor dump directory with
    the labels of the preprocessed set ``prep`` (:func:`reidctl.evaluate.results.load_dump`:
    ``output_index`` or ``output`` with ``model``, ``dim``, ``dtype``, ``local_index``,
    ``local_shape``). The evaluation keeps the loaded data and row indices."""
    from reidctl.evaluate.results import evaluate_dump, evaluate_results

    if prep is not None:
        return evaluate_dump(path, prep, output_index, dim, settings, progress, **dump_options)
    given = [k for k, v in dump_options.items() if v not in (None, "float32")]
    if output_index is not None or dim is not None or given:
        raise InputError(
            "--output-index, --output, --model, --dim, --dump-dtype, --local-index and "
            "--local-shape apply to vendor dumps: add --prep PREP"
        )
    return evaluate_results(path, settings, progress)
