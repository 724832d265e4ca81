"""Where the preprocessing comes from: a model sidecar, a registered model, or explicit flags.

Exactly one source is used, so a preprocessed set always matches what its model expects:
``--model-config model.onnx.json`` (written by ``reidctl export``), ``--model NAME`` (the
registry), or the explicit values (size, mean, std, interpolation, colour order), each
defaulting to 256x128, ImageNet mean/std, bilinear, RGB.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from reidctl.artifacts.sidecar import sidecar_path, sidecar_preprocess
from reidctl.errors import FormatError, InputError
from reidctl.preprocess.transform import DTYPES
from reidctl.specs import IMAGENET_MEAN, IMAGENET_STD, PreprocessSpec


def parse_size(text: str) -> tuple[int, int]:
    """``"256x128"`` (height x width, pixels) -> ``(256, 128)``."""
    parts = text.lower().replace("*", "x").split("x")
    try:
        if len(parts) != 2:
            raise ValueError
        h, w = int(parts[0]), int(parts[1])
    except ValueError:
        raise InputError(
            f"invalid size {text!r}: give HEIGHTxWIDTH in pixels, e.g. 256x128"
        ) from None
    if h <= 0 or w <= 0:
        raise InputError(f"invalid size {text!r}: height and width must be positive")
    return h, w


def parse_triple(text: str | Sequence[float], what: str) -> tuple[float, float, float]:
    """``"0.485,0.456,0.406"`` -> three floats (one per channel, in the colour order)."""
    items = text.replace(" ", ",").split(",") if isinstance(text, str) else list(text)
    try:
        values = tuple(float(v) for v in items if str(v) != "")
    except ValueError:
        raise InputError(f"invalid {what} {text!r}: give 3 comma-separated numbers") from None
    if len(values) != 3:
        raise InputError(f"invalid {what} {text!r}: give 3 comma-separated numbers")
    return values  # type: ignore[return-value]


def spec_from_sidecar(path: str | os.PathLike[str]) -> PreprocessSpec:
    """The ``preprocess`` block of a model sidecar (``model.onnx.json``).

    A model file (``model.onnx``) is accepted too: its sidecar beside it is read, or, when it
    has none, the facts stored in its ONNX metadata (``reidctl.facts``).
    """
    p = Path(path)
    if p.suffix.lower() == ".onnx" and not sidecar_path(p).is_file() and p.is_file():
        from reidctl.runners.facts import sidecar_or_none

        side = sidecar_or_none(p)
        if side is None:
            raise FormatError(
                f"{p} has no sidecar and no reidctl facts in its metadata; describe it once "
                "with `reidctl adopt` or give --size, --mean, --std"
            )
        return side.preprocess
    return sidecar_preprocess(path)


def spec_from_model(name: str) -> PreprocessSpec:
    """The preprocessing of a registered model (no torch import)."""
    from reidctl.models.registry import get_spec

    return get_spec(name).preprocess


def resolve_preprocess(
    model_config: str | os.PathLike[str] | None = None,
    model: str | None = None,
    *,
    size: str | tuple[int, int] | None = None,
    mean: str | Sequence[float] | None = None,
    std: str | Sequence[float] | None = None,
    interpolation: str | None = None,
    color: str | None = None,
) -> PreprocessSpec:
    """One :class:`PreprocessSpec` from exactly one source.

    ``model_config`` (a sidecar path) or ``model`` (a registry name) or the explicit values;
    explicit values left ``None`` take the defaults (256x128, ImageNet mean/std, bilinear,
    RGB). Mixing sources raises :class:`InputError` naming the conflicting options.
    """
    explicit = {
        "--size": size,
        "--mean": mean,
        "--std": std,
        "--interp": interpolation,
        "--rgb/--bgr": color,
    }
    given = [k for k, v in explicit.items() if v is not None]
    if model_config is not None and model is not None:
        raise InputError("give either --model-config or --model, not both")
    if (model_config is not None or model is not None) and given:
        source = "--model-config" if model_config is not None else "--model"
        raise InputError(
            f"{source} sets the preprocessing; drop {', '.join(given)} "
            "(or drop the model and give every value explicitly)"
        )
    if model_config is not None:
        return spec_from_sidecar(model_config)
    if model is not None:
        return spec_from_model(model)
    h, w = parse_size(size) if isinstance(size, str) else (size or (256, 128))
    return PreprocessSpec(
        height=h,
        width=w,
        mean=parse_triple(mean, "mean") if mean is not None else IMAGENET_MEAN,
        std=parse_triple(std, "std") if std is not None else IMAGENET_STD,
        interpolation=interpolation or "bilinear",
        color=color or "rgb",
    )


def resolve_dtype(spec: PreprocessSpec, dtype: str | None) -> str:
    """The tensor dtype: ``dtype`` if given, else ``uint8`` for models that normalise in
    their graph (exported with ``--fold-normalize``) and ``float32`` otherwise.

    A float dtype for a model that takes uint8 is refused: its tensors would be normalised
    twice.
    """
    if dtype is None:
        return "uint8" if spec.normalize_in_graph else "float32"
    if dtype not in DTYPES:
        raise InputError(f"unknown dtype {dtype!r}; valid: {', '.join(DTYPES)}")
    if spec.normalize_in_graph and dtype != "uint8":
        raise InputError(
            f"the model normalises in its graph and takes uint8 input; --dtype {dtype} would "
            "normalise twice: drop --dtype or use --dtype uint8"
        )
    return dtype
