"""The batches a benchmark feeds: seeded synthetic tensors or real ones from a
preprocessed set (read through :class:`reidctl.artifacts.PrepSet`)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np

from reidctl.artifacts import ModelSidecar, PrepSet
from reidctl.errors import FormatError, InputError, ShapeMismatchError
from reidctl.specs import TensorSpec


def concrete_shape(spec: TensorSpec, batch_size: int, fallback: TensorSpec | None = None):
    """Fill the dynamic axes of ``spec``: axis 0 is the batch; others come from ``fallback``
    (the sidecar's spec). Returns ``(shape, skip_reason)``."""
    shape: list[int] = []
    for axis, d in enumerate(spec.shape):
        if axis == 0:
            if isinstance(d, int) and d > 0 and d != batch_size:
                return None, f"static batch {d}"
            shape.append(batch_size)
        elif isinstance(d, int) and d > 0:
            shape.append(d)
        elif fallback is not None and isinstance(fallback.shape[axis], int):
            shape.append(int(fallback.shape[axis]))
        else:
            raise ShapeMismatchError(
                f"input {spec.name!r} has a dynamic axis {axis} ({d!r}) and no sidecar to fix "
                "it; export the model with a fixed input size"
            )
    return tuple(shape), None


def synthetic_feeds(
    specs: Sequence[TensorSpec],
    batch_size: int,
    seed: int = 0,
    sidecar_inputs: Sequence[TensorSpec] = (),
    index_bounds: Mapping[str, int] | None = None,
) -> tuple[dict[str, np.ndarray] | None, str | None]:
    """Seeded random inputs of each spec's shape and dtype: N(0, 1) for floats (what
    normalised images look like), uniform 0..255 for uint8; an integer input named in
    ``index_bounds`` (e.g. ``{"camera": 6}``) gets valid indices ``0..bound - 1``.
    Returns ``(feeds, skip_reason)``."""
    rng = np.random.default_rng(seed)
    by_name = {s.name: s for s in sidecar_inputs}
    bounds = index_bounds or {}
    feeds = {}
    for spec in specs:
        shape, skip = concrete_shape(spec, batch_size, by_name.get(spec.name))
        if skip:
            return None, skip
        dtype = np.dtype(spec.dtype)
        if dtype.kind == "f":
            feeds[spec.name] = rng.standard_normal(shape, dtype=np.float32).astype(dtype)
        elif dtype.kind in "ui" and spec.name in bounds:
            feeds[spec.name] = rng.integers(0, bounds[spec.name], size=shape).astype(dtype)
        elif dtype.kind in "ui":
            feeds[spec.name] = rng.integers(0, 256, size=shape).astype(dtype)
        else:
            raise ShapeMismatchError(f"cannot make synthetic data of dtype {dtype} ({spec.name})")
    return feeds, None


def load_prep_tensors(prep_dir: str | os.PathLike[str], count: int) -> np.ndarray:
    """The first ``count`` tensors of a preprocessed set as ``[count, C, H, W]`` (manifest
    order, cycling when the set is smaller), dtype and shape from ``meta.json``."""
    prep = PrepSet.open(prep_dir)
    if not prep.entries:
        raise FormatError(f"{prep_dir} holds no tensors")
    return prep.read_batch([i % len(prep.entries) for i in range(count)])


def data_feeds(
    specs: Sequence[TensorSpec], batch_size: int, prep_dir: str | os.PathLike[str]
) -> tuple[dict[str, np.ndarray] | None, str | None]:
    """A batch of real tensors from ``prep_dir`` for a single-input model."""
    if len(specs) != 1:
        raise InputError(
            f"--data feeds one input, the model has {len(specs)}: {[s.name for s in specs]}"
        )
    d0 = specs[0].shape[0]
    if isinstance(d0, int) and d0 > 0 and d0 != batch_size:
        return None, f"static batch {d0}"
    return {specs[0].name: load_prep_tensors(prep_dir, batch_size)}, None


def index_bounds(sidecar: ModelSidecar | None) -> dict[str, int]:
    """``{"camera": num_cameras}`` for a camera-aware model's sidecar, else ``{}``."""
    cam = sidecar.fields.get("camera") if sidecar is not None else None
    if isinstance(cam, dict) and cam.get("input") and int(cam.get("num_cameras") or 0) > 0:
        return {str(cam["input"]): int(cam["num_cameras"])}
    return {}
