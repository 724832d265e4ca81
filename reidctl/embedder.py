"""Embeddings from Python: :class:`Embedder` turns image crops into ReID features.

::

    from reidctl import Embedder

    with Embedder("osnet.onnx") as emb:            # facts from the sidecar or ONNX metadata
        feats = emb.embed(crops)                   # BGR uint8 [H, W, 3] arrays -> [N, D]

The preprocessing is the one ``reidctl preprocess`` applies
(:class:`reidctl.preprocess.transform.ImageTransform`, same decode, resize and look-up
tables), and inference goes through the same runners as ``reidctl infer``, so the features
equal those of a result directory bit for bit when the batches are the same (see
docs/python-api.md for why batch composition matters on some back ends).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from reidctl.artifacts import ModelSidecar
from reidctl.errors import FormatError, InputError, ShapeMismatchError
from reidctl.preprocess.transform import (
    DTYPES,
    BadImageError,
    ImageTransform,
    TensorSettings,
    decode_image,
)
from reidctl.runners.cameras import CAMERA_INPUT, CameraRule, sidecar_cameras, split_inputs
from reidctl.specs import PreprocessSpec

if TYPE_CHECKING:
    from reidctl.runners.base import Runner

POOLS = ("mean", "max")
COLORS = ("bgr", "rgb")

ImageLike = Any  # str | os.PathLike | bytes | np.ndarray [H, W, 3] uint8 | PIL.Image.Image


def l2_rows(x: np.ndarray) -> np.ndarray:
    """Row-wise L2 normalisation of a float32 ``[N, D]`` array, **in place** (returns ``x``).

    The arithmetic of the evaluation's :func:`~reidctl.evaluate.distance.l2_normalize`
    (zero rows stay zero), bit for bit, in fewer array operations: after a model run the
    caches are cold and every extra operation costs more than its arithmetic.
    """
    norm = np.sqrt(np.einsum("ij,ij->i", x, x))
    np.maximum(norm, 1e-12, out=norm)
    x /= norm[:, None]
    return x


def _is_pil(item: Any) -> bool:
    return type(item).__module__.startswith("PIL.") and hasattr(item, "convert")


def to_bgr(item: ImageLike, index: int, color: str = "bgr") -> np.ndarray:
    """One image of any accepted kind -> a C-contiguous ``[H, W, 3]`` uint8 BGR array.

    Paths and bytes are decoded as ``reidctl preprocess`` decodes files; arrays are taken in
    ``color`` order; PIL images are converted to RGB. Errors name ``images[index]``.
    """
    if type(item) is not np.ndarray:
        item, color = _decode_or_convert(item, index, color)
    if item.ndim != 3 or item.shape[2] != 3 or item.shape[0] < 1 or item.shape[1] < 1:
        raise ShapeMismatchError(
            f"images[{index}] has shape {list(item.shape)}; an image array must be [H, W, 3] "
            f"({color.upper()}, uint8)"
        )
    if item.dtype != np.uint8:
        raise ShapeMismatchError(
            f"images[{index}] has dtype {item.dtype}; image arrays must be uint8 (0..255), as "
            "cv2.imread returns them"
        )
    if color == "rgb":
        item = item[:, :, ::-1]
    return item if item.flags.c_contiguous else np.ascontiguousarray(item)


def _decode_or_convert(item: ImageLike, index: int, color: str) -> tuple[np.ndarray, str]:
    """A path, encoded bytes, a PIL image or an ndarray subclass -> ``(array, colour order)``;
    decoded images are BGR, PIL images RGB."""
    where = f"images[{index}]"
    if isinstance(item, (str, os.PathLike)):
        try:
            with open(item, "rb") as f:
                data = f.read()
        except OSError as e:
            raise BadImageError(f"{where} {item}: cannot read: {e.strerror or e}") from e
        return decode_image(data, f"{where} {item}"), "bgr"
    if isinstance(item, (bytes, bytearray, memoryview)):
        return decode_image(bytes(item), where), "bgr"
    if _is_pil(item):
        return np.asarray(item.convert("RGB")), "rgb"
    if not isinstance(item, np.ndarray):
        raise InputError(
            f"{where} is a {type(item).__name__}; give a path, encoded bytes, a uint8 "
            "[H, W, 3] array or a PIL image"
        )
    return np.asarray(item), color


class Embedder:
    """A model file, its facts and a runner: image crops in, feature rows out.

    ``model_file`` is any model reidctl runs (``.onnx``, OpenVINO ``.xml``, a TensorRT
    engine, ...) whose facts are stored: its sidecar ``<model_file>.json``, or for an ONNX
    the ``reidctl.facts`` metadata (``reidctl export`` and ``convert`` write both;
    ``reidctl adopt`` writes them for a model made elsewhere). ``backend`` defaults to the
    runner for the file's suffix (``.onnx`` -> ``ort``). ``batch_size`` images run per call
    (an engine with fixed batch sizes splits or pads, as ``reidctl infer`` does).
    ``threads`` and ``device`` and ``runner_options`` go to the runner (only the options it
    declares are accepted). ``normalize`` overrides the facts' ``l2_normalize``.

    Use as a context manager, or call :meth:`close`. Not thread-safe: one per thread.
    """

    def __init__(
        self,
        model_file: str | os.PathLike[str],
        backend: str | None = None,
        *,
        batch_size: int = 32,
        threads: int | None = None,
        device: str | None = None,
        normalize: bool | None = None,
        **runner_options: Any,
    ) -> None:
        from reidctl.preprocess.config import resolve_dtype
        from reidctl.runners.facts import stored_facts
        from reidctl.runners.infer import runner_class

        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InputError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.model_file = Path(model_file)
        if not self.model_file.is_file():
            raise FormatError(f"model file not found: {self.model_file}")
        facts, source = stored_facts(self.model_file)
        if facts is None or source is None:
            raise FormatError(
                f"{self.model_file} has no sidecar and no reidctl facts in its metadata, so "
                "its preprocessing is unknown; describe it once with `reidctl adopt "
                f"{self.model_file} --size HxW --mean R,G,B --std R,G,B [--bgr] [--normalize]`"
            )
        self.facts: ModelSidecar = facts
        #: where the facts came from: ``"sidecar"`` or ``"metadata"``
        self.facts_source: str = source
        self.batch_size = batch_size
        self._buffers = threading.local()
        self.normalize = facts.l2_normalize if normalize is None else bool(normalize)
        cls = runner_class(self.model_file, backend)
        options = {"threads": threads, "device": device, **runner_options}
        self._runner = cls(str(self.model_file), **options)
        self._runner.activate()
        try:
            self._image, self._camera = split_inputs(
                self._runner.input_specs(), self.model_file, "the Embedder"
            )
            num, first = sidecar_cameras(facts)
            #: rows of a camera-aware model's SIE table (``None``: not recorded)
            self.num_cameras: int | None = num if self._camera is not None else None
            #: the camid of camera index 0 in the training data (sidecar ``first_camera``)
            self.first_camera: int | None = first if self._camera is not None else None
            dtype = self._image.dtype if self._image.dtype in DTYPES else None
            self.settings = TensorSettings(facts.preprocess, resolve_dtype(facts.preprocess, dtype))
            self._transform = ImageTransform(self.settings)
            self.dim = self._feature_dim()
        except BaseException:
            self._runner.deactivate()
            raise

    # ---------------------------------------------------------------- set-up
    def _feature_dim(self) -> int:
        shape = self.facts.facts.output(self.facts.feature).shape[1:]
        if all(isinstance(d, int) for d in shape):
            return int(np.prod(shape, dtype=np.int64)) if shape else 1
        probe = np.zeros((1, *self.settings.shape), self.settings.np_dtype)
        return int(self._run(probe, np.zeros(1, np.int64)).shape[1])

    # ---------------------------------------------------------------- facts
    @property
    def preprocess(self) -> PreprocessSpec:
        """The preprocessing applied to every image (from the model's facts)."""
        return self.facts.preprocess

    @property
    def feature(self) -> str:
        """The model output returned as the feature."""
        return self.facts.feature

    @property
    def camera_aware(self) -> bool:
        """Whether the model takes a ``camera`` input (then :meth:`embed` needs ``cameras``)."""
        return self._camera is not None

    @property
    def runner(self) -> Runner:
        """The active runner this Embedder feeds (its ``latencies_s``, or a bare
        ``infer_rows`` call on tensors from :meth:`preprocess_images`)."""
        return self._runner

    @property
    def backend(self) -> str:
        """The runner's registry name (``ort``, ``openvino``, ...)."""
        return self._runner.name

    # ---------------------------------------------------------------- lifecycle
    def close(self) -> None:
        """Release the runner (sessions, device memory); the Embedder is unusable after."""
        self._runner.deactivate()

    def __enter__(self) -> Embedder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"Embedder({str(self.model_file)!r}, backend={self.backend!r}, "
            f"feature={self.feature!r}, dim={self.dim}, normalize={self.normalize})"
        )

    # ---------------------------------------------------------------- inference
    def preprocess_images(self, images: Sequence[ImageLike], color: str = "bgr") -> np.ndarray:
        """The model-input tensors of ``images``: ``[N, 3, H, W]`` of the model's input dtype,
        exactly the values ``reidctl preprocess`` writes for the same images."""
        items = self._as_list(images)
        out = np.empty((len(items), *self.settings.shape), self.settings.np_dtype)
        for i, item in enumerate(items):
            self._transform(to_bgr(item, i, self._check_color(color)), out[i])
        return out

    def embed(
        self,
        images: Sequence[ImageLike],
        cameras: Sequence[int] | np.ndarray | None = None,
        *,
        color: str = "bgr",
        normalize: bool | None = None,
    ) -> np.ndarray:
        """Features of ``images``: float32 ``[N, D]``, row ``i`` for ``images[i]``.

        ``images``: paths, encoded bytes (JPEG, PNG, ...), uint8 ``[H, W, 3]`` arrays in
        ``color`` order (``"bgr"``, OpenCV's and trackers' convention, or ``"rgb"``), PIL
        images, or one uint8 ``[N, H, W, 3]`` array; any number, run ``batch_size`` at a
        time. ``cameras``: one 0-based camera index per image, for camera-aware models
        (:attr:`camera_aware`); refused for the others. The index is what ``reidctl infer``
        feeds for a manifest entry, ``camid - first camera number`` (for the training
        dataset's numbering: ``camid - self.first_camera``), and must lie in
        ``0..num_cameras - 1`` (:attr:`num_cameras`, when the sidecar records it). Rows are
        L2-normalised when the model's facts say so (``normalize`` overrides, per call).
        No images: ``[0, D]``.
        """
        color = self._check_color(color)
        items = self._as_list(images)
        cams = self._check_cameras(cameras, len(items))
        raw = self._embed_raw(items, cams, color)
        return l2_rows(raw) if self._norm(normalize) else raw

    def embed_tracklets(
        self,
        tracklets: Sequence[Sequence[ImageLike]],
        pool: str = "mean",
        cameras: Sequence[int] | np.ndarray | None = None,
        *,
        color: str = "bgr",
        normalize: bool | None = None,
    ) -> np.ndarray:
        """One feature per tracklet (a list of crops of one person): float32 ``[T, D]``.

        As video ReID pools a tracklet: the raw (not normalised) frame features are averaged
        (``pool="mean"``) or maximised per dimension (``"max"``), then the pooled row is
        L2-normalised when the facts say so (``normalize`` overrides). ``cameras``: one
        camera index per tracklet (camera-aware models). An empty tracklet is an error.
        """
        if pool not in POOLS:
            raise InputError(f"unknown pool {pool!r}; valid: {', '.join(POOLS)}")
        color = self._check_color(color)
        tracks = [self._as_list(t, f"tracklets[{i}]") for i, t in enumerate(tracklets)]
        for i, t in enumerate(tracks):
            if not t:
                raise InputError(f"tracklets[{i}] is empty; every tracklet needs a crop")
        cams = self._check_cameras(cameras, len(tracks), "tracklet")
        flat = [crop for t in tracks for crop in t]
        flat_cams = None if cams is None else np.repeat(cams, [len(t) for t in tracks])
        raw = self._embed_raw(flat, flat_cams, color)
        out = np.empty((len(tracks), self.dim), np.float32)
        start = 0
        for i, t in enumerate(tracks):
            rows = raw[start : start + len(t)]
            out[i] = rows.mean(axis=0) if pool == "mean" else rows.max(axis=0)
            start += len(t)
        return l2_rows(out) if self._norm(normalize) else out

    # ---------------------------------------------------------------- internals
    def _norm(self, normalize: bool | None) -> bool:
        return self.normalize if normalize is None else bool(normalize)

    @staticmethod
    def _check_color(color: str) -> str:
        if color not in COLORS:
            raise InputError(f"unknown colour order {color!r}; valid: {', '.join(COLORS)}")
        return color

    @staticmethod
    def _as_list(images: Any, what: str = "images") -> list[ImageLike]:
        if isinstance(images, np.ndarray):
            if images.ndim == 4:
                return list(images)
            raise ShapeMismatchError(
                f"{what} is an array of shape {list(images.shape)}; give a list of images or "
                "one [N, H, W, 3] uint8 array"
            )
        if isinstance(images, (str, os.PathLike, bytes)) or _is_pil(images):
            raise InputError(f"{what} must be a list of images (wrap a single one: [image])")
        return list(images)

    def _check_cameras(self, cameras: Any, n: int, per: str = "image") -> np.ndarray | None:
        if self._camera is None:
            if cameras is not None:
                raise InputError(
                    f"{self.model_file} takes no {CAMERA_INPUT!r} input; drop cameras="
                )
            return None
        if cameras is None:
            raise InputError(
                f"{self.model_file} is camera-aware (input {CAMERA_INPUT!r}); pass cameras=, "
                f"one 0-based camera index per {per}"
            )
        arr = np.asarray(cameras)
        if arr.shape != (n,) or (n and not np.issubdtype(arr.dtype, np.integer)):
            raise ShapeMismatchError(
                f"cameras must be {n} integers (one per {per}), got shape {list(arr.shape)} "
                f"{arr.dtype}"
            )
        arr = arr.astype(np.int64)
        CameraRule(0, self.num_cameras).check(arr, [f"cameras[{i}]" for i in range(n)])
        return arr

    def _run(
        self, batch: np.ndarray, cams: np.ndarray | None, out: np.ndarray | None = None
    ) -> np.ndarray:
        """The feature rows of ``batch`` as float32 ``[rows, D]``: written into ``out`` when
        given, else a new array of this Embedder's own (a runner may hand back a view of a
        buffer it reuses)."""
        return self._features(self._runner.infer_rows(self._feeds(batch, cams)), len(batch), out)

    def _feeds(self, batch: np.ndarray, cams: np.ndarray | None) -> dict[str, np.ndarray]:
        feeds = {self._image.name: batch}
        if self._camera is not None:
            feeds[self._camera.name] = cams if cams is not None else np.zeros(len(batch), np.int64)
        return feeds

    def _features(
        self, res: dict[str, np.ndarray], rows: int, out: np.ndarray | None
    ) -> np.ndarray:
        """The feature output of one call's results ``res`` (see :meth:`_run`)."""
        feat = res.get(self.feature)
        if feat is None:
            raise FormatError(
                f"{self.model_file} has no output {self.feature!r} (outputs: {sorted(res)}); "
                "the facts do not match the model"
            )
        feat = feat.reshape(rows, -1)
        if out is None:
            return np.array(feat, np.float32)
        if feat.shape != out.shape:
            raise self._dim_error(feat.shape[1])
        out[...] = feat
        return out

    def _dim_error(self, got: int) -> ShapeMismatchError:
        return ShapeMismatchError(
            f"{self.model_file} output {self.feature!r} has {got} values per row, the facts "
            f"say {self.dim}"
        )

    def _input_buffer(self, rows: int) -> np.ndarray:
        """A ``[rows, 3, H, W]`` input buffer, reused across calls (about 40 us a call at
        batch 1); one per thread, so threads may share an Embedder."""
        buf = getattr(self._buffers, "buf", None)
        if buf is None or len(buf) < rows:
            shape = (rows, *self.settings.shape)
            buf = self._buffers.buf = np.empty(shape, self.settings.np_dtype)
        return buf[:rows]

    def _embed_raw(self, items: list[ImageLike], cams: np.ndarray | None, color: str) -> np.ndarray:
        n, bs = len(items), self.batch_size
        if n == 0:
            return np.empty((0, self.dim), np.float32)
        buf = self._input_buffer(min(bs, n))
        transform = self._transform
        if n <= bs:  # one call: the runner's rows are the result, without a second copy
            for j, item in enumerate(items):
                transform(to_bgr(item, j, color), buf[j])
            feat = self._run(buf, cams)
            if feat.shape[1] != self.dim:
                raise self._dim_error(feat.shape[1])
            return feat
        from reidctl.runners.infer import run_calls

        def calls() -> Iterator[tuple[int, dict[str, np.ndarray]]]:
            for start in range(0, n, bs):
                chunk = items[start : start + bs]
                for j, item in enumerate(chunk):
                    transform(to_bgr(item, start + j, color), buf[j])
                sub = None if cams is None else cams[start : start + len(chunk)]
                yield start, self._feeds(buf[: len(chunk)], sub)

        # one buffer refilled per batch: a runner taking several calls at once gets copies
        out = np.empty((n, self.dim), np.float32)
        for start, res in run_calls(self._runner, calls()):
            rows = min(bs, n - start)
            self._features(res, rows, out[start : start + rows])
        return out
