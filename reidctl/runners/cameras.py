"""The camera input of a camera-aware model, fed from a manifest (docs/formats.md §1, §2).

A camera-aware model (TransReID, CLIP-ReID with SIE) has a second input ``camera``, int64
``[batch]``: the 0-based row of its SIE table. Every stage that feeds it from a
preprocessed set (``reidctl infer`` on any engine, ``convert int8`` calibration and its
accuracy guard, ``convert fp16 --data``) uses one rule, :class:`CameraRule`::

    camera = camid - offset        (0 <= camera < num_cameras)

``offset`` is, first found: ``--camera-offset``; the preprocessed set's ``first_camera``
(``meta.json``: the first camera number of its layout, 1 for Market-1501, DukeMTMC-reID,
MSMT17 and CUHK03); for a set written without it, its layout's first camera; the
sidecar's ``camera.first_camera`` (the training data's numbering); 1. ``num_cameras`` comes
from the sidecar's ``camera`` block (``None`` when the model has no sidecar: then only
``camera >= 0`` is checked). A manifest entry with a negative ``camid`` has no camera id.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from reidctl.artifacts import ManifestEntry, ModelSidecar
from reidctl.errors import InputError
from reidctl.specs import TensorSpec

#: the name of a camera-aware model's second input
CAMERA_INPUT = "camera"
#: the offset when nothing else gives one (layouts number cameras from 1)
DEFAULT_FIRST_CAMERA = 1
CAMERA_FIX = (
    "pass --camera-offset N (camera = camid - N), or export the model with "
    "--camera-agnostic for data from other cameras"
)


def split_inputs(
    specs: Sequence[TensorSpec], model_file: str | Path, what: str = "reidctl infer"
) -> tuple[TensorSpec, TensorSpec | None]:
    """``(image input, camera input or None)`` of a model; :class:`InputError` unless the
    model has one image input and at most the ``camera`` input besides it."""
    cameras = [s for s in specs if s.name == CAMERA_INPUT]
    images = [s for s in specs if s.name != CAMERA_INPUT]
    if len(images) != 1:
        raise InputError(
            f"{model_file} has {len(specs)} inputs ({', '.join(s.name for s in specs)}); "
            f"{what} feeds one image tensor per row and optionally {CAMERA_INPUT!r} "
            "(int64 [batch])"
        )
    return images[0], (cameras[0] if cameras else None)


def sidecar_cameras(
    sidecar: ModelSidecar | Mapping[str, Any] | None,
) -> tuple[int | None, int | None]:
    """``(num_cameras, first_camera)`` of a camera-aware model's sidecar ``camera`` block
    (``None`` for what it does not say)."""
    if sidecar is None:
        return None, None
    fields = sidecar.fields if isinstance(sidecar, ModelSidecar) else sidecar
    cam = fields.get("camera")
    if not isinstance(cam, Mapping) or not cam.get("input"):
        return None, None
    num = cam.get("num_cameras")
    first = cam.get("first_camera")
    return (
        int(num) if isinstance(num, int) and num > 0 else None,
        int(first) if isinstance(first, int) else None,
    )


def prep_first_camera(meta: Mapping[str, Any] | None) -> int | None:
    """The first camera number of a preprocessed set: ``meta.json``'s ``first_camera``,
    else (a set written before it was recorded) that of its layout; ``None`` if unknown."""
    if not meta:
        return None
    if "first_camera" in meta:
        v = meta["first_camera"]
        return int(v) if isinstance(v, int) and not isinstance(v, bool) else None
    from reidctl.preprocess.layouts import layout_first_camera

    return layout_first_camera(str(meta.get("layout", "")))


@dataclass(frozen=True)
class CameraRule:
    """``camera = camid - offset``, valid in ``0..num_cameras - 1`` (``num_cameras`` None:
    only ``>= 0``). ``source`` says where ``offset`` came from (recorded in ``run.json``)."""

    offset: int
    num_cameras: int | None = None
    source: str = "default"

    def check(
        self,
        cameras: np.ndarray,
        names: Sequence[str],
        camids: Sequence[int] | None = None,
    ) -> None:
        """Raise :class:`InputError` naming (``names[i]``) the first invalid camera index;
        ``camids``: the manifest camids they came from, for the message."""
        bad = cameras < 0
        if self.num_cameras is not None:
            bad |= cameras >= self.num_cameras
        if not bad.any():
            return
        i = int(np.flatnonzero(bad)[0])
        valid = "0.." + (str(self.num_cameras - 1) if self.num_cameras else "")
        rows = f"{self.num_cameras or 'non-negative'} camera rows ({valid}"
        if camids is None:
            raise InputError(
                f"{names[i]} is camera index {int(cameras[i])}, outside the model's {rows}); "
                "the index is camid - first camera number, as `reidctl infer` feeds it"
            )
        if camids[i] < 0:
            raise InputError(
                f"{names[i]} has no camera id (camid {camids[i]}), but the model takes a "
                f"{CAMERA_INPUT!r} input; preprocess with a layout that reads cameras from "
                "the file names, or export the model with --camera-agnostic"
            )
        span = (
            f"camids {self.offset}..{self.offset + self.num_cameras - 1}"
            if self.num_cameras
            else f"camids >= {self.offset}"
        )
        raise InputError(
            f"{names[i]}: camid {camids[i]} gives camera index {int(cameras[i])} "
            f"(camid - {self.offset}, offset from {self.source}), outside the model's "
            f"{rows}; {span}); {CAMERA_FIX}"
        )

    def indices(
        self, entries: Sequence[ManifestEntry], root: str | Path | None = None
    ) -> np.ndarray:
        """The camera input for ``entries``: int64 ``[len(entries)]``, checked; errors name
        the image (``root / source`` when the dataset root is known)."""
        camids = [e.camid for e in entries]
        cams = np.asarray(camids, dtype=np.int64) - self.offset
        if len(cams):
            bad = cams < 0
            if self.num_cameras is not None:
                bad |= cams >= self.num_cameras
            if bad.any():
                names = [str(Path(root) / e.source) if root else e.source for e in entries]
                self.check(cams, names, camids)
        return cams

    def to_dict(self) -> dict[str, Any]:
        return {
            "input": CAMERA_INPUT,
            "index": f"camid - {self.offset}",
            "offset": self.offset,
            "offset_from": self.source,
            "num_cameras": self.num_cameras,
        }


def camera_rule(
    sidecar: ModelSidecar | Mapping[str, Any] | None,
    prep_meta: Mapping[str, Any] | None,
    camera_offset: int | None = None,
) -> CameraRule:
    """The :class:`CameraRule` for a model (its sidecar, may be ``None``) over a set with
    ``meta.json`` ``prep_meta``; ``camera_offset`` (``--camera-offset``) overrides."""
    num, side_first = sidecar_cameras(sidecar)
    if camera_offset is not None:
        if isinstance(camera_offset, bool) or not isinstance(camera_offset, int):
            raise InputError(f"--camera-offset must be an integer, got {camera_offset!r}")
        return CameraRule(camera_offset, num, "--camera-offset")
    first = prep_first_camera(prep_meta)
    if first is not None:
        return CameraRule(first, num, "the preprocessed set's first_camera")
    if side_first is not None:
        return CameraRule(side_first, num, "the sidecar's first_camera")
    return CameraRule(DEFAULT_FIRST_CAMERA, num, "default")
