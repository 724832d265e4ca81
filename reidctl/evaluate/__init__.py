"""Evaluation: CMC / mAP / mINP, k-reciprocal re-ranking, AlignedReID local distance and
Centroids-ReID retrieval, from features, distance matrices or result directories.

Nothing in this package imports torch.
"""

from reidctl.evaluate.distance import METRICS, compute_distance, l2_normalize
from reidctl.evaluate.local import local_distance
from reidctl.evaluate.rank import RankResult, evaluate_rank, evaluate_topk
from reidctl.evaluate.rerank import re_ranking
from reidctl.evaluate.results import (
    EvalSettings,
    Evaluation,
    Metrics,
    evaluate_dump,
    evaluate_features,
    evaluate_results,
)

__all__ = [
    "METRICS",
    "EvalSettings",
    "Evaluation",
    "Metrics",
    "RankResult",
    "compute_distance",
    "evaluate_dump",
    "evaluate_features",
    "evaluate_rank",
    "evaluate_results",
    "evaluate_topk",
    "l2_normalize",
    "local_distance",
    "re_ranking",
]
