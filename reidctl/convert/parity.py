"""Parity checks of a converted model against its source, on a runner each.

The feeds are real tensors of a preprocessed set (``data``: ``PREP/meta.json`` +
``manifest.jsonl``, docs/formats.md §2) or, without one, seeded synthetic tensors: standard
normal for float inputs, integers in ``[0, 256)`` for uint8 images, ``0``/``1`` for integer
inputs such as a camera index. Per output: the max absolute difference relative to the
source's max absolute value (``rel_diff``) and the row cosine (mean and min), rows flattened.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from reidctl.errors import FormatError, ValidationError

SYNTHETIC_BATCHES = (1, 3)
DATA_SAMPLES = 32


@dataclass(frozen=True)
class OutputParity:
    """One output compared over every feed row."""

    output: str
    rows: int
    max_abs_diff: float
    rel_diff: float
    mean_cosine: float
    min_cosine: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _synthetic(spec: Mapping[str, Any], batch: int, rng: np.random.Generator) -> np.ndarray:
    shape = [batch if i == 0 and not isinstance(d, int) else d for i, d in enumerate(spec["shape"])]
    dtype = np.dtype(spec.get("dtype") or "float32")
    if dtype == np.uint8:
        return rng.integers(0, 256, size=shape, dtype=np.uint8)
    if np.issubdtype(dtype, np.integer):
        return rng.integers(0, 2, size=shape).astype(dtype)
    return rng.standard_normal(shape).astype(dtype)


def validation_feeds(
    facts: Mapping[str, Any],
    *,
    data: str | os.PathLike[str] | None = None,
    samples: int = DATA_SAMPLES,
    batches: Sequence[int] = SYNTHETIC_BATCHES,
    seed: int = 0,
) -> list[dict[str, np.ndarray]]:
    """Feeds for a parity check of a model with ``facts`` (its sidecar).

    With ``data``, one feed of ``samples`` tensors spread over the set for the first input
    (the image), and for a camera-aware model the manifest's cameras as ``reidctl infer``
    feeds them (:mod:`reidctl.runners.cameras`); without, one synthetic feed per batch in
    ``batches``. A static-batch model gets feeds of its own batch. Other inputs are
    synthetic (see the module docstring).
    """
    inputs = list(facts.get("inputs") or [])
    if not inputs:
        raise FormatError("the model facts list no inputs")
    rng = np.random.default_rng(seed)
    static = inputs[0]["shape"][0] if isinstance(inputs[0]["shape"][0], int) else None
    if data is not None:
        from reidctl.artifacts import read_prep_meta
        from reidctl.convert.int8 import PrepCalibrationReader
        from reidctl.runners.cameras import CAMERA_INPUT, camera_rule

        camera = None
        if any(spec["name"] == CAMERA_INPUT for spec in inputs[1:]):
            camera = camera_rule(facts, read_prep_meta(data))
        reader = PrepCalibrationReader(
            data,
            inputs[0]["name"],
            samples=samples,
            batch_size=static or samples,
            static_batch=static is not None,
            camera=camera,
        )
        want = np.dtype(inputs[0].get("dtype") or "float32")
        if reader.dtype != want:
            raise FormatError(
                f"{data} holds {reader.dtype} tensors, the model's input "
                f"{inputs[0]['name']!r} takes {want}; preprocess with the model's sidecar"
            )
        feeds = []
        while (item := reader.get_next()) is not None:
            n = len(item[inputs[0]["name"]])
            for spec in inputs[1:]:
                if spec["name"] not in item:
                    item[spec["name"]] = _synthetic(spec, n, rng)
            feeds.append(item)
        return feeds
    return [
        {spec["name"]: _synthetic(spec, static or b, rng) for spec in inputs}
        for b in ((static,) if static else batches)
    ]


def run_feeds(
    backend: str,
    model_file: str | os.PathLike[str],
    feeds: Sequence[Mapping[str, np.ndarray]],
    **options: Any,
) -> list[dict[str, np.ndarray]]:
    """Outputs of ``model_file`` on runner ``backend`` for each feed."""
    from reidctl.runners import get_runner

    with get_runner(backend)(str(model_file), **options) as runner:
        return [runner.infer_rows(dict(f)) for f in feeds]


def compare_runs(
    ref: Sequence[Mapping[str, np.ndarray]],
    got: Sequence[Mapping[str, np.ndarray]],
    names: Sequence[str],
) -> list[OutputParity]:
    """Per output in ``names``, the differences over all feeds (rows concatenated)."""
    out = []
    for name in names:
        if any(name not in g for g in got):
            raise ValidationError(f"the converted model has no output {name!r}")
        a = np.concatenate([np.asarray(r[name], np.float64).reshape(len(r[name]), -1) for r in ref])
        b = np.concatenate([np.asarray(g[name], np.float64).reshape(len(g[name]), -1) for g in got])
        if a.shape != b.shape:
            raise ValidationError(
                f"output {name!r}: converted shape {list(b.shape)} differs from {list(a.shape)}"
            )
        max_abs = float(np.abs(a - b).max()) if a.size else 0.0
        scale = float(np.abs(a).max()) if a.size else 0.0
        na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
        cos = np.where((na == 0) & (nb == 0), 1.0, (a * b).sum(axis=1) / np.maximum(na * nb, 1e-30))
        out.append(
            OutputParity(
                output=name,
                rows=len(a),
                max_abs_diff=max_abs,
                rel_diff=max_abs / scale if scale > 0 else max_abs,
                mean_cosine=float(cos.mean()) if cos.size else 1.0,
                min_cosine=float(cos.min()) if cos.size else 1.0,
            )
        )
    return out


def check_parity(
    results: Sequence[OutputParity],
    what: str,
    *,
    max_rel_diff: float | None = None,
    min_cosine: float | None = None,
    mean_cosine: float | None = None,
) -> None:
    """Raise :class:`ValidationError` naming the outputs beyond the given bounds (NaN fails)."""
    failures = []
    for r in results:
        if max_rel_diff is not None and not r.rel_diff <= max_rel_diff:
            failures.append(f"{r.output}: relative diff {r.rel_diff:.3g} > {max_rel_diff:g}")
        if min_cosine is not None and not r.min_cosine >= min_cosine:
            failures.append(f"{r.output}: min cosine {r.min_cosine:.6f} < {min_cosine:g}")
        if mean_cosine is not None and not r.mean_cosine >= mean_cosine:
            failures.append(f"{r.output}: mean cosine {r.mean_cosine:.6f} < {mean_cosine:g}")
    if failures:
        raise ValidationError(f"{what} differs from its source: {'; '.join(failures)}")


def describe_feeds(feeds: Sequence[Mapping[str, np.ndarray]], data: Any) -> dict[str, Any]:
    """What the parity check ran on, for the sidecar."""
    first = next(iter(feeds[0])) if feeds else None
    return {
        "data": str(Path(data).resolve()) if data is not None else "synthetic (seed 0)",
        "rows": int(sum(len(f[first]) for f in feeds)) if first else 0,
        "batches": [len(f[first]) for f in feeds] if first else [],
    }
