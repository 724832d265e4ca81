"""ONNX -> INT8 ONNX with ONNX Runtime static quantisation, and its accuracy guard
(``reidctl convert int8``).

The steps:

1. ``onnxruntime.quantization.shape_inference.quant_pre_process`` (symbolic shape inference
   and graph optimisation: the pre-processing ONNX Runtime recommends before quantising);
2. ``quantize_static`` in QDQ format: activations uint8 (asymmetric), weights int8 (per output
   channel by default), the U8S8 pair that x86 VNNI kernels run fastest; ranges calibrated
   on tensors of a preprocessed set (:class:`PrepCalibrationReader`) with MinMax, Entropy or
   Percentile;
3. optionally, the accuracy guard (:func:`accuracy_guard`): FP32 and INT8 run over a
   labelled preprocessed set, both are evaluated, and the differences in rank-1 and mAP (in
   points, 1 point = 0.01) and the mean cosine between FP32 and INT8 features are reported;
   a drop beyond ``max_map_drop`` raises :class:`AccuracyGuardError` and writes nothing;
4. ``model.int8.onnx`` (the source's model facts in its ONNX metadata too) and its
   sidecar, which carries the source's facts forward and adds
   ``source``, ``conversion`` and the guard's figures (``conversion.accuracy_guard``).

Layers that lose accuracy or speed when quantised stay in float with ``exclude``: node names,
op types (``Gemm``), or ``depthwise`` (every depthwise convolution: on CPUs their INT8
kernels often cost more in quantise/dequantise than they save).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from reidctl.artifacts import (
    ModelSidecar,
    PrepSet,
    ResultDir,
    check_prep_fits_model,
    read_prep_meta,
    read_sidecar,
    sidecar_path,
)
from reidctl.errors import AccuracyGuardError, FormatError, InputError
from reidctl.io import refuse_existing, sha256_file
from reidctl.platform import u8s8_saturates
from reidctl.runners.cameras import CAMERA_INPUT, CameraRule, camera_rule
from reidctl.runners.facts import sidecar_or_none, write_onnx_facts
from reidctl.runners.infer import batch_inputs, check_input_matches
from reidctl.specs import TensorSpec

METHODS = ("minmax", "entropy", "percentile")
DEPTHWISE = "depthwise"
DEFAULT_SAMPLES = 128
DEFAULT_CALIB_BATCH = 8


class _DropAxisNotes(logging.Filter):
    """onnxruntime logs a root-logger warning for every 1-D weight (e.g. a BatchNorm scale)
    it cannot quantise per channel; it then quantises it per tensor, which is what we want."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "is out-of-range for weight" not in record.getMessage()


class SameSetWarning(UserWarning):
    """Calibration and evaluation share images: the guard's figures flatter the INT8 model."""


# --------------------------------------------------------------------------- calibration


def spread_indices(n: int, samples: int | None) -> list[int]:
    """``samples`` indices spread evenly over ``range(n)`` (all of them when ``samples`` is
    ``None`` or >= ``n``), so that calibration sees every identity and split of a sorted set
    rather than its first few."""
    if samples is None or samples >= n:
        return list(range(n))
    if samples <= 0:
        raise InputError(f"--samples must be positive, got {samples}")
    return sorted({round(float(v)) for v in np.linspace(0, n - 1, samples)})


class PrepCalibrationReader:
    """An ONNX Runtime ``CalibrationDataReader`` over the tensors of a preprocessed set.

    Yields ``{input_name: array [b, C, H, W]}`` batches of ``batch_size`` rows (the last
    may be smaller; with a static-batch model pass that batch and the last partial batch
    is dropped) drawn from ``samples`` tensors spread over the manifest. Tensors are read as
    ``meta.json`` says (dtype, shape; docs/formats.md section 2). With ``camera`` (a
    camera-aware model's :class:`~reidctl.runners.cameras.CameraRule`) each batch also
    holds ``camera``: the entries' camids through the rule, as ``reidctl infer`` feeds them
    (every selected entry is checked up front).
    """

    def __init__(
        self,
        prep_dir: str | os.PathLike[str],
        input_name: str,
        *,
        samples: int | None = DEFAULT_SAMPLES,
        batch_size: int = DEFAULT_CALIB_BATCH,
        static_batch: bool = False,
        progress: bool = False,
        camera: CameraRule | None = None,
    ) -> None:
        self.prep_dir = Path(prep_dir)
        self.prep = PrepSet.open(self.prep_dir)
        if not self.prep.entries:
            raise FormatError(f"{self.prep_dir} holds no tensors to calibrate with")
        self.dtype, self.shape = self.prep.dtype, self.prep.shape
        if batch_size <= 0:
            raise InputError(f"calibration batch size must be positive, got {batch_size}")
        self.input_name = input_name
        self.files = spread_indices(len(self.prep.entries), samples)  # manifest rows
        self.batch_size = batch_size
        self.static_batch = static_batch
        if static_batch and len(self.files) < batch_size:
            raise InputError(
                f"the model has a static batch of {batch_size} but only {len(self.files)} "
                f"calibration tensors were selected from {self.prep_dir}; use more --samples"
            )
        self.camera = camera
        if camera is not None:
            camera.indices([self.prep.entries[i] for i in self.files], self.prep.root)
        self.progress = progress
        self._bar: Any = None
        self._pos = 0

    def __len__(self) -> int:
        full, rest = divmod(len(self.files), self.batch_size)
        return full + (1 if rest and not self.static_batch else 0)

    def get_next(self) -> dict[str, np.ndarray] | None:
        chunk = self.files[self._pos : self._pos + self.batch_size]
        if not chunk or (self.static_batch and len(chunk) < self.batch_size):
            if self._bar is not None:
                self._bar.close()
                self._bar = None
            return None
        if self._bar is None and self.progress:
            from tqdm import tqdm

            self._bar = tqdm(
                total=len(self), desc="calibrating", unit="batch", leave=False, disable=None
            )
        self._pos += len(chunk)
        if self._bar is not None:
            self._bar.update(1)
        entries = [self.prep.entries[i] for i in chunk]
        batch = self.prep.read_batch(chunk)
        return batch_inputs(self.input_name, entries, batch, self.camera, self.prep.root)

    def rewind(self) -> None:
        self._pos = 0

    # onnxruntime iterates readers with ``iter``/``next`` in some calibrators
    def __iter__(self) -> PrepCalibrationReader:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        item = self.get_next()
        if item is None:
            raise StopIteration
        return item


class _OneBatch:
    """A reader that yields one feed dictionary, then ``None``."""

    def __init__(self, feeds: dict[str, np.ndarray]) -> None:
        self._feeds: dict[str, np.ndarray] | None = feeds

    def get_next(self) -> dict[str, np.ndarray] | None:
        feeds, self._feeds = self._feeds, None
        return feeds


def _histogram_range(arr: np.ndarray, absolute: bool) -> tuple[Any, Any]:
    """``(low, high)`` of one batch of an activation: of ``|x|`` when ``absolute``."""
    flat = np.abs(arr.ravel()) if absolute else arr.ravel()
    if flat.size == 0:
        zero = np.array(0, dtype=arr.dtype)
        return zero, zero
    return np.nanmin(flat), np.nanmax(flat)


def calibrate_ranges(
    model_file: str | os.PathLike[str],
    reader: PrepCalibrationReader,
    method: str,
    work_dir: str | os.PathLike[str],
) -> Any:
    """Activation ranges of ``model_file`` over every batch of ``reader``, one batch of
    intermediate outputs in memory at a time. Returns ONNX Runtime's ``TensorsData``.

    * ``minmax``: ONNX Runtime's MinMax calibrator is fed one batch per call and merges the
      batch's per-tensor minimum and maximum into its running range, so the result is the
      minimum and maximum over all selected tensors, whatever their order or number.
    * ``entropy``/``percentile``: two passes over the set. The first finds each activation's
      global range (of ``|x|`` for the symmetric percentile method); the second adds each
      batch to a histogram with those fixed edges (``np.histogram`` counts are additive over
      batches with fixed edges). The thresholds are then ONNX Runtime's own computation on
      the histograms, equal to a calibration holding every output at once (which ONNX
      Runtime's calibrator does, growing with the set), and independent of the order.
    """
    from onnxruntime.quantization.calibrate import (
        CalibrationMethod,
        HistogramCollector,
        create_calibrator,
    )

    methods = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }
    calibrator = create_calibrator(
        Path(model_file),
        None,
        augmented_model_path=str(Path(work_dir) / "augmented.onnx"),
        calibrate_method=methods[method],
    )
    reader.rewind()
    if method == "minmax":
        for feeds in reader:
            calibrator.collect_data(_OneBatch(feeds))  # computes and merges, then clears
        return calibrator.compute_data()

    session = calibrator.infer_session
    names = [o.name for o in session.get_outputs()]
    wanted = set(calibrator.tensors_to_calibrate)
    absolute = calibrator.method == "percentile" and calibrator.symmetric
    lows: dict[str, Any] = {}
    highs: dict[str, Any] = {}
    signed: dict[str, tuple[Any, Any]] = {}
    for feeds in reader:  # pass 1: global ranges
        for name, arr in zip(names, session.run(None, feeds), strict=True):
            if name not in wanted:
                continue
            lo, hi = _histogram_range(arr, absolute)
            lows[name] = lo if name not in lows else min(lows[name], lo)
            highs[name] = hi if name not in highs else max(highs[name], hi)
            if absolute:
                s_lo, s_hi = _histogram_range(arr, False)
                old = signed.get(name, (s_lo, s_hi))
                signed[name] = (min(old[0], s_lo), max(old[1], s_hi))
    bins = calibrator.num_bins
    edges: dict[str, tuple[Any, Any]] = {}
    for name in lows:
        if absolute:
            edges[name] = (lows[name], highs[name])
        else:
            t = np.array(max(abs(lows[name]), abs(highs[name])), dtype=np.asarray(lows[name]).dtype)
            edges[name] = (-t, t)
    counts: dict[str, np.ndarray] = {}
    bin_edges: dict[str, np.ndarray] = {}
    reader.rewind()
    for feeds in reader:  # pass 2: histograms on fixed edges
        for name, arr in zip(names, session.run(None, feeds), strict=True):
            if name not in wanted:
                continue
            flat = np.abs(arr.ravel()) if absolute else arr.ravel()
            hist, e = np.histogram(flat, bins, range=edges[name])
            counts[name] = hist if name not in counts else counts[name] + hist
            bin_edges[name] = e
    collector = HistogramCollector(
        method=calibrator.method,
        symmetric=calibrator.symmetric,
        num_bins=bins,
        num_quantized_bins=calibrator.num_quantized_bins,
        percentile=calibrator.percentile,
        scenario=calibrator.scenario,
    )
    for name, hist in counts.items():
        if absolute:
            e = bin_edges[name].astype(np.asarray(lows[name]).dtype)
            collector.histogram_dict[name] = (hist, e, *signed[name])
        else:
            collector.histogram_dict[name] = (
                hist,
                bin_edges[name],
                lows[name],
                highs[name],
                edges[name][1],
            )
    calibrator.collector = collector
    return calibrator.compute_data()


def overlapping_images(prep_a: str | os.PathLike[str], prep_b: str | os.PathLike[str]) -> int:
    """How many images two preprocessed sets share (same dataset root and source path);
    the whole set when they are the same directory."""
    a, b = Path(prep_a).resolve(), Path(prep_b).resolve()
    pa, pb = PrepSet.open(a), PrepSet.open(b)
    if a == b:
        return len(pa.entries)
    ra = str(pa.meta.get("root", a))
    rb = str(pb.meta.get("root", b))
    sa = {(ra, e.source) for e in pa.entries}
    return sum((rb, e.source) in sa for e in pb.entries)


# --------------------------------------------------------------------------- exclusions


def _initializer_shapes(model: Any) -> dict[str, tuple[int, ...]]:
    return {t.name: tuple(t.dims) for t in model.graph.initializer}


def depthwise_conv_nodes(model: Any) -> list[str]:
    """Names of Conv nodes with one input channel per group (depthwise), group > 1."""
    shapes = _initializer_shapes(model)
    out = []
    for node in model.graph.node:
        if node.op_type != "Conv":
            continue
        group = next((a.i for a in node.attribute if a.name == "group"), 1)
        w = shapes.get(node.input[1]) if len(node.input) > 1 else None
        if group > 1 and w is not None and len(w) >= 2 and w[1] == 1:
            out.append(node.name)
    return out


def resolve_exclusions(model: Any, exclude: Sequence[str]) -> list[str]:
    """Turn ``exclude`` items (node names, op types, or ``depthwise``) into node names of
    ``model`` (an ``onnx.ModelProto``), in graph order. Unknown items raise
    :class:`InputError` listing the model's op types."""
    names = [n.name for n in model.graph.node]
    by_type: dict[str, list[str]] = {}
    for n in model.graph.node:
        by_type.setdefault(n.op_type, []).append(n.name)
    chosen: set[str] = set()
    for item in exclude:
        item = item.strip()
        if not item:
            continue
        if item.lower() == DEPTHWISE:
            chosen.update(depthwise_conv_nodes(model))
        elif item in by_type:
            chosen.update(by_type[item])
        elif item in set(names):
            chosen.add(item)
        else:
            raise InputError(
                f"--exclude {item!r} is neither a node name nor an op type of the model; op "
                f"types: {', '.join(sorted(by_type))}; or {DEPTHWISE!r} for depthwise "
                "convolutions (node names as shown by Netron or onnx.load(...).graph.node)"
            )
    return [n for n in names if n in chosen]


# --------------------------------------------------------------------------- guard


@dataclass(frozen=True)
class GuardResult:
    """FP32 vs INT8 on a labelled set. ``delta_*_points`` are INT8 minus FP32 in points
    (1 point = 0.01, so -0.5 means half a point lost); cosines compare the L2-normalised
    feature rows of the same image."""

    fp32: dict[str, Any]
    int8: dict[str, Any]
    delta_rank1_points: float
    delta_map_points: float
    mean_cosine: float
    min_cosine: float
    num_images: int
    max_map_drop: float | None
    passed: bool
    eval_dir: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        return (
            f"rank-1 {self.fp32['rank1']:.4f} -> {self.int8['rank1']:.4f} "
            f"({self.delta_rank1_points:+.2f} points), mAP {self.fp32['mAP']:.4f} -> "
            f"{self.int8['mAP']:.4f} ({self.delta_map_points:+.2f} points), mean cosine "
            f"FP32 vs INT8 {self.mean_cosine:.4f} (min {self.min_cosine:.4f}) over "
            f"{self.num_images} images"
        )


def feature_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two ``[N, D]`` feature arrays
    (:func:`reidctl.runners.comparator.row_cosine`); :class:`FormatError` if shapes differ."""
    from reidctl.runners.comparator import row_cosine

    if np.shape(a) != np.shape(b):
        raise FormatError(f"feature shapes differ: {np.shape(a)} vs {np.shape(b)}")
    return row_cosine(a, b)


def _summary_metrics(metrics: Any) -> dict[str, Any]:
    d = metrics.to_dict() if hasattr(metrics, "to_dict") else dict(metrics)
    keep = ("rank1", "rank5", "rank10", "mAP", "mINP", "num_query", "num_valid_query")
    return {k: d[k] for k in keep if k in d}


def _features(results_dir: Path) -> np.ndarray:
    return np.asarray(ResultDir.open(results_dir).features())


def accuracy_guard(
    fp32_model: str | os.PathLike[str],
    int8_model: str | os.PathLike[str],
    eval_dir: str | os.PathLike[str],
    work_dir: str | os.PathLike[str],
    *,
    max_map_drop: float | None = None,
    backend: str = "ort",
    batch_size: int = 32,
    threads: int | None = None,
    progress: bool = False,
    allow_preprocess_mismatch: bool = False,
    camera_offset: int | None = None,
) -> GuardResult:
    """Run both models over ``eval_dir`` (a labelled preprocessed set), evaluate both with
    the default settings of :func:`reidctl.evaluate.evaluate_results`, compare features.

    ``max_map_drop`` is in points (1 point = 0.01 mAP); the returned result has ``passed``
    False when the INT8 mAP is lower than FP32's by more than that (raising is left to the
    caller, which decides whether to keep the model). Result directories go to ``work_dir``.
    ``progress`` shows a progress bar (stderr) while each model runs over the set.
    """
    from reidctl.evaluate.results import evaluate_results
    from reidctl.runners.comparator import compare
    from reidctl.runners.infer import run_inference

    work = Path(work_dir)
    metrics = {}
    feats = {}
    options = {} if threads is None else {"threads": threads}
    for tag, model in (("fp32", fp32_model), ("int8", int8_model)):
        out = work / f"results-{tag}"
        if out.exists():
            shutil.rmtree(out)
        run_inference(
            model,
            eval_dir,
            out,
            backend=backend,
            batch_size=batch_size,
            progress=progress,
            allow_preprocess_mismatch=allow_preprocess_mismatch,
            camera_offset=camera_offset,
            **options,
        )
        metrics[tag] = _summary_metrics(evaluate_results(out))
        feats[tag] = _features(out)
    diff = compare({"fp32": {"feature": feats["fp32"]}, "int8": {"feature": feats["int8"]}})
    cos = diff.outputs["feature"]
    d_map = (metrics["int8"]["mAP"] - metrics["fp32"]["mAP"]) * 100.0
    d_r1 = (metrics["int8"]["rank1"] - metrics["fp32"]["rank1"]) * 100.0
    passed = max_map_drop is None or -d_map <= max_map_drop + 1e-9
    return GuardResult(
        fp32=metrics["fp32"],
        int8=metrics["int8"],
        delta_rank1_points=round(d_r1, 6),
        delta_map_points=round(d_map, 6),
        mean_cosine=cos.mean_cosine,
        min_cosine=cos.min_cosine,
        num_images=cos.rows,
        max_map_drop=max_map_drop,
        passed=passed,
        eval_dir=str(Path(eval_dir).resolve()),
    )


# --------------------------------------------------------------------------- conversion


def _check_output(output: Path, force: bool) -> None:
    if output.suffix != ".onnx":
        raise InputError(f"output {output} should end in .onnx (e.g. model.int8.onnx)")
    refuse_existing(output, sidecar_path(output), force=force)
    output.parent.mkdir(parents=True, exist_ok=True)


def _input_of(model: Any) -> tuple[TensorSpec, int | None, bool]:
    """The model's image input as a :class:`TensorSpec`, its static batch (or None) and
    whether the model also takes a ``camera`` input."""
    from onnx import helper

    init = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in init]
    images = [i for i in inputs if i.name != CAMERA_INPUT]
    if len(images) != 1:
        raise InputError(
            f"INT8 calibration feeds one image input (and optionally {CAMERA_INPUT!r}); the "
            f"model has {len(inputs)}: {[i.name for i in inputs]}"
        )
    ttype = images[0].type.tensor_type
    dims: list[int | str] = [
        d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in ttype.shape.dim
    ]
    dtype = str(np.dtype(helper.tensor_dtype_to_np_dtype(ttype.elem_type)))
    spec = TensorSpec(images[0].name, tuple(dims), dtype)
    dim0 = dims[0] if dims else None
    return spec, (dim0 if isinstance(dim0, int) and dim0 > 0 else None), len(inputs) == 2


class _PrecomputedCalibrator:
    """Stands in for ONNX Runtime's calibrator where ``quantize_static`` has no range cache:
    it hands back ranges computed beforehand (:func:`calibrate_ranges`)."""

    def __init__(self, ranges: Any) -> None:
        self.ranges = ranges

    def collect_data(self, _reader: Any) -> None:
        return None

    def compute_data(self) -> Any:
        return self.ranges


class _NoData:
    def get_next(self) -> None:
        return None

    def __len__(self) -> int:
        return 0


def _quantize_with_ranges(
    model: Path, output: Path, ranges: Any, cache: Path, **kwargs: Any
) -> None:
    """``quantize_static`` with activation ranges computed beforehand (no calibration run
    inside it): through its calibration cache where this onnxruntime has one, else by
    handing it a calibrator that returns ``ranges``."""
    import importlib
    import inspect

    # the package re-exports a function named ``quantize``: import the module by path
    ort_quantize = importlib.import_module("onnxruntime.quantization.quantize")

    if "calibration_cache_path" in inspect.signature(ort_quantize.quantize_static).parameters:
        from onnxruntime.quantization.calibrate import save_tensors_data

        save_tensors_data(ranges, cache)
        ort_quantize.quantize_static(
            str(model), str(output), None, calibration_cache_path=str(cache), **kwargs
        )
        return
    original = ort_quantize.create_calibrator
    ort_quantize.create_calibrator = lambda *_a, **_k: _PrecomputedCalibrator(ranges)
    try:
        ort_quantize.quantize_static(str(model), str(output), _NoData(), **kwargs)
    finally:
        ort_quantize.create_calibrator = original


def quantize_onnx(
    model_file: str | os.PathLike[str],
    calib_dir: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    method: str = "minmax",
    samples: int | None = DEFAULT_SAMPLES,
    exclude: Sequence[str] = (),
    per_channel: bool = True,
    reduce_range: bool | None = None,
    calib_batch: int = DEFAULT_CALIB_BATCH,
    progress: bool = False,
    camera_offset: int | None = None,
) -> dict[str, Any]:
    """Pre-process and statically quantise ``model_file`` into ``output`` (QDQ, U8S8).

    A camera-aware model is calibrated with the manifest's cameras (``camid - offset``,
    :func:`reidctl.runners.cameras.camera_rule` of its sidecar, the calibration set and
    ``camera_offset``).

    ``reduce_range=None`` (the default) quantises weights to 7 bits exactly where this CPU's
    uint8 x int8 kernels can saturate (x86 without VNNI, see
    :func:`reidctl.platform.u8s8_saturates`) and to 8 bits elsewhere. Writes only ``output``
    (no sidecar; see :func:`int8_from_onnx`). Returns the ``conversion`` facts: method,
    samples used, per-channel, excluded and quantised nodes.
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if method not in METHODS:
        raise InputError(f"unknown calibration method {method!r}; valid: {', '.join(METHODS)}")
    calib_methods = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }
    output = Path(output)
    if reduce_range is None:
        reduce_range = u8s8_saturates()
    with tempfile.TemporaryDirectory(prefix=".int8-", dir=output.parent) as tmp:
        pre = Path(tmp) / "preprocessed.onnx"
        try:
            quant_pre_process(str(model_file), str(pre), skip_symbolic_shape=False)
        except Exception as e:  # onnxruntime's tools raise assorted types for a bad graph
            raise FormatError(
                f"ONNX Runtime's quantisation pre-processing failed on {model_file}: "
                f"{str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}"
            ) from e
        model = onnx.load(str(pre))
        spec, static, takes_camera = _input_of(model)
        check_input_matches(spec, PrepSet.open(calib_dir).meta, str(model_file))
        excluded = resolve_exclusions(model, exclude)
        camera = None
        if takes_camera:
            camera = camera_rule(
                sidecar_or_none(Path(model_file)), read_prep_meta(calib_dir), camera_offset
            )
        reader = PrepCalibrationReader(
            calib_dir,
            spec.name,
            samples=samples,
            batch_size=static or calib_batch,
            static_batch=static is not None,
            progress=progress,
            camera=camera,
        )
        root_logger, drop = logging.getLogger(), _DropAxisNotes()
        root_logger.addFilter(drop)
        try:
            # onnxruntime warns about its own recommended settings and prints histogram
            # statistics to stdout; neither is for the user, and stdout is the CLI's
            with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
                warnings.simplefilter("ignore")
                ranges = calibrate_ranges(pre, reader, method, tmp)
                _quantize_with_ranges(
                    pre,
                    output,
                    ranges,
                    Path(tmp) / "ranges.json",
                    quant_format=QuantFormat.QDQ,
                    per_channel=per_channel,
                    reduce_range=reduce_range,
                    activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8,
                    nodes_to_exclude=excluded or None,
                    calibrate_method=calib_methods[method],
                )
        except ValueError as e:
            if "bins" not in str(e) and "range" not in str(e):
                raise
            # numpy cannot histogram a tensor whose values (nearly) never change, which
            # only the histogram-based calibrators need
            raise InputError(
                f"{method} calibration of {model_file} failed: an activation is (nearly) "
                f"constant over the calibration set ({e}); use --method minmax, or calibrate "
                "on more varied data"
            ) from e
        finally:
            root_logger.removeFilter(drop)
    qmodel = onnx.load(str(output), load_external_data=False)
    n_q = sum(n.op_type == "QuantizeLinear" for n in qmodel.graph.node)
    n_dq = sum(n.op_type == "DequantizeLinear" for n in qmodel.graph.node)
    return {
        "kind": "int8",
        "tool": "onnxruntime.quantization.quantize_static",
        "format": "QDQ",
        "precision": "int8",
        "activation_type": "uint8",
        "weight_type": "int8",
        "per_channel": per_channel,
        "reduce_range": reduce_range,
        "method": method,
        "calibration": {
            "dir": str(Path(calib_dir).resolve()),
            "samples": len(reader.files),
            "batch_size": reader.batch_size,
            **({"camera": camera.to_dict()} if camera is not None else {}),
        },
        "exclude": [e for e in exclude if e.strip()],
        "excluded_nodes": excluded,
        "quantize_linear_nodes": n_q,
        "dequantize_linear_nodes": n_dq,
    }


def int8_from_onnx(
    model_file: str | os.PathLike[str],
    calib_dir: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    method: str = "minmax",
    samples: int | None = DEFAULT_SAMPLES,
    exclude: Sequence[str] = (),
    per_channel: bool = True,
    reduce_range: bool | None = None,
    eval_dir: str | os.PathLike[str] | None = None,
    max_map_drop: float | None = None,
    threads: int | None = None,
    force: bool = False,
    progress: bool = False,
    on_stage: Callable[[str], None] | None = None,
    allow_preprocess_mismatch: bool = False,
    camera_offset: int | None = None,
) -> dict[str, Any]:
    """Quantise ``model_file`` (an ONNX with its sidecar) to ``output`` and write its sidecar.

    With ``eval_dir`` the accuracy guard runs before anything is written; with
    ``max_map_drop`` (points) a larger mAP drop raises :class:`AccuracyGuardError` and
    leaves ``output`` untouched. A :class:`SameSetWarning` is issued when the calibration
    and evaluation sets share images. ``on_stage`` receives a line as each stage starts.
    The preprocessing of ``calib_dir`` and ``eval_dir`` must match the source sidecar's
    (:func:`reidctl.artifacts.check_prep_fits_model`) unless ``allow_preprocess_mismatch``;
    the checks go to ``conversion.preprocess_check``.
    Returns the new sidecar (``conversion.accuracy_guard`` holds the guard's figures).
    A camera-aware model is calibrated and guarded with the manifests' cameras
    (``camid - offset``; ``camera_offset`` overrides the sets' first camera number).
    """
    model_file, output, calib_dir = Path(model_file), Path(output), Path(calib_dir)
    if not model_file.is_file():
        raise InputError(f"model file not found: {model_file}")
    # the sidecar, else the facts stored in the ONNX; neither: load's error names the fix
    source_sidecar = sidecar_or_none(model_file) or ModelSidecar.load(model_file)
    if max_map_drop is not None and eval_dir is None:
        raise InputError("--max-map-drop needs --eval PREP_DIR (a labelled preprocessed set)")
    if max_map_drop is not None and max_map_drop < 0:
        raise InputError(f"--max-map-drop is a drop in points (>= 0), got {max_map_drop}")
    _check_output(output, force)
    checks = {}
    for role, prep_dir in (("calib", calib_dir), ("eval", eval_dir)):
        if prep_dir is None:
            continue
        checks[role] = check_prep_fits_model(
            PrepSet.open(prep_dir),
            model_file,
            source_sidecar.preprocess,
            allow_mismatch=allow_preprocess_mismatch,
        )
        if "note" in checks[role]:
            warnings.warn(checks[role]["note"], stacklevel=2)
    if eval_dir is not None:
        shared = overlapping_images(calib_dir, eval_dir)
        if shared:
            warnings.warn(
                f"--calib {calib_dir} and --eval {eval_dir} share {shared} images: the guard "
                "then measures on calibration data and flatters INT8; calibrate on another "
                "split (e.g. the train split)",
                SameSetWarning,
                stacklevel=2,
            )
    stage = on_stage or (lambda _line: None)
    with tempfile.TemporaryDirectory(prefix=".int8-", dir=output.parent) as tmp:
        staged = Path(tmp) / output.name
        stage(f"calibrating ({method}, {samples or 'all'} samples) and quantising")
        conversion = quantize_onnx(
            model_file,
            calib_dir,
            staged,
            method=method,
            samples=samples,
            exclude=exclude,
            per_channel=per_channel,
            reduce_range=reduce_range,
            progress=progress,
            camera_offset=camera_offset,
        )
        write_onnx_facts(staged, source_sidecar.facts)
        conversion["preprocess_check"] = checks
        sidecar = source_sidecar.with_fields(
            drop=("validation",),
            source={"file": model_file.name, "sha256": sha256_file(model_file)},
            conversion=conversion,
            model_file=output.name,
            model_sha256=sha256_file(staged),
        )
        sidecar.save(staged)
        if eval_dir is not None:
            stage(f"accuracy guard: FP32 and INT8 over {eval_dir}")
            guard = accuracy_guard(
                model_file,
                staged,
                eval_dir,
                Path(tmp) / "guard",
                max_map_drop=max_map_drop,
                threads=threads,
                progress=progress,
                allow_preprocess_mismatch=allow_preprocess_mismatch,
                camera_offset=camera_offset,
            )
            conversion["accuracy_guard"] = guard.to_dict()
            if not guard.passed:
                raise AccuracyGuardError(
                    f"INT8 mAP dropped {-guard.delta_map_points:.2f} points, more than "
                    f"--max-map-drop {max_map_drop} ({guard.summary()}); nothing written. "
                    "Try --exclude (e.g. depthwise, Gemm), --method entropy or percentile, "
                    "or more --samples"
                )
        os.replace(staged, output)
        sidecar.with_fields(conversion=conversion).save(output)
    return read_sidecar(output)
