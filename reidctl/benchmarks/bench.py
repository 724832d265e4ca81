"""The engine behind ``reidctl bench``: throughput and latency by back end and batch size.

Everything here is a plain function a notebook can call::

    from reidctl.benchmarks.bench import BenchSettings, run_bench, format_table
    result = run_bench(["model.onnx"], ["ort", "openvino"], BenchSettings(batch_sizes=(1, 8)))
    print(format_table(result))

Each measurement feeds one batch (synthetic, seeded, of the model's input shape; or real
tensors from a preprocessed set) to a runner again and again, after a warm-up, and keeps the
wall time of every call (``Runner.last_latency_s``). Throughput is ``batch * calls / sum of
call times`` in images per second; latencies are per call (per batch), in milliseconds.

When several models are measured (``--vs``), they run in alternating rounds (A B B A A B ...)
inside the same loop, so drift in the machine's load or clock hits both alike and the ratio
per batch size is fair.
"""

from __future__ import annotations

import csv
import io
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from reidctl.artifacts import read_json, read_manifest, read_prep_meta, tool_info
from reidctl.errors import FormatError, InputError, ShapeMismatchError
from reidctl.io import atomic_path, sha256_file, write_json_atomic, write_text_atomic
from reidctl.specs import TensorSpec

BENCH_FORMAT = "reidctl.bench/1"
DEFAULT_BATCH_SIZES: tuple[int, ...] = (1, 4, 8, 16, 32)
DEFAULT_MODEL = "aligned_reid"
#: packages whose versions go into bench.json (absent ones are left out)
VERSION_PACKAGES = ("reidctl", "numpy", "onnx", "onnxruntime", "openvino", "torch", "tensorrt")


# --------------------------------------------------------------------------- settings


def parse_int_list(text: str, what: str = "batch sizes") -> tuple[int, ...]:
    """``"1,4,8"`` -> ``(1, 4, 8)``; raises :class:`InputError` on anything but positive ints."""
    try:
        values = tuple(int(v) for v in str(text).split(",") if v.strip())
    except ValueError:
        raise InputError(
            f"{what} must be comma-separated positive integers, got {text!r}"
        ) from None
    if not values or any(v <= 0 for v in values):
        raise InputError(f"{what} must be comma-separated positive integers, got {text!r}")
    return tuple(dict.fromkeys(values))


def parse_name_list(text: str) -> tuple[str, ...]:
    """``"ort, openvino"`` -> ``("ort", "openvino")`` (order kept, duplicates dropped)."""
    names = tuple(dict.fromkeys(n.strip() for n in str(text).split(",") if n.strip()))
    if not names:
        raise InputError(f"expected a comma-separated list of names, got {text!r}")
    return names


@dataclass(frozen=True)
class BenchSettings:
    """How long and how to measure.

    ``seconds`` bounds the timed calls per (model, back end, batch size) in seconds of
    inference time; ``iters`` fixes the number of calls instead (it wins when both are set).
    ``warmup`` untimed calls precede the timed ones. ``min_iters`` calls are always timed so
    percentiles exist even for very slow models. ``threads`` is passed to the runner
    (``None``: the back end's default). ``rounds`` is the number of alternations when several
    models are compared. ``seed`` fixes the synthetic inputs.
    """

    batch_sizes: tuple[int, ...] = DEFAULT_BATCH_SIZES
    seconds: float | None = 3.0
    iters: int | None = None
    warmup: int = 3
    min_iters: int = 3
    threads: int | None = None
    rounds: int = 6
    seed: int = 0
    data: str | None = None

    def __post_init__(self) -> None:
        if not self.batch_sizes or any(b <= 0 for b in self.batch_sizes):
            raise InputError(f"batch sizes must be positive, got {list(self.batch_sizes)}")
        if self.iters is None and (self.seconds is None or self.seconds <= 0):
            raise InputError("give --seconds S (> 0) or --iters N to bound each measurement")
        if self.iters is not None and self.iters <= 0:
            raise InputError(f"--iters must be positive, got {self.iters}")
        if self.warmup < 0 or self.min_iters < 1 or self.rounds < 1:
            raise InputError("--warmup must be >= 0; min_iters and rounds >= 1")
        if self.threads is not None and self.threads <= 0:
            raise InputError(f"--threads must be positive, got {self.threads}")

    def runner_options(self) -> dict[str, Any]:
        return {} if self.threads is None else {"threads": self.threads}


# --------------------------------------------------------------------------- statistics


@dataclass(frozen=True)
class LatencyStats:
    """Figures of one (model, back end, batch size) measurement.

    Latencies are per call (one batch) in milliseconds; ``images_per_s`` is
    ``batch_size * iterations / total_s`` with ``total_s`` the summed call time in seconds.
    """

    batch_size: int
    iterations: int
    total_s: float
    images_per_s: float
    mean_ms: float
    min_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float

    @classmethod
    def from_latencies(cls, batch_size: int, latencies_s: Sequence[float]) -> LatencyStats:
        """Summarise call times (seconds); percentiles interpolate linearly (numpy default)."""
        if not latencies_s:
            raise InputError("no timed calls to summarise")
        lat = np.asarray(latencies_s, dtype=np.float64)
        if np.any(lat < 0):
            raise InputError("latencies must be >= 0 seconds")
        total = float(lat.sum())
        p50, p90, p99 = (float(v) * 1e3 for v in np.percentile(lat, [50, 90, 99]))
        return cls(
            batch_size=batch_size,
            iterations=int(lat.size),
            total_s=total,
            images_per_s=batch_size * lat.size / total if total > 0 else float("inf"),
            mean_ms=float(lat.mean()) * 1e3,
            min_ms=float(lat.min()) * 1e3,
            p50_ms=p50,
            p90_ms=p90,
            p99_ms=p99,
        )


@dataclass(frozen=True)
class BenchRecord:
    """One row of results: ``model`` is the label of the model file (see :func:`model_labels`).

    ``stats`` is ``None`` when the combination was skipped; ``skipped`` then says why (e.g. a
    model with a static batch of 8 cannot run batch 4).
    """

    model: str
    backend: str
    batch_size: int
    stats: LatencyStats | None
    skipped: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"model": self.model, "backend": self.backend, "skipped": self.skipped}
        d.update(asdict(self.stats) if self.stats else {"batch_size": self.batch_size})
        return d


@dataclass
class BenchResult:
    """Everything one ``reidctl bench`` run measured, plus where and on what."""

    models: dict[str, dict[str, Any]]  # label -> {"file", "sha256", "input"}
    backends: tuple[str, ...]
    settings: BenchSettings
    records: list[BenchRecord] = field(default_factory=list)
    machine: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def get(self, model: str, backend: str, batch_size: int) -> BenchRecord | None:
        for r in self.records:
            if (r.model, r.backend, r.batch_size) == (model, backend, batch_size):
                return r
        return None

    def throughput(self, model: str, backend: str, batch_size: int) -> float | None:
        r = self.get(model, backend, batch_size)
        return r.stats.images_per_s if r is not None and r.stats is not None else None

    def ratios(self, backend: str) -> dict[int, float | None]:
        """Throughput of the first model over the second, per batch size (``--vs``)."""
        labels = list(self.models)
        if len(labels) < 2:
            raise InputError("a ratio needs two models (--vs OTHER_MODEL_FILE)")
        out: dict[int, float | None] = {}
        for bs in self.settings.batch_sizes:
            a = self.throughput(labels[0], backend, bs)
            b = self.throughput(labels[1], backend, bs)
            out[bs] = a / b if a and b else None
        return out

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "format": BENCH_FORMAT,
            "tool": tool_info(),
            "models": self.models,
            "backends": list(self.backends),
            "settings": {**asdict(self.settings), "batch_sizes": list(self.settings.batch_sizes)},
            "machine": self.machine,
            "results": [r.to_dict() for r in self.records],
            "notes": list(self.notes),
        }
        if len(self.models) >= 2:
            d["ratios"] = {b: {str(k): v for k, v in self.ratios(b).items()} for b in self.backends}
        return d


# --------------------------------------------------------------------------- machine


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (``platform.processor()`` elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def cpu_flags(wanted: Sequence[str] = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")):
    """Which of ``wanted`` CPU flags /proc/cpuinfo lists (those that matter for INT8)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    have = set(line.split(":", 1)[1].split())
                    return [w for w in wanted if w in have]
    except OSError:
        pass
    return []


def gpu_names() -> list[str]:
    """GPU names: via torch.cuda when torch is already imported, else ``nvidia-smi``."""
    torch = sys.modules.get("torch")
    if torch is not None:
        try:
            if torch.cuda.is_available():
                return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        except Exception:  # a broken CUDA install must not break a CPU benchmark
            pass
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run(
                [smi, "--query-gpu=name", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=10,
                check=False,
            )
            return [ln.strip() for ln in out.stdout.splitlines() if ln.strip()]
        except (OSError, subprocess.SubprocessError):
            pass
    return []


def package_versions(names: Sequence[str] = VERSION_PACKAGES) -> dict[str, str]:
    out = {}
    for n in names:
        try:
            out[n] = metadata.version(n)
        except metadata.PackageNotFoundError:
            continue
    return out


def machine_info() -> dict[str, Any]:
    """CPU model, flags and cores, GPUs, OS, Python and package versions."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 1
    return {
        "cpu": cpu_model(),
        "cpu_flags": cpu_flags(),
        "logical_cores": os.cpu_count(),
        "usable_cores": usable,
        "gpus": gpu_names(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "versions": package_versions(),
    }


# --------------------------------------------------------------------------- inputs


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
    prep_dir = Path(prep_dir)
    meta = read_prep_meta(prep_dir)
    entries = read_manifest(prep_dir)
    if not entries:
        raise FormatError(f"{prep_dir} holds no tensors")
    try:
        dtype = np.dtype(meta.get("dtype", "float32"))
        shape = tuple(int(v) for v in meta["shape"])
    except (KeyError, TypeError, ValueError) as e:
        raise FormatError(f"{prep_dir}/meta.json lacks a valid dtype/shape ({e})") from e
    size = int(np.prod(shape)) * dtype.itemsize
    out = np.empty((count, *shape), dtype=dtype)
    for i in range(count):
        path = prep_dir / entries[i % len(entries)].bin
        try:
            raw = path.read_bytes()
        except OSError as e:
            raise FormatError(f"cannot read tensor {path}: {e}") from e
        if len(raw) != size:
            raise FormatError(
                f"{path} holds {len(raw)} bytes, expected {size} for {list(shape)} {dtype}"
            )
        out[i] = np.frombuffer(raw, dtype=dtype).reshape(shape)
    return out


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


# --------------------------------------------------------------------------- measuring


def interleaved_order(n_models: int, rounds: int) -> list[int]:
    """Model indices in alternating rounds: ``A B`` then ``B A`` and so on (ABBA), so that
    neither model always runs first (warm caches, frequency steps) across rounds."""
    order: list[int] = []
    for r in range(rounds):
        seq = list(range(n_models))
        order += seq if r % 2 == 0 else seq[::-1]
    return order


def measure(
    calls: Sequence[Callable[[], float]],
    settings: BenchSettings,
    clock: Callable[[], float] = time.perf_counter,
) -> list[list[float]]:
    """Time each of ``calls`` (each runs one batch and returns its latency in seconds) in
    alternating rounds; returns the latencies per call.

    Every call first gets ``settings.warmup`` untimed runs. With ``iters`` each call gets
    exactly that many timed runs, spread over the rounds; with ``seconds`` each gets about
    that much inference time (at least ``min_iters`` runs).
    """
    n = len(calls)
    for call in calls:
        for _ in range(settings.warmup):
            call()
    lat: list[list[float]] = [[] for _ in range(n)]
    rounds = settings.rounds if n > 1 else 1
    order = interleaved_order(n, rounds)
    if settings.iters is not None:
        per_round = [
            settings.iters // rounds + (1 if r < settings.iters % rounds else 0)
            for r in range(rounds)
        ]
        for k, idx in enumerate(order):
            for _ in range(per_round[k // n]):
                lat[idx].append(calls[idx]())
        return lat
    assert settings.seconds is not None
    budget = settings.seconds / rounds
    for idx in order:
        spent, done = 0.0, 0
        t_end = clock() + budget * 4 + 1.0  # wall-clock backstop against a stalled back end
        while spent < budget or done < max(1, settings.min_iters // rounds):
            dt = calls[idx]()
            lat[idx].append(dt)
            spent, done = spent + dt, done + 1
            if clock() > t_end and done >= 1:
                break
    for idx, call in enumerate(calls):
        while len(lat[idx]) < settings.min_iters:
            lat[idx].append(call())
    return lat


def model_labels(model_files: Sequence[str | os.PathLike[str]]) -> list[str]:
    """Short, distinct labels: the file names, or more of the path where names collide."""
    paths = [Path(p) for p in model_files]
    for depth in range(1, 8):
        labels = ["/".join(p.parts[-depth:]) for p in paths]
        if len(set(labels)) == len(labels):
            return labels
    # the same file twice (e.g. to measure the noise of the setup): number the copies
    return [f"{p} #{i + 1}" for i, p in enumerate(paths)]


def _sidecar_inputs(model_file: Path) -> tuple[TensorSpec, ...]:
    side = model_file.with_name(model_file.name + ".json")
    if not side.is_file():
        return ()
    try:
        return tuple(TensorSpec.from_dict(t) for t in read_json(side, "model sidecar")["inputs"])
    except (KeyError, TypeError, FormatError):
        return ()


def _index_bounds(model_file: Path) -> dict[str, int]:
    """``{"camera": num_cameras}`` for a camera-aware model's sidecar, else ``{}``."""
    cam = _sidecar_field(model_file, "camera")
    if isinstance(cam, dict) and cam.get("input") and int(cam.get("num_cameras") or 0) > 0:
        return {str(cam["input"]): int(cam["num_cameras"])}
    return {}


def _sidecar_field(model_file: Path, key: str) -> Any:
    side = model_file.with_name(model_file.name + ".json")
    try:
        return read_json(side, "model sidecar").get(key) if side.is_file() else None
    except FormatError:
        return None


def make_runner(backend: str, model_file: str, options: dict[str, Any]) -> Any:
    """``get_runner(backend)(model_file, **options)``, dropping options the back end does not
    accept (its ``accepted_options``), with a warning, so ``--threads`` works for every
    back end that has threads to set."""
    import warnings

    from reidctl.runners import get_runner

    cls = get_runner(backend)
    accepted = getattr(cls, "accepted_options", None)
    if accepted is not None:
        dropped = sorted(set(options) - set(accepted))
        if dropped:
            warnings.warn(
                f"back end {backend!r} ignores {', '.join(dropped)} (it accepts: "
                f"{', '.join(accepted) or 'no options'})",
                stacklevel=2,
            )
        options = {k: v for k, v in options.items() if k in accepted}
    return cls(model_file, **options)


def run_bench(
    model_files: Sequence[str | os.PathLike[str]],
    backends: Sequence[str],
    settings: BenchSettings,
    *,
    progress: Callable[[str], None] | None = None,
    runner_factory: Callable[[str, str, dict[str, Any]], Any] | None = None,
) -> BenchResult:
    """Measure every model on every back end at every batch size.

    ``model_files``: one model, or two (or more) to compare in alternating rounds (the first
    is the numerator of :meth:`BenchResult.ratios`). ``runner_factory(backend, model_file,
    options)`` builds a runner (default: ``reidctl.runners.get_runner(backend)(file,
    **options)``). ``progress`` receives one line per finished measurement.
    """
    files = [Path(f) for f in model_files]
    for f in files:
        if not f.exists():
            raise InputError(f"model file not found: {f}")
    if not backends:
        raise InputError("no back end given; e.g. --backend ort")
    labels = model_labels(files)
    factory = runner_factory or make_runner
    result = BenchResult(
        models={
            lab: {
                "file": str(f.resolve()),
                "sha256": sha256_file(f) if f.is_file() else None,
                "model": _sidecar_field(f, "model"),
            }
            for lab, f in zip(labels, files, strict=True)
        },
        backends=tuple(backends),
        settings=settings,
        machine=machine_info(),
    )
    for backend in backends:
        with ExitStack() as stack:
            runners = [
                stack.enter_context(factory(backend, str(f), settings.runner_options()))
                for f in files
            ]
            for lab, runner in zip(labels, runners, strict=True):
                specs = runner.input_specs()
                result.models[lab].setdefault("inputs", [s.to_dict() for s in specs])
            for bs in settings.batch_sizes:
                feeds: list[dict[str, np.ndarray]] = []
                skips: list[str | None] = []
                for f, runner in zip(files, runners, strict=True):
                    specs = runner.input_specs()
                    if settings.data:
                        fd, skip = data_feeds(specs, bs, settings.data)
                    else:
                        fd, skip = synthetic_feeds(
                            specs, bs, settings.seed, _sidecar_inputs(f), _index_bounds(f)
                        )
                    feeds.append(fd or {})
                    skips.append(skip)
                live = [i for i, s in enumerate(skips) if s is None]
                calls = [_timed_call(runners[i], feeds[i]) for i in live]
                lat = measure(calls, settings) if calls else []
                for i, lab in enumerate(labels):
                    if skips[i] is not None:
                        result.records.append(BenchRecord(lab, backend, bs, None, skips[i]))
                        continue
                    stats = LatencyStats.from_latencies(bs, lat[live.index(i)])
                    result.records.append(BenchRecord(lab, backend, bs, stats))
                    if progress:
                        progress(
                            f"{backend:>9} bs {bs:>3} {lab}: {stats.images_per_s:9.1f} img/s, "
                            f"p50 {stats.p50_ms:.2f} ms"
                        )
    return result


def _timed_call(runner: Any, feeds: dict[str, np.ndarray]) -> Callable[[], float]:
    def call() -> float:
        t0 = time.perf_counter()
        runner.infer(feeds)
        dt = runner.last_latency_s
        return float(dt) if dt is not None else time.perf_counter() - t0

    return call


# --------------------------------------------------------------------------- default model


def cache_dir() -> Path:
    """``$REIDCTL_CACHE``, else ``$XDG_CACHE_HOME/reidctl``, else ``~/.cache/reidctl``."""
    if os.environ.get("REIDCTL_CACHE"):
        return Path(os.environ["REIDCTL_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "reidctl"


def default_model_file(name: str = DEFAULT_MODEL, root: Path | None = None) -> tuple[Path, bool]:
    """The ONNX export of registered model ``name`` (random weights) in the cache; exports it
    on first use. Returns ``(path, exported_now)``."""
    import warnings

    path = (root or cache_dir()) / name / "model.onnx"
    side = path.with_name(path.name + ".json")
    if path.is_file() and side.is_file():
        return path, False
    from reidctl.convert.onnx import onnx_from_torch
    from reidctl.models.loading import RandomInitWarning

    with warnings.catch_warnings():
        # random weights are the point here: throughput does not depend on them
        warnings.simplefilter("ignore", RandomInitWarning)
        onnx_from_torch(name, path, force=True)
    return path, True


# --------------------------------------------------------------------------- output


def _fmt(v: float | None, spec: str = ".1f") -> str:
    return "-" if v is None else format(v, spec)


def _markdown(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.rjust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    sep = "|" + "|".join("-" * (w + 1) + ":" for w in widths) + "|"
    return "\n".join([line(header), sep, *(line(r) for r in rows)])


def format_table(result: BenchResult) -> str:
    """Throughput (images/s) as a Markdown table: rows = batch sizes, columns = back ends
    (per model when several, then the ratio of the first to the second)."""
    labels = list(result.models)
    header = ["batch"]
    for b in result.backends:
        if len(labels) == 1:
            header.append(b)
        else:
            header += [f"{b} {lab}" for lab in labels] + [f"{b} ratio"]
    rows = []
    for bs in result.settings.batch_sizes:
        row = [str(bs)]
        for b in result.backends:
            row += [_fmt(result.throughput(lab, b, bs)) for lab in labels]
            if len(labels) > 1:
                row.append(
                    _fmt(result.ratios(b)[bs], ".2f") + ("x" if result.ratios(b)[bs] else "")
                )
        rows.append(row)
    return _markdown(header, rows)


def format_latency_table(result: BenchResult) -> str:
    """Latency per call (ms, p50/p90/p99) and throughput, one row per measurement."""
    header = ["model", "backend", "batch", "img/s", "p50 ms", "p90 ms", "p99 ms", "calls"]
    rows = []
    for r in result.records:
        s = r.stats
        rows.append(
            [r.model, r.backend, str(r.batch_size)]
            + (
                [
                    _fmt(s.images_per_s),
                    _fmt(s.p50_ms, ".2f"),
                    _fmt(s.p90_ms, ".2f"),
                    _fmt(s.p99_ms, ".2f"),
                    str(s.iterations),
                ]
                if s
                else ["-", "-", "-", "-", f"skipped: {r.skipped}"]
            )
        )
    return _markdown(header, rows)


CSV_FIELDS = (
    "model",
    "backend",
    "batch_size",
    "images_per_s",
    "p50_ms",
    "p90_ms",
    "p99_ms",
    "mean_ms",
    "min_ms",
    "iterations",
    "total_s",
    "skipped",
)


def to_csv(result: BenchResult) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_FIELDS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in result.records:
        row = {k: "" for k in CSV_FIELDS}
        row.update({k: v for k, v in r.to_dict().items() if v is not None})
        w.writerow(row)
    return buf.getvalue()


def plot_throughput(result: BenchResult, path: str | os.PathLike[str], title: str = "") -> Path:
    """PNG of throughput (images/s) against batch size, one line per (model, back end)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    try:
        for lab in result.models:
            for b in result.backends:
                pts = [(bs, result.throughput(lab, b, bs)) for bs in result.settings.batch_sizes]
                pts = [(x, y) for x, y in pts if y is not None]
                if pts:
                    name = b if len(result.models) == 1 else f"{b} {lab}"
                    ax.plot([x for x, _ in pts], [y for _, y in pts], marker="o", label=name)
        ax.set_xscale("log", base=2)
        ax.set_xticks(list(result.settings.batch_sizes))
        ax.set_xticklabels([str(b) for b in result.settings.batch_sizes])
        ax.set_xlabel("batch size")
        ax.set_ylabel("throughput (images/s)")
        names = [m.get("model") or lab for lab, m in result.models.items()]
        ax.set_title(
            title or f"{', '.join(dict.fromkeys(names))} on {result.machine.get('cpu', '?')}",
            fontsize=9,
        )
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = Path(path)
        with atomic_path(path) as tmp:
            # no date/software metadata: the same figures give the same bytes
            fig.savefig(tmp, format="png", metadata={"Software": None})
    finally:
        plt.close(fig)
    return path


def write_outputs(result: BenchResult, out_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """Write ``bench.csv``, ``bench.json`` and ``bench.png`` into ``out_dir``."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    paths = {"csv": out / "bench.csv", "json": out / "bench.json", "png": out / "bench.png"}
    write_text_atomic(paths["csv"], to_csv(result))
    plot_throughput(result, paths["png"])
    write_json_atomic(paths["json"], result.to_dict())
    return paths
