"""Run a model over a preprocessed set and write a result directory (docs/formats.md §2, §3).

Layers, lowest first:

* :func:`run_batches` - ``(entries, tensors)`` batches through an active runner
  (:func:`batch_inputs` makes each call's inputs; :func:`run_calls` keeps several in
  flight on a runner with ``concurrency`` > 1); returns the rows run and the stacked
  outputs. Two producers feed it: :func:`infer_entries` (manifest entries of a
  preprocessed set, the next batch read by :meth:`PrepSet.read_batch` on a background
  thread while the current one runs) and :class:`reidctl.runners.image_source.ImageStream`
  (images decoded by worker processes, no tensor files); either is the unit every
  executor maps over its shards;
* an executor (:class:`LocalExecutor` here, :class:`reidctl.scale.ray_engine.RayExecutor`
  on a Ray cluster) - runs :func:`infer_entries` over the set and reports what it did;
* :func:`run_inference` - the whole ``reidctl infer`` for any executor: checks, facts,
  :class:`RunRecord` and the result directory (:meth:`ResultDir.write`).
"""

from __future__ import annotations

import os
import time
import warnings
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import numpy as np

from reidctl import __version__
from reidctl.artifacts import (
    MANIFEST_NAME,
    ManifestEntry,
    ModelSidecar,
    PrepSet,
    ResultDir,
    RunRecord,
    check_output_names,
    check_prep_fits_model,
    check_replaceable,
    read_tensor,
)
from reidctl.errors import (
    BackendUnavailableError,
    BadDataError,
    FormatError,
    InputError,
    ShapeMismatchError,
)
from reidctl.io import sha256_file
from reidctl.progress import bar_disable
from reidctl.runners import get_runner, runner_for_file
from reidctl.runners.base import Runner
from reidctl.runners.cameras import CAMERA_INPUT, CameraRule, camera_rule, split_inputs
from reidctl.runners.facts import derive_facts, output_specs, sidecar_or_none
from reidctl.runners.options import check_options as check_options  # re-exported
from reidctl.specs import TensorSpec

if TYPE_CHECKING:
    from reidctl.runners.image_source import ImageSource, StreamPlan

__all__ = [
    "InferExecutor",
    "InferJob",
    "InferOutcome",
    "LocalExecutor",
    "batch_inputs",
    "infer_entries",
    "infer_images",
    "read_tensor",
    "run_batches",
    "run_calls",
    "run_inference",
    "write_dump",
]

DUMP_DIR = "dump"
DUMP_FORMATS = ("bin", "txt")


T = TypeVar("T")


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


# --------------------------------------------------------------------------- inference


def batch_inputs(
    input_name: str,
    entries: Sequence[ManifestEntry],
    batch: np.ndarray,
    camera: CameraRule | None = None,
    root: str | os.PathLike[str] | None = None,
) -> dict[str, np.ndarray]:
    """The runner's inputs for one batch: ``batch`` (``[B, C, H, W]``) as ``input_name``;
    ``entries`` are the batch's rows. A camera-aware model (``camera`` given) also gets
    ``camera``, int64 ``[B]``: ``camera.indices(entries)``, the entries' camids through the
    rule (:mod:`reidctl.runners.cameras`; errors name the image under ``root``)."""
    feeds = {input_name: batch}
    if camera is not None:
        feeds[CAMERA_INPUT] = camera.indices(entries, root)
    return feeds


def run_calls(
    runner: Runner,
    calls: Iterable[tuple[T, dict[str, np.ndarray]]],
    *,
    stable: bool = False,
) -> Iterator[tuple[T, dict[str, np.ndarray]]]:
    """``(key, outputs)`` of each ``(key, feeds)`` call through an active ``runner``, in
    the order given, by :meth:`Runner.infer_rows`.

    A runner with :attr:`Runner.concurrency` N > 1 gets up to N calls at once (from a pool
    of N threads, one more call queued), so the results come in order while later calls
    run. The producer may then run ahead, so feeds are copied before they are handed out,
    unless ``stable`` (each call's arrays stay valid after the next call is produced).
    """
    depth = runner.concurrency
    if depth <= 1:
        for key, feeds in calls:
            yield key, runner.infer_rows(feeds)
        return
    pool = ThreadPoolExecutor(depth, thread_name_prefix="reidctl-infer")
    pending: deque[tuple[T, Future[dict[str, np.ndarray]]]] = deque()
    try:
        for key, feeds in calls:
            if not stable:
                feeds = {k: np.array(v, copy=True) for k, v in feeds.items()}
            pending.append((key, pool.submit(runner.infer_rows, feeds)))
            while len(pending) > depth:
                key, done = pending.popleft()
                yield key, done.result()
        while pending:
            key, done = pending.popleft()
            yield key, done.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def run_batches(
    runner: Runner,
    batches: Iterable[tuple[Sequence[ManifestEntry], np.ndarray]],
    total: int,
    *,
    input_name: str | None = None,
    progress: bool = False,
    camera: CameraRule | None = None,
    root: str | os.PathLike[str] | None = None,
    stable: bool = False,
) -> tuple[list[ManifestEntry], dict[str, np.ndarray]]:
    """Run ``(entries, tensors)`` batches through an active ``runner``, in order.

    ``total`` is the most rows expected (the outputs are allocated once, then trimmed to
    the rows run). ``input_name`` defaults to the model's image input. A camera-aware
    model's ``camera`` input comes from the entries' camids through ``camera`` (default:
    :func:`camera_rule` of the model's sidecar), see :func:`batch_inputs`. With
    ``progress`` a tqdm bar (images/s) goes to stderr. A runner with
    :attr:`Runner.concurrency` > 1 runs several batches at once (:func:`run_calls`;
    ``stable``: the producer never reuses a batch's array, so no copy is needed). Returns
    the entries run, in order, and ``{output name: array}`` with row ``i`` belonging to
    entry ``i``.
    """
    image, camera_spec = split_inputs(runner.input_specs(), runner.model_file)
    if input_name is None:
        input_name = image.name
    if camera_spec is None:
        camera = None
    elif camera is None:
        camera = camera_rule(sidecar_or_none(Path(runner.model_file)), None)
    results: dict[str, np.ndarray] = {}
    done: list[ManifestEntry] = []
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(
            total=total,
            unit="img",
            desc=f"infer ({runner.name})",
            leave=False,
            disable=bar_disable(progress),
        )
    try:
        calls = (
            (entries, batch_inputs(input_name, entries, batch, camera, root))
            for entries, batch in batches
        )
        for entries, out in run_calls(runner, calls, stable=stable):
            if not results:
                results = {
                    k: np.empty((total, *v.shape[1:]), dtype=v.dtype) for k, v in out.items()
                }
            row = len(done)
            for k, v in out.items():
                results[k][row : row + len(entries)] = v
            done.extend(entries)
            if bar is not None:
                bar.update(len(entries))
    finally:
        if bar is not None:
            bar.close()
    if len(done) < total:
        results = {k: v[: len(done)] for k, v in results.items()}
    return done, results


def infer_entries(
    runner: Runner,
    prep: PrepSet,
    entries: Sequence[ManifestEntry],
    batch_size: int = 32,
    *,
    input_name: str | None = None,
    progress: bool = False,
    camera: CameraRule | None = None,
) -> dict[str, np.ndarray]:
    """Run ``entries`` (rows of the preprocessed set ``prep``) through an active ``runner``.

    Reads ``batch_size`` tensors at a time on a background thread, one batch ahead of the
    runner, so file I/O overlaps inference. ``input_name`` defaults to the model's image
    input. A camera-aware model gets ``camera`` (default: :func:`camera_rule` of its sidecar
    and ``prep``'s ``meta.json``) applied to the entries' camids. With ``progress`` a tqdm
    bar (images/s) goes to stderr. Returns ``{output name: array}`` with row ``i``
    belonging to ``entries[i]``.
    """
    if batch_size < 1:
        raise InputError(f"batch size must be a positive integer, got {batch_size}")
    if camera is None and any(s.name == CAMERA_INPUT for s in runner.input_specs()):
        camera = camera_rule(sidecar_or_none(Path(runner.model_file)), prep.meta)
    chunks = list(_chunks(entries, batch_size))

    def batches() -> Iterator[tuple[Sequence[ManifestEntry], np.ndarray]]:
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="reidctl-read") as pool:

            def read(chunk: Sequence[ManifestEntry]) -> Any:
                return pool.submit(prep.read_batch, [e.index for e in chunk])

            pending = read(chunks[0]) if chunks else None
            for i, chunk in enumerate(chunks):
                batch = pending.result()  # type: ignore[union-attr]
                if i + 1 < len(chunks):
                    pending = read(chunks[i + 1])
                yield chunk, batch

    _, results = run_batches(
        runner,
        batches(),
        len(entries),
        input_name=input_name,
        progress=progress,
        camera=camera,
        root=prep.root,
        stable=True,  # read_batch returns a new array per batch
    )
    return results


def single_input(runner: Runner) -> TensorSpec:
    """The model's image input; :class:`InputError` unless the model has one image input
    and at most a ``camera`` input besides it."""
    return split_inputs(runner.input_specs(), runner.model_file)[0]


def resolve_camera(
    specs: Sequence[TensorSpec],
    rule: CameraRule | None,
    entries: Sequence[ManifestEntry],
    root: str | os.PathLike[str] | None,
    model_file: str | os.PathLike[str],
    meta: dict[str, Any] | None = None,
) -> CameraRule | None:
    """The camera rule a model with inputs ``specs`` runs with over ``entries`` (images
    under ``root``): ``None`` without a ``camera`` input (then a ``--camera-offset`` rule is
    refused), else ``rule`` (default: :func:`camera_rule` of the set's ``meta`` alone),
    checked on every entry first so that an invalid camid fails before any inference
    (:class:`InputError` naming the image)."""
    if not any(s.name == CAMERA_INPUT for s in specs):
        if rule is not None and rule.source == "--camera-offset":
            raise InputError(
                f"--camera-offset applies to camera-aware models; {model_file} takes no "
                f"{CAMERA_INPUT!r} input"
            )
        return None
    rule = rule or camera_rule(None, meta)
    rule.indices(entries, root)
    return rule


def check_input_matches(spec: TensorSpec, meta: dict[str, Any], model_file: str) -> None:
    """The model input ``[batch, C, H, W]`` / dtype must match the tensors' ``meta.json``."""
    shape = [int(d) for d in meta.get("shape", [])]
    dtype = str(meta.get("dtype", "float32"))
    model_row = list(spec.shape[1:])
    fixed_match = len(model_row) == len(shape) and all(
        not isinstance(m, int) or m == s for m, s in zip(model_row, shape, strict=True)
    )
    if not fixed_match or np.dtype(spec.dtype) != np.dtype(dtype):
        raise ShapeMismatchError(
            f"model {model_file} input {spec.name!r} expects {list(spec.shape)} {spec.dtype}, "
            f"but the preprocessed tensors are [batch, {', '.join(map(str, shape))}] {dtype} "
            "(meta.json); preprocess again with the model's settings "
            "(`reidctl preprocess ... --model-config <model>.json`)"
        )


# --------------------------------------------------------------------------- results


def _check_out_dir(out_dir: Path, force: bool) -> None:
    check_replaceable(out_dir, force)


def write_dump(
    dump_dir: str | os.PathLike[str],
    entries: Sequence[ManifestEntry],
    outputs: dict[str, np.ndarray],
    fmt: str = "bin",
    index_base: int = 1,
) -> int:
    """Write the vendor tool's layout: ``<stem>_<k>.<fmt>`` per entry and output.

    ``k`` counts the model outputs from ``index_base`` (1: the Ascend ``benchmark`` tool,
    0: ``ais_bench``). ``bin`` is raw little-endian float32, ``txt`` whitespace-separated
    numbers, one line per row of the output's last axis. Returns the number of files.
    """
    if fmt not in DUMP_FORMATS:
        raise InputError(f"unknown dump format {fmt!r}; valid: {', '.join(DUMP_FORMATS)}")
    dump_dir = Path(dump_dir)
    dump_dir.mkdir(parents=True, exist_ok=True)
    arrays = [a.astype("<f4", copy=False) for a in outputs.values()]
    n = 0
    for i, e in enumerate(entries):
        for k, arr in enumerate(arrays, start=index_base):
            path = dump_dir / f"{e.stem}_{k}.{fmt}"
            if fmt == "bin":
                arr[i].tofile(path)
            else:
                row = arr[i]
                np.savetxt(path, row.reshape(-1, row.shape[-1] if row.ndim else 1), fmt="%.8g")
            n += 1
    return n


def runner_class(model_file: Path, backend: str | None) -> type[Runner]:
    """The runner class for ``backend`` (by name) or, when ``None``, for the file's suffix.

    Raises :class:`BackendUnavailableError` with the install hint when the back end's
    package is missing here, :class:`UnknownNameError` / :class:`InputError` for an unknown
    name or suffix.
    """
    cls = get_runner(backend) if backend else runner_for_file(model_file)
    ok, why = cls.availability()
    if not ok:
        raise BackendUnavailableError(
            f"back end {cls.name!r} is not available here: {why}; install: {cls.install_hint} "
            "(`reidctl backends` lists what is available)"
        )
    return cls


def model_preprocess(sidecar: ModelSidecar | None, model: str | None = None) -> Any:
    """The preprocessing a model expects: its sidecar's, else (torch without a sidecar) the
    registered ``model``'s, else ``None`` (a foreign model: nothing to check against)."""
    if sidecar is not None:
        return sidecar.preprocess
    if model:
        from reidctl.models.registry import get_spec

        return get_spec(model).preprocess
    return None


def check_request(model_file: Path, dump: str | None, batch_size: int) -> None:
    """The checks of every inference request, before any work."""
    if dump is not None and dump not in DUMP_FORMATS:
        raise InputError(f"unknown dump format {dump!r}; valid: {', '.join(DUMP_FORMATS)}")
    if batch_size < 1:
        raise InputError(f"--bs must be a positive batch size, got {batch_size}")
    if not model_file.is_file():
        raise FormatError(f"model file not found: {model_file}")


def load_inference_inputs(
    model_file: Path, prep_dir: Path, dump: str | None, batch_size: int
) -> PrepSet:
    """Check an inference request before any work: returns the preprocessed set."""
    check_request(model_file, dump, batch_size)
    prep = PrepSet.open(prep_dir)
    if not prep.entries:
        raise FormatError(f"{prep_dir / MANIFEST_NAME} lists no tensors")
    return prep


# --------------------------------------------------------------------------- executors


@dataclass(frozen=True)
class InferJob:
    """What an executor runs: ``runner_cls(model_file, **options)`` over every row of
    ``prep``, or, when ``source`` is set (``prep`` is then ``None``), over the images it
    plans (decoded on the fly); ``batch_size`` rows per call; ``out_dir`` is the result
    directory to be."""

    model_file: Path
    model_sha256: str
    prep: PrepSet | None
    out_dir: Path
    runner_cls: type[Runner]
    options: dict[str, Any]
    batch_size: int
    progress: bool = False
    source: StreamPlan | None = None
    #: how manifest camids become a camera-aware model's ``camera`` input
    camera: CameraRule | None = None

    @property
    def meta(self) -> dict[str, Any]:
        """What the tensors look like (``meta.json`` or the stream's equivalent)."""
        return self.source.meta if self.source is not None else self.prep.meta  # type: ignore[union-attr]


@dataclass
class InferOutcome:
    """What an executor did: outputs in manifest order, the runner's device and input
    specs, per-call latencies (s), setup and inference wall time (s), and for a distributed
    engine its ``engine`` record and extra package ``versions``."""

    outputs: dict[str, np.ndarray]
    device: str
    inputs: list[TensorSpec]
    latencies_s: list[float]
    setup_s: float
    wall_s: float
    engine: dict[str, Any] | None = None
    versions: dict[str, str] = field(default_factory=dict)
    #: streaming runs: the rows of ``outputs`` (good images, renumbered) and the bad ones
    entries: list[ManifestEntry] | None = None
    bad: list[Any] = field(default_factory=list)


class InferExecutor(Protocol):
    """Maps :func:`infer_entries` over the shards of a job (one process, a Ray pool, ...)."""

    def prepare_output(self, out_dir: Path, force: bool) -> None:
        """Apply the output rules (``--force``, ``--resume``) before any work."""

    def runner_options(self, cls: type[Runner], options: dict[str, Any]) -> dict[str, Any]:
        """The options each runner gets (an executor may set defaults, e.g. threads)."""

    def run(self, job: InferJob) -> InferOutcome:
        """Run the job; outputs in manifest order."""


class LocalExecutor:
    """One runner in this process over the whole set, as a single shard."""

    def prepare_output(self, out_dir: Path, force: bool) -> None:
        _check_out_dir(out_dir, force)

    def runner_options(self, cls: type[Runner], options: dict[str, Any]) -> dict[str, Any]:
        return options

    def run(self, job: InferJob) -> InferOutcome:
        if job.source is not None:
            return self._run_stream(job, job.source)
        t_start = time.perf_counter()
        with job.runner_cls(str(job.model_file), **job.options) as runner:
            spec = single_input(runner)
            check_input_matches(spec, job.prep.meta, str(job.model_file))
            camera = resolve_camera(
                runner.input_specs(),
                job.camera,
                job.prep.entries,
                job.prep.root,
                job.model_file,
                job.prep.meta,
            )
            setup_s = time.perf_counter() - t_start
            t0 = time.perf_counter()
            outputs = infer_entries(
                runner,
                job.prep,
                job.prep.entries,
                job.batch_size,
                input_name=spec.name,
                progress=job.progress,
                camera=camera,
            )
            wall_s = time.perf_counter() - t0
            return InferOutcome(
                outputs,
                runner.device_name(),
                list(runner.input_specs()),
                list(runner.latencies_s),
                setup_s,
                wall_s,
            )

    def _run_stream(self, job: InferJob, plan: StreamPlan) -> InferOutcome:
        from reidctl.runners.image_source import ImageStream

        t_start = time.perf_counter()
        # the decoders fork before the runner starts its threads
        with (
            ImageStream(plan, batch_size=job.batch_size, workers=plan.workers) as stream,
            job.runner_cls(str(job.model_file), **job.options) as runner,
        ):
            spec = single_input(runner)
            check_input_matches(spec, plan.meta, str(job.model_file))
            camera = resolve_camera(
                runner.input_specs(), job.camera, plan.entries, plan.root, job.model_file, plan.meta
            )
            setup_s = time.perf_counter() - t_start
            t0 = time.perf_counter()
            _, outputs = run_batches(
                runner,
                stream.batches(),
                len(plan.entries),
                input_name=spec.name,
                progress=job.progress,
                camera=camera,
                root=plan.root,
            )
            wall_s = time.perf_counter() - t0
            return InferOutcome(
                outputs,
                runner.device_name(),
                list(runner.input_specs()),
                list(runner.latencies_s),
                setup_s,
                wall_s,
                entries=plan.kept(stream.bad),
                bad=list(stream.bad),
            )


# --------------------------------------------------------------------------- inference


def run_inference(
    model_file: str | os.PathLike[str],
    prep_dir: str | os.PathLike[str] | None,
    out_dir: str | os.PathLike[str],
    backend: str | type[Runner] | None = None,
    batch_size: int = 32,
    dump: str | None = None,
    index_base: int = 1,
    force: bool = False,
    *,
    feature: str | None = None,
    progress: bool = False,
    executor: InferExecutor | None = None,
    source: ImageSource | None = None,
    allow_preprocess_mismatch: bool = False,
    camera_offset: int | None = None,
    **runner_options: Any,
) -> dict[str, Any]:
    """Run ``model_file`` over the preprocessed set ``prep_dir``; write ``out_dir``.

    ``backend`` defaults to the runner for the file's suffix (``.onnx`` -> ``ort``); a
    :class:`Runner` subclass is used as is. ``batch_size`` rows are read and run at a time
    (engines with fixed batch sizes split or pad, see :meth:`Runner.infer_rows`). ``dump``
    (``"bin"``/``"txt"``) also writes the vendor-tool layout ``dump/<stem>_<k>.<ext>``,
    ``k`` from ``index_base``. ``feature`` overrides the retrieval feature recorded in
    ``model.json``. ``executor`` runs the runners (default :class:`LocalExecutor`: one, in
    this process). The set's preprocessing (``meta.json``) must match the model's facts
    (sidecar, or the registered ``model`` option's), else :class:`PreprocessMismatchError`
    unless ``allow_preprocess_mismatch`` (recorded in ``run.json`` as ``preprocess_check``).
    A camera-aware model's ``camera`` input is ``camid - offset`` per manifest entry,
    ``offset`` being ``camera_offset`` or else the set's first camera number
    (:func:`reidctl.runners.cameras.camera_rule`); a camid outside the model's cameras
    raises :class:`InputError` naming the image before any inference.
    ``runner_options`` go to the runner (``threads``, ``device``, ``fp16``,
    ``channels_last``, ``precision``, ``model``, ``weights``, ...); unset
    (``None``/``False``) ones are ignored.

    ``source`` (an :class:`~reidctl.runners.image_source.ImageSource`, with ``prep_dir``
    ``None``) reads images instead: decoded and preprocessed by worker processes exactly as
    ``reidctl preprocess`` would, fed to the runner in batches, no tensor files. The result
    directory is the one ``preprocess`` + ``infer`` writes; ``run.json`` records the images
    (``images``: layout, root, splits, settings, bad files) instead of ``prep_dir``.
    Unreadable images raise :class:`BadDataError` listing them (nothing is written) unless
    the source's ``skip_bad``.

    The result directory is assembled under a temporary name beside ``out_dir`` and renamed
    into place at the end, with ``run.json`` written last; an existing non-empty ``out_dir``
    is refused without ``force``. Returns the ``run.json`` dictionary.
    """
    model_file, out_dir = Path(model_file), Path(out_dir)
    executor = executor or LocalExecutor()
    prep: PrepSet | None = None
    plan: StreamPlan | None = None
    if source is not None:
        if prep_dir is not None:
            raise InputError("give either a preprocessed set or images (--images), not both")
        check_request(model_file, dump, batch_size)
        plan = source.plan(model_file)
        meta = plan.meta
    else:
        if prep_dir is None:
            raise InputError("give a preprocessed set (PREP_DIR) or images (--images ROOT)")
        prep = load_inference_inputs(model_file, Path(prep_dir), dump, batch_size)
        meta = prep.meta
    fit: dict[str, Any] | None = None
    sidecar = sidecar_or_none(model_file)
    camera = camera_rule(sidecar, meta, camera_offset)
    if sidecar is not None:  # fail before any runner starts
        planned = plan.entries if plan is not None else prep.entries  # type: ignore[union-attr]
        root = plan.root if plan is not None else prep.root  # type: ignore[union-attr]
        camera = resolve_camera(sidecar.inputs, camera, planned, root, model_file, meta)
    if prep is not None:
        images = [] if sidecar is None else [s for s in sidecar.inputs if s.name != CAMERA_INPUT]
        if len(images) == 1:
            # shape and dtype first (the runner checks them again against the loaded model)
            check_input_matches(images[0], prep.meta, str(model_file))
        fit = check_prep_fits_model(
            prep,
            model_file,
            model_preprocess(sidecar, runner_options.get("model")),
            allow_mismatch=allow_preprocess_mismatch,
        )
        if "note" in fit:
            warnings.warn(fit["note"], stacklevel=2)
    executor.prepare_output(out_dir, force)
    if isinstance(backend, type) and issubclass(backend, Runner):
        cls = backend
    else:
        cls = runner_class(model_file, backend)
    options = executor.runner_options(cls, check_options(cls, runner_options))
    job = InferJob(
        model_file,
        sha256_file(model_file),
        prep,
        out_dir,
        cls,
        options,
        batch_size,
        progress,
        source=plan,
        camera=camera,
    )
    done = executor.run(job)
    takes_camera = any(s.name == CAMERA_INPUT for s in done.inputs)
    if plan is not None:
        if done.bad and not plan.skip_bad:
            from reidctl.runners.image_source import bad_images_error

            raise bad_images_error(done.bad, len(plan.entries), plan.root)
        entries = list(done.entries or [])
        if not entries:
            raise BadDataError(
                f"none of the {len(plan.entries)} images under {plan.root} could be read"
            )
    else:
        entries = list(prep.entries)  # type: ignore[union-attr]
    check_output_names(list(done.outputs))
    facts = sidecar or derive_facts(
        model_file,
        done.inputs,
        output_specs(done.outputs),
        meta.get("preprocess"),
        options.get("model"),
    )
    facts = facts.with_feature(feature)
    run = RunRecord(
        backend=cls.name,
        device=done.device,
        options=options,
        model_file=str(model_file.resolve()),
        model_sha256=job.model_sha256,
        prep_dir=None if prep_dir is None else str(Path(prep_dir).resolve()),
        batch_size=batch_size,
        num_images=len(entries),
        wall_s=done.wall_s,
        setup_s=done.setup_s,
        latencies_s=done.latencies_s,
        outputs=list(done.outputs),
        feature=facts.feature,
        dump=None if dump is None else {"format": dump, "index_base": index_base},
        versions={
            "reidctl": __version__,
            "numpy": np.__version__,
            **done.versions,
            **cls.versions(),
        },
        engine=done.engine,
        images=None if plan is None else plan.record(done.bad),
        preprocess_check=fit,
        camera=camera.to_dict() if takes_camera and camera is not None else None,
    )
    return write_results(out_dir, entries, done.outputs, facts, run, dump, index_base).run


def infer_images(
    model_file: str | os.PathLike[str],
    layout: str,
    root: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    splits: str | Sequence[str] = ("query", "gallery"),
    spec: Any = None,
    dtype: str | None = None,
    flip: bool = False,
    decoders: int | None = None,
    skip_bad: bool = False,
    **kwargs: Any,
) -> dict[str, Any]:
    """:func:`run_inference` straight from the images of ``layout`` under ``root``.

    ``spec`` / ``dtype`` / ``flip`` are the preprocessing (default: the model's facts, as
    ``reidctl preprocess --model-config MODEL`` would); ``decoders`` worker processes decode
    (default: every core); ``skip_bad`` leaves unreadable images out. The other keywords
    are :func:`run_inference`'s. Returns the ``run.json`` dictionary.
    """
    from reidctl.runners.image_source import ImageSource

    source = ImageSource(
        layout,
        root,
        splits,
        spec,
        dtype,
        flip,
        decoders,
        skip_bad,
        model=kwargs.get("model"),
    )
    return run_inference(model_file, None, out_dir, source=source, **kwargs)


def write_results(
    out_dir: Path,
    entries: Sequence[ManifestEntry],
    outputs: dict[str, np.ndarray],
    facts: ModelSidecar,
    run: RunRecord,
    dump: str | None,
    index_base: int,
) -> ResultDir:
    """:meth:`ResultDir.write` with the vendor dump (``dump``) added when asked for."""

    def add_dump(stage: Path) -> None:
        if dump is not None:
            write_dump(stage / DUMP_DIR, entries, outputs, dump, index_base)

    return ResultDir.write(out_dir, entries, outputs, facts, run, add_dump)
