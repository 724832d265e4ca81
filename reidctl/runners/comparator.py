"""Output parity: run the same feeds through several runners and compare what they return.

One comparator for every parity check reidctl makes: ONNX export validation (onnxruntime
against PyTorch), the INT8 accuracy guard (FP32 against INT8 features) and
``reidctl compare`` (two result directories)::

    results = run_all({"torch": torch_runner, "onnx": ort_runner}, feeds)
    comparison = compare(results, rtol=1e-4)   # the first is the reference
    comparison.check()                         # ValidationError (exit 1) on a failure

Per output: max and mean absolute difference, ``rel_diff = max|a - b| / max|a|`` (``a`` the
reference; the absolute difference when ``a`` is all zeros), mean and min row cosine (rows
flattened; two zero rows count as 1.0) and the worst rows by cosine. Thresholds: ``rtol``
bounds ``rel_diff``, ``atol`` the max absolute difference, ``min_cos`` the min row cosine.
NaN or inf in either result always fails (thresholds or not), and its figures read NaN.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from reidctl.errors import FormatError, ShapeMismatchError, ValidationError
from reidctl.runners.base import Runner

#: a runner, or any callable from feeds to ``{output: array}`` (e.g. a PyTorch module's wrapper)
Source = Runner | Callable[[Mapping[str, np.ndarray]], Mapping[str, np.ndarray]]


def row_cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of each row pair (rows flattened), float64 ``[N]``; 1.0 for two zero
    rows, NaN for a row holding NaN or inf on either side. :class:`ShapeMismatchError` when
    the shapes differ."""
    if np.shape(a) != np.shape(b):
        raise ShapeMismatchError(f"shapes differ: {list(np.shape(a))} vs {list(np.shape(b))}")
    a = np.asarray(a).reshape(len(a), -1).astype(np.float64)
    b = np.asarray(b).reshape(len(b), -1).astype(np.float64)
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    dot = np.einsum("ij,ij->i", a, b)
    both_zero = (na == 0) & (nb == 0)
    with np.errstate(invalid="ignore", over="ignore"):
        cos = dot / np.maximum(na * nb, np.finfo(np.float64).tiny)
    cos = np.where(both_zero, 1.0, cos)
    # A row holding NaN or inf on either side has no cosine: NaN, never 1.0.
    finite = np.isfinite(a).all(axis=1) & np.isfinite(b).all(axis=1)
    return np.where(finite, cos, np.nan)


@dataclass(frozen=True)
class OutputDiff:
    """The difference of one output between the reference ``a`` and ``b``."""

    rows: int
    max_abs_diff: float
    mean_abs_diff: float
    rel_diff: float
    mean_cosine: float
    min_cosine: float
    worst_rows: tuple[tuple[int, float], ...]  # (row index, cosine), lowest cosine first

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["worst_rows"] = [{"index": i, "cosine": c} for i, c in self.worst_rows]
        return d


def diff_arrays(a: np.ndarray, b: np.ndarray, worst: int = 5) -> OutputDiff:
    """The figures of :class:`OutputDiff` for two arrays of one shape ``[N, ...]``."""
    cos = row_cosine(a, b)
    a64, b64 = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        diff = np.abs(a64 - b64)
    nonfinite = not (np.isfinite(a64).all() and np.isfinite(b64).all())
    max_abs = float("nan") if nonfinite else float(diff.max()) if diff.size else 0.0
    scale = float(np.max(np.abs(a64))) if a64.size and not nonfinite else 0.0
    # NaN rows first among the worst (argsort would put them last)
    order = np.argsort(np.where(np.isnan(cos), -np.inf, cos), kind="stable")[:worst]
    return OutputDiff(
        rows=len(a64),
        max_abs_diff=max_abs,
        mean_abs_diff=float("nan") if nonfinite else float(diff.mean()) if diff.size else 0.0,
        rel_diff=max_abs / scale if scale > 0 else max_abs,
        mean_cosine=float(cos.mean()) if cos.size else 1.0,
        min_cosine=float(cos.min()) if cos.size else 1.0,
        worst_rows=tuple((int(i), float(cos[i])) for i in order),
    )


@dataclass(frozen=True)
class Comparison:
    """Every output two results share, and the thresholds each one failed.

    ``failed`` maps an output to the reasons it failed (one line each); ``a`` and ``b`` are
    the labels of the reference and the compared result.
    """

    a: str
    b: str
    outputs: dict[str, OutputDiff]
    only_in_a: list[str] = field(default_factory=list)
    only_in_b: list[str] = field(default_factory=list)
    failed: dict[str, list[str]] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return not self.failed

    @property
    def failures(self) -> list[str]:
        """``"<output>: <reason>"`` for every failed threshold."""
        return [f"{name}: {r}" for name, reasons in self.failed.items() for r in reasons]

    def check(self) -> None:
        """Raise :class:`ValidationError` (exit code 1) listing the failed thresholds."""
        if self.failures:
            raise ValidationError(
                f"results differ beyond the thresholds: {'; '.join(self.failures)}"
            )


def run_all(
    runners: Mapping[str, Source], feeds: Mapping[str, np.ndarray]
) -> dict[str, dict[str, np.ndarray]]:
    """``{label: {output: array}}``: the same feeds through every runner, in order.

    A :class:`Runner` that is not active is activated for the call and released after it;
    rows go through :meth:`Runner.infer_rows`, so engines with restricted batches work too.
    """
    out: dict[str, dict[str, np.ndarray]] = {}
    for label, runner in runners.items():
        if isinstance(runner, Runner):
            if runner.is_active:
                out[label] = runner.infer_rows(feeds)
            else:
                with runner:
                    out[label] = runner.infer_rows(feeds)
        else:
            out[label] = {k: np.asarray(v) for k, v in runner(feeds).items()}
    return out


def _nonfinite_rows(x: np.ndarray) -> int:
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating) or x.size == 0:
        return 0
    return int((~np.isfinite(x.reshape(len(x), -1))).any(axis=1).sum())


def compare(
    results: Mapping[str, Mapping[str, np.ndarray]],
    *,
    rtol: float | None = None,
    atol: float | None = None,
    min_cos: float | None = None,
    worst: int = 5,
) -> Comparison:
    """Compare two results (``{label: {output: array}}``, the first is the reference) on
    every output they share.

    :class:`FormatError` when they share no output, :class:`ShapeMismatchError` when an
    output's shapes differ; thresholds that fail are recorded in :attr:`Comparison.failed`
    (:meth:`Comparison.check` raises).
    """
    if len(results) != 2:
        raise ValueError(f"compare() takes two results, got {len(results)}")
    (la, ra), (lb, rb) = results.items()
    shared = [n for n in ra if n in rb]
    if not shared:
        raise FormatError(
            f"no output in common: {sorted(ra)} vs {sorted(rb)}; compare runs of the same model"
        )
    outputs: dict[str, OutputDiff] = {}
    failed: dict[str, list[str]] = {}
    for name in shared:
        if np.shape(ra[name]) != np.shape(rb[name]):
            raise ShapeMismatchError(
                f"output {name!r}: {la} has shape {list(np.shape(ra[name]))}, {lb} "
                f"{list(np.shape(rb[name]))}"
            )
        d = diff_arrays(ra[name], rb[name], worst)
        outputs[name] = d
        reasons = [
            f"{label} holds NaN or inf in {bad} of {d.rows} rows (min row cosine nan)"
            for label, arr in ((la, ra[name]), (lb, rb[name]))
            if (bad := _nonfinite_rows(arr))
        ]
        if rtol is not None and not d.rel_diff <= rtol:
            reasons.append(
                f"max abs diff {d.max_abs_diff:.3g} is {d.rel_diff:.3g} of the output's max "
                f"abs value, above the tolerance {rtol:g} (min row cosine {d.min_cosine:.6f})"
            )
        if atol is not None and not d.max_abs_diff <= atol:
            reasons.append(f"max abs diff {d.max_abs_diff:.3g} > --atol {atol:g}")
        if min_cos is not None and not d.min_cosine >= min_cos:
            reasons.append(f"min cosine {d.min_cosine:.6f} < --min-cos {min_cos:g}")
        if reasons:
            failed[name] = reasons
    return Comparison(
        a=la,
        b=lb,
        outputs=outputs,
        only_in_a=sorted(set(ra) - set(rb)),
        only_in_b=sorted(set(rb) - set(ra)),
        failed=failed,
    )
