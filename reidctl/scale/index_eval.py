"""CMC / mAP from the top-k lists of a FAISS gallery index (``reidctl eval --index``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from reidctl.artifacts import ResultDir
from reidctl.errors import FormatError
from reidctl.scale.faiss_index import (
    exact_search,
    load_gallery_index,
    load_result_features,
    recall_at_k,
    search_gallery_index,
)

TOPK_NOTE = (
    "computed from the index's top-k lists: mAP and mINP count only the positives found "
    "within the top k (a lower bound of the full mAP, equal when every match is within k); "
    "CMC is known up to rank k"
)


def eval_with_index(
    results_dir: str | os.PathLike[str],
    index_path: str | os.PathLike[str],
    k: int = 100,
    exact_check: bool = False,
    *,
    max_rank: int = 50,
    ap: str = "step",
    nprobe: int | None = None,
    ef_search: int | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Score the query rows of ``results_dir`` against a saved gallery index.

    Searches the top ``k`` gallery rows of every query (the index's feature and
    normalisation), then applies the Market-1501 protocol with
    :func:`reidctl.evaluate.evaluate_topk`. Returns the ``metrics.json`` fields (``rank1``,
    ``rank5``, ``rank10``, ``mAP``, ``mINP``, ``cmc``, counts, ``settings``) plus ``index``:
    kind, metric, k, the note that mAP only counts positives within k and, with
    ``exact_check``, ``recall_at_k`` of the index against exact search over the same
    gallery features and the metrics of the exact top-k lists (``exact``). The exact check
    re-reads the gallery features the index was built from.

    The index must have been built over the gallery of ``results_dir`` itself: the gallery
    labels come from the index's sidecar, so an index of another result directory, or one
    whose features changed since, raises :class:`FormatError` (exit code 2) before any search.
    """
    from reidctl.evaluate import evaluate_topk
    from reidctl.evaluate.results import Metrics

    gi = load_gallery_index(index_path)
    _check_same_gallery(results_dir, index_path, gi.sidecar)
    topk = search_gallery_index(
        gi, results_dir, k, nprobe=nprobe, ef_search=ef_search, progress=progress
    )
    labels = (topk.query_pids, topk.gallery_pids, topk.query_camids, topk.gallery_camids)
    result = evaluate_topk(topk.indices, topk.distances, *labels, max_rank=max_rank, ap=ap)
    s = gi.sidecar
    info: dict[str, Any] = {
        "file": str(index_path),
        "kind": s["kind"],
        "metric": s["metric"],
        "params": s["params"],
        "k": int(topk.indices.shape[1]),
        "note": TOPK_NOTE,
    }
    if exact_check:
        # RESULTS holds the very features the index was built from (checked above).
        gal = load_result_features(results_dir, s["split"], s["feature"], s["normalized"])
        queries = load_result_features(results_dir, "query", s["feature"], s["normalized"])
        _, exact_ids = exact_search(gal.features, queries.features, info["k"], s["metric"])
        info["recall_at_k"] = recall_at_k(topk.indices, exact_ids, info["k"])
        exact = evaluate_topk(exact_ids, None, *labels, max_rank=max_rank, ap=ap)
        info["exact"] = {"rank1": exact.rank(1), "mAP": float(exact.mAP)}
    settings = {
        "source": "faiss index top-k",
        "feature": s["feature"],
        "normalize": s["normalized"],
        "distance": "inner product" if s["metric"] == "ip" else "squared euclidean",
        "ap": ap,
        "protocol": "market1501",
        "rerank": False,
        "topk": info["k"],
    }
    out = Metrics.from_rank(result, len(topk.gallery_index), settings).to_dict()
    out["index"] = info
    return out


def _check_same_gallery(
    results_dir: str | os.PathLike[str], index_path: str | os.PathLike[str], sidecar: dict[str, Any]
) -> None:
    """Refuse an index that was not built over ``results_dir``'s current gallery features."""
    rd = ResultDir.open(results_dir)
    feature = sidecar["feature"]
    if feature not in rd.outputs:
        raise FormatError(
            f"{index_path} indexes feature {feature!r}, which {results_dir} does not hold "
            f"(outputs: {', '.join(rd.outputs)}); build the index over {results_dir} with "
            "`reidctl index build`"
        )
    here = Path(results_dir).resolve()
    built = Path(sidecar["results_dir"])
    if rd.features_sha256(feature) == sidecar["features_sha256"]:
        return
    if built == here:
        raise FormatError(
            f"the gallery features in {here} changed since {index_path} was built (sha256 "
            "differs); rebuild the index with `reidctl index build`"
        )
    raise FormatError(
        f"{index_path} was built over the gallery of {built}, not of {here} (the features "
        f"differ); build an index over {results_dir} with `reidctl index build {results_dir} "
        "-o FILE`"
    )
