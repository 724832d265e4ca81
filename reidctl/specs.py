"""Plain data describing models and tensors. No torch import here: every stage reads these."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from reidctl.errors import FormatError, InputError

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
INTERPOLATIONS = ("bilinear", "bicubic", "area", "nearest")
COLOR_ORDERS = ("rgb", "bgr")
#: the largest input side (pixels) a preprocessing spec accepts
MAX_SIDE = 4096


@dataclass(frozen=True)
class PreprocessSpec:
    """How an image becomes a model input.

    The image is decoded, converted to ``color`` order, resized to ``height`` x ``width``
    pixels with ``interpolation``, scaled to [0, 1] by dividing by 255, then normalised as
    ``(x - mean) / std`` per channel and laid out CHW. With ``normalize_in_graph`` the model
    does the scaling and normalisation itself and takes uint8 RGB NCHW input.

    Checked at construction (:class:`InputError`): sides 1..:data:`MAX_SIDE` pixels, mean
    and std finite with 3 values each, mean in [0, 1], std > 0 (1/255 is valid: models that
    take raw 0..255 pixels use mean 0, std 1/255).
    """

    height: int = 256
    width: int = 128
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bilinear"
    color: str = "rgb"
    normalize_in_graph: bool = False

    def __post_init__(self) -> None:
        if self.height <= 0 or self.width <= 0:
            raise InputError(f"input size must be positive, got {self.height}x{self.width}")
        if self.interpolation not in INTERPOLATIONS:
            raise InputError(
                f"unknown interpolation {self.interpolation!r}; valid: {', '.join(INTERPOLATIONS)}"
            )
        if self.color not in COLOR_ORDERS:
            raise InputError(f"unknown colour order {self.color!r}; valid: rgb, bgr")
        if self.height > MAX_SIDE or self.width > MAX_SIDE:
            raise InputError(
                f"input size {self.height}x{self.width} is larger than {MAX_SIDE} pixels per "
                f"side (a person crop is typically 256x128 or 384x192; one {MAX_SIDE}x"
                f"{MAX_SIDE} float32 tensor is already 200 MB)"
            )
        if len(self.mean) != 3 or len(self.std) != 3:
            raise InputError(
                f"mean and std need 3 values each (one per channel), got mean "
                f"{list(self.mean)}, std {list(self.std)}"
            )
        if not all(math.isfinite(v) for v in (*self.mean, *self.std)):
            raise InputError(
                f"mean and std must be finite numbers, got mean {list(self.mean)}, std "
                f"{list(self.std)} (--mean, --std)"
            )
        if any(not 0.0 <= m <= 1.0 for m in self.mean):
            raise InputError(
                f"mean {list(self.mean)} is outside [0, 1]: it is subtracted from pixels "
                "scaled to [0, 1] (e.g. ImageNet 0.485,0.456,0.406; 0,0,0 for raw pixels) "
                "(--mean)"
            )
        if any(s <= 0 for s in self.std):
            raise InputError(
                f"std {list(self.std)} must be > 0 per channel (e.g. ImageNet "
                "0.229,0.224,0.225; 0.00392156862745098 = 1/255 for models that take raw "
                "0..255 pixels) (--std)"
            )

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PreprocessSpec:
        try:
            return cls(
                height=int(d["height"]),
                width=int(d["width"]),
                mean=tuple(float(v) for v in d["mean"]),  # type: ignore[arg-type]
                std=tuple(float(v) for v in d["std"]),  # type: ignore[arg-type]
                interpolation=str(d.get("interpolation", "bilinear")),
                color=str(d.get("color", "rgb")),
                normalize_in_graph=bool(d.get("normalize_in_graph", False)),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise FormatError(f"invalid preprocessing description {d!r}: {e}") from e


@dataclass(frozen=True)
class TensorSpec:
    """A named tensor; a string in ``shape`` is a named dynamic axis (e.g. ``"batch"``)."""

    name: str
    shape: tuple[int | str, ...]
    dtype: str = "float32"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TensorSpec:
        try:
            return cls(str(d["name"]), tuple(d["shape"]), str(d.get("dtype", "float32")))
        except (KeyError, TypeError) as e:
            raise FormatError(f"invalid tensor description {d!r}: {e}") from e


@dataclass(frozen=True)
class ModelFacts:
    """What every stage after export needs to know about a model (the sidecar's core)."""

    model: str
    preprocess: PreprocessSpec
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    feature: str
    l2_normalize: bool
    extra: dict[str, Any] = field(default_factory=dict)

    def output(self, name: str) -> TensorSpec:
        for o in self.outputs:
            if o.name == name:
                return o
        from reidctl.errors import UnknownNameError

        raise UnknownNameError("output", name, [o.name for o in self.outputs])
