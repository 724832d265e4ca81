"""Compare the features of two result directories (e.g. a device run against the CPU one)."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from reidctl.artifacts import ResultDir
from reidctl.errors import FormatError, ShapeMismatchError, ValidationError


def read_results(path: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """``run.json`` and ``{output: features}`` of a complete result directory."""
    rd = ResultDir.open(path)
    return rd.run, {name: rd.features(name) for name in rd.outputs}


def row_cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of each row pair (rows flattened), float64; 1.0 for two zero rows."""
    a = a.reshape(len(a), -1).astype(np.float64)
    b = b.reshape(len(b), -1).astype(np.float64)
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    dot = np.einsum("ij,ij->i", a, b)
    both_zero = (na == 0) & (nb == 0)
    cos = dot / np.maximum(na * nb, np.finfo(np.float64).tiny)
    return np.where(both_zero, 1.0, cos)


def compare_arrays(a: np.ndarray, b: np.ndarray, worst: int = 5) -> dict[str, Any]:
    """Max/mean absolute difference, mean/min row cosine and the ``worst`` rows by cosine."""
    if a.shape != b.shape:
        raise ShapeMismatchError(f"shapes differ: {list(a.shape)} vs {list(b.shape)}")
    diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
    cos = row_cosine(a, b)
    order = np.argsort(cos, kind="stable")[:worst]
    return {
        "rows": len(a),
        "max_abs_diff": float(diff.max()) if diff.size else 0.0,
        "mean_abs_diff": float(diff.mean()) if diff.size else 0.0,
        "mean_cosine": float(cos.mean()) if cos.size else 1.0,
        "min_cosine": float(cos.min()) if cos.size else 1.0,
        "worst_rows": [{"index": int(i), "cosine": float(cos[i])} for i in order],
    }


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
    ``min_cos`` the min row cosine; :func:`check_comparison` turns failures into an error.
    """
    run_a, fa = read_results(results_a)
    run_b, fb = read_results(results_b)
    ma, mb = ResultDir.open(results_a).manifest, ResultDir.open(results_b).manifest
    if [e.bin for e in ma] != [e.bin for e in mb]:
        raise ShapeMismatchError(
            f"{results_a} and {results_b} hold different images (their manifests differ); "
            "compare runs over the same preprocessed set"
        )
    shared = [n for n in fa if n in fb]
    if not shared:
        raise FormatError(
            f"no output in common: {sorted(fa)} vs {sorted(fb)}; compare runs of the same model"
        )
    stats, failures = {}, []
    for name in shared:
        s = compare_arrays(fa[name], fb[name], worst)
        stats[name] = s
        if atol is not None and s["max_abs_diff"] > atol:
            failures.append(f"{name}: max abs diff {s['max_abs_diff']:.3g} > --atol {atol:g}")
        if min_cos is not None and s["min_cosine"] < min_cos:
            failures.append(f"{name}: min cosine {s['min_cosine']:.6f} < --min-cos {min_cos:g}")
    return {
        "a": _describe(results_a, run_a),
        "b": _describe(results_b, run_b),
        "outputs": stats,
        "only_in_a": sorted(set(fa) - set(fb)),
        "only_in_b": sorted(set(fb) - set(fa)),
        "failures": failures,
        "passed": not failures,
    }


def check_comparison(report: dict[str, Any]) -> None:
    """Raise :class:`ValidationError` (exit code 1) listing the failed thresholds."""
    if report["failures"]:
        failed = "; ".join(report["failures"])
        raise ValidationError(f"results differ beyond the thresholds: {failed}")


def _describe(path: str | os.PathLike[str], run: dict[str, Any]) -> dict[str, Any]:
    return {"path": str(path), "backend": run.get("backend"), "device": run.get("device")}
