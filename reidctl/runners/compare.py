"""Compare the features of two result directories (e.g. a device run against the CPU one)."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from reidctl.artifacts import ResultDir
from reidctl.errors import ShapeMismatchError, ValidationError
from reidctl.runners.comparator import compare
from reidctl.runners.comparator import row_cosine as row_cosine  # re-exported


def read_results(path: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """``run.json`` and ``{output: features}`` of a complete result directory."""
    rd = ResultDir.open(path)
    return rd.run, {name: rd.features(name) for name in rd.outputs}


def compare_results(
    results_a: str | os.PathLike[str],
    results_b: str | os.PathLike[str],
    *,
    atol: float | None = None,
    min_cos: float | None = None,
    worst: int = 5,
) -> dict[str, Any]:
    """Compare every output the two result directories share.

    Returns ``{"outputs": {name: stats}, "passed": bool, "failures": [...]}``; the rows must
    describe the same images (equal manifests). ``atol`` bounds the max absolute difference,
    ``min_cos`` the min row cosine (:func:`reidctl.runners.comparator.compare`);
    :func:`check_comparison` turns failures into an error.
    """
    run_a, fa = read_results(results_a)
    run_b, fb = read_results(results_b)
    ma, mb = ResultDir.open(results_a).manifest, ResultDir.open(results_b).manifest
    if [e.bin for e in ma] != [e.bin for e in mb]:
        raise ShapeMismatchError(
            f"{results_a} and {results_b} hold different images (their manifests differ); "
            "compare runs over the same preprocessed set"
        )
    comparison = compare({"A": fa, "B": fb}, atol=atol, min_cos=min_cos, worst=worst)
    return {
        "a": _describe(results_a, run_a),
        "b": _describe(results_b, run_b),
        "outputs": {name: d.to_dict() for name, d in comparison.outputs.items()},
        "only_in_a": comparison.only_in_a,
        "only_in_b": comparison.only_in_b,
        "failures": comparison.failures,
        "passed": comparison.passed,
    }


def check_comparison(report: dict[str, Any]) -> None:
    """Raise :class:`ValidationError` (exit code 1) listing the failed thresholds."""
    if report["failures"]:
        failed = "; ".join(report["failures"])
        raise ValidationError(f"results differ beyond the thresholds: {failed}")


def _describe(path: str | os.PathLike[str], run: dict[str, Any]) -> dict[str, Any]:
    return {"path": str(path), "backend": run.get("backend"), "device": run.get("device")}
