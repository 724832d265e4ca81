"""Preprocessing and inference on a Ray cluster, with the single-machine artefacts as output.

* :class:`RayPrepExecutor` (used by :func:`preprocess_ray`) is the tensor-writing step of
  :func:`reidctl.preprocess.engine.preprocess_dataset`: it splits the planned tensors into
  shards and runs :func:`reidctl.preprocess.engine.process_shard` on each as a Ray task;
  the pipeline then writes the manifest, ``prep.info`` and ``meta.json`` as for a local run.
* :class:`RayExecutor` (used by :func:`infer_ray`) is the executor of
  :func:`reidctl.runners.infer.run_inference`: a pool of Ray actors, each holding one
  activated runner for its whole life (the model loads once per worker), is handed shards
  of the manifest; the driver persists every finished shard under ``RESULTS/.shards/``, and
  ``run_inference`` writes the result directory at the end, rows in manifest order. Shard
  boundaries fall on multiples of the batch size, so every batch holds the same rows as in
  a single-process run and the CPU ``ort`` features are byte-identical.

Where things must live on a real cluster: the dataset root (preprocess) and the
preprocessed set (infer) are read by the workers at the same absolute path as on the
driver (a shared file system); preprocess workers also write the tensors there. Inference
results travel back through Ray's object store, so ``RESULTS/`` only needs to be local to
the driver.

Faults: a worker that dies (killed process, lost node) fails the shard it was running; the
driver resubmits the shard, preferring another worker, until the shard has failed
``max_retries`` times, then raises :class:`WorkerFailureError`. Dead actors are restarted
by Ray (``max_restarts``), reloading their model. Preprocess tasks use Ray's own task
retries (``max_retries``). With ``resume``, shards already persisted by an interrupted run
(with the same model, back end, options and batch size) are not run again.

Ray itself is imported inside the functions (``pip install 'reidctl[ray]'``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import time
import zipfile
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from reidctl.artifacts import (
    MANIFEST_NAME,
    ManifestEntry,
    PrepSet,
    is_result_dir,
    write_npz_deterministic,
)
from reidctl.errors import BadDataError, InputError, OutputExistsError, ReidctlError
from reidctl.io import sha256_file, write_json_atomic
from reidctl.progress import bar_disable
from reidctl.scale._optional import import_ray

# The preprocess defaults, without importing the preprocess stage (OpenCV) at import time.
DEFAULT_SPLITS = ("query", "gallery")

SHARDS_DIR = ".shards"
DEFAULT_PREP_SHARD = 256
DEFAULT_INFER_SHARD_BATCHES = 8


class WorkerFailureError(BadDataError):
    """Ray workers kept dying: a shard failed more often than the retry budget allows."""


# --------------------------------------------------------------------------- connection


@dataclass
class RayConnection:
    """What :func:`connect` did; :meth:`close` shuts Ray down only if it started it."""

    started_here: bool
    address: str | None

    def close(self) -> None:
        if self.started_here:
            import_ray().shutdown()

    def __enter__(self) -> RayConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


DEFAULT_CONNECT_TIMEOUT_S = 30.0

# What a cluster with token authentication (the default of `ray start --head` where a token
# exists, and of every local `ray.init`) needs from a process that joins it.
TOKEN_NEEDS = (
    "this process needs RAY_AUTH_MODE=token and the cluster's token (print it on the head "
    "node with `ray get-auth-token`; pass it as RAY_AUTH_TOKEN=..., or in a file named by "
    "RAY_AUTH_TOKEN_PATH, or in ~/.ray/auth_token)"
)
AUTH_HINT = (
    f"if the cluster uses token authentication, {TOKEN_NEEDS}; on a trusted network the "
    "cluster may instead be started with RAY_AUTH_MODE=disabled (see docs/scale.md)"
)


def parse_address(address: str) -> tuple[str, int] | None:
    """``HOST:PORT`` (or ``ray://HOST:PORT``, ``[IPv6]:PORT``) -> ``(host, port)``;
    ``None`` for ``auto`` (Ray finds the cluster itself). :class:`InputError` otherwise."""
    if address == "auto":
        return None
    rest = address.split("://", 1)[1] if "://" in address else address
    host, sep, port = rest.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise InputError(f"--address {address!r} is not HOST:PORT (e.g. 10.0.0.5:6379) or `auto`")
    return host, int(port)


def probe_address(address: str, timeout: float) -> None:
    """Open (and close) a TCP connection to ``address``'s port within ``timeout`` seconds.

    :class:`InputError` naming the address when nothing answers there, so that a wrong
    address fails at once instead of inside Ray's own retry loop.
    """
    import socket

    hostport = parse_address(address)
    if hostport is None:
        return
    try:
        with socket.create_connection(hostport, timeout=timeout):
            pass
    except OSError as e:
        why = (
            f"no answer within {timeout:g} s (--connect-timeout)"
            if isinstance(e, TimeoutError)
            else (e.strerror or str(e)).lower()
        )
        raise InputError(
            f"cannot reach the Ray cluster at {address!r}: {why}; check that `ray start "
            "--head` runs there and that its port is open"
        ) from None


def _check_gcs(ray: Any, address: str) -> None:
    """Ask the GCS at ``address`` for its cluster id: a refused authentication token raises
    at once here, where ``ray.init`` would retry it forever. Skipped for ``auto`` and
    ``ray://`` addresses, and where this Ray has no such client."""
    if address == "auto" or "://" in address:
        return
    client = getattr(getattr(ray, "_raylet", None), "GcsClient", None)
    if client is not None:
        client(address=address)


class _DropMessage(logging.Filter):
    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefix)


def _init_within(ray: Any, timeout: float, **kwargs: Any) -> None:
    """``ray.init(**kwargs)``, given up after ``timeout`` seconds.

    Ray runs in a helper thread, so the waiting main thread still handles signals
    (SIGTERM, Ctrl-C) at once; a call that does not return in time raises
    :class:`InputError` (the stuck thread is a daemon and ends with the process).
    """
    import threading

    outcome: dict[str, BaseException | None] = {}

    def target() -> None:
        try:
            _check_gcs(ray, kwargs["address"])
            ray.init(**kwargs)
            outcome["error"] = None
        except BaseException as e:  # handed to the caller's thread
            outcome["error"] = e

    # Ray sets its SIGTERM handler only from the main thread and warns otherwise; the
    # command line has its own handler, so that warning is noise here.
    ray_log = logging.getLogger("ray._private.worker")
    quiet = _DropMessage("SIGTERM handler is not set")
    ray_log.addFilter(quiet)
    t = threading.Thread(target=target, name="reidctl-ray-init", daemon=True)
    try:
        t.start()
        t.join(timeout)
    finally:
        ray_log.removeFilter(quiet)
    if "error" not in outcome:
        raise InputError(
            f"the Ray cluster at {kwargs.get('address')!r} did not answer within {timeout:g} s "
            f"(--connect-timeout): is it a Ray head node's GCS port? {AUTH_HINT}"
        )
    if outcome["error"] is not None:
        raise outcome["error"]


def connect(
    address: str | None = None,
    *,
    num_cpus: int | None = None,
    num_gpus: int | None = None,
    object_store_memory: int | None = None,
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT_S,
) -> RayConnection:
    """Connect to Ray: reuse this process's connection, join ``address``, or start locally.

    ``address``: ``None`` starts a local single-node Ray on 127.0.0.1 with ``num_cpus`` /
    ``num_gpus`` / ``object_store_memory`` (bytes; Ray's defaults when ``None``) and no
    dashboard, whatever ``RAY_ADDRESS`` or an earlier ``ray start`` on this machine says;
    ``"auto"`` joins the cluster this machine belongs to (``ray start`` run here);
    ``"HOST:PORT"`` joins that head node's GCS. An existing connection
    (``ray.init`` called by the caller) is used as is.

    Joining is bounded by ``connect_timeout`` seconds: the address's TCP port is probed
    first, then ``ray.init`` must return within the same time. Every failure (nothing
    listening, no answer, a refused authentication token) raises :class:`InputError`
    naming the address, before anything is written.
    """
    ray = import_ray()
    if not connect_timeout > 0:
        raise InputError(f"--connect-timeout must be positive, got {connect_timeout}")
    if ray.is_initialized():
        return RayConnection(False, address)
    where = "a local Ray instance" if address is None else f"the Ray cluster at {address!r}"
    try:
        if address is None:
            # "local", not None: Ray's None first joins the cluster named by RAY_ADDRESS or
            # by the file a `ray start` on this machine left in its temp dir (even one long
            # stopped, which it then retries for minutes); a local run must not depend on it.
            ray.init(
                address="local",
                num_cpus=num_cpus,
                num_gpus=num_gpus,
                object_store_memory=object_store_memory,
                include_dashboard=False,
                logging_level=logging.WARNING,
                _node_ip_address="127.0.0.1",
            )
        else:
            probe_address(address, connect_timeout)
            _init_within(ray, connect_timeout, address=address, logging_level=logging.WARNING)
    except ReidctlError:
        raise
    except Exception as e:
        if _is_auth_error(ray, e):
            raise InputError(
                f"cannot connect to {where}: it refused this process's authentication token "
                f"(InvalidAuthToken): the cluster uses token authentication; {TOKEN_NEEDS}; see "
                "docs/scale.md"
            ) from None
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        hint = (
            "start the head with `ray start --head` and pass its address (HOST:PORT) or `auto`"
            if address in (None, "auto")
            else f"check that `ray start --head` runs there; {AUTH_HINT}"
        )
        raise InputError(f"cannot connect to {where}: {first}; {hint}") from None
    return RayConnection(address is None, address)


def _is_auth_error(ray: Any, err: BaseException) -> bool:
    auth_error = getattr(ray.exceptions, "AuthenticationError", None)
    if auth_error is not None and isinstance(err, auth_error):
        return True
    text = f"{type(err).__name__} {err}".lower()
    return "auth" in text and "token" in text


def _unwrap(ray: Any, err: Exception, what: str) -> Exception:
    """A task's own typed error comes back wrapped in RayTaskError: raise the original."""
    cause = getattr(err, "cause", None)
    if isinstance(cause, ReidctlError):
        return cause
    return WorkerFailureError(f"{what} failed on a Ray worker: {cause!r}" if cause else str(err))


def _is_task_error(ray: Any, err: Exception) -> bool:
    return isinstance(err, ray.exceptions.RayTaskError)


def _bar(total: int, desc: str, progress: bool, initial: int = 0) -> Any:
    import sys

    from tqdm import tqdm

    return tqdm(
        total=total,
        initial=initial,
        unit="img",
        desc=desc,
        file=sys.stderr,
        disable=bar_disable(progress),
    )


# --------------------------------------------------------------------------- preprocess


def _prep_shard(
    entries: list[ManifestEntry], root: str, out_dir: str, settings: Any, skip_existing: bool
) -> Any:
    """Ray task body: one shard of tensors (runs in a worker process)."""
    import cv2

    from reidctl.preprocess.engine import process_shard

    # One task per core already; OpenCV's own threads would only compete with the others.
    cv2.setNumThreads(1)
    return process_shard(entries, root, out_dir, settings, skip_existing=skip_existing)


def _shard_ranges(n: int, size: int) -> list[tuple[int, int]]:
    return [(s, min(s + size, n)) for s in range(0, n, size)]


def _prep_marker(out: Path, i: int) -> Path:
    return out / SHARDS_DIR / f"prep-{i:06d}.json"


class RayPrepExecutor:
    """The tensor-writing step of :func:`reidctl.preprocess.engine.preprocess_dataset` as
    Ray tasks: ``shard_size`` images per task, a task whose worker dies retried by Ray up
    to ``max_retries`` times. Each finished shard leaves a marker in ``PREP/.shards/`` so a
    resumed run skips it (removed by :meth:`finish`, once ``meta.json`` is written)."""

    def __init__(
        self,
        address: str | None = None,
        shard_size: int = DEFAULT_PREP_SHARD,
        max_retries: int = 3,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT_S,
    ) -> None:
        if shard_size < 1 or max_retries < 0:
            raise InputError("shard_size must be >= 1 and max_retries >= 0")
        if not connect_timeout > 0:
            raise InputError(f"--connect-timeout must be positive, got {connect_timeout}")
        import_ray()
        self.address, self.shard_size, self.max_retries = address, shard_size, max_retries
        self.connect_timeout = connect_timeout

    def write_tensors(
        self,
        entries: Sequence[ManifestEntry],
        root: Path,
        out: Path,
        settings: Any,
        *,
        resume: bool = False,
        progress: bool = False,
    ) -> Any:
        from reidctl.preprocess.engine import ShardResult

        ray = import_ray()
        shards = _shard_ranges(len(entries), self.shard_size)
        with connect(self.address, connect_timeout=self.connect_timeout):
            # Connected first: a cluster that cannot be reached leaves nothing behind.
            if not resume:
                shutil.rmtree(out / SHARDS_DIR, ignore_errors=True)
            (out / SHARDS_DIR).mkdir(exist_ok=True)
            total = ShardResult()
            todo = []
            for i, (a, b) in enumerate(shards):
                done = _read_prep_marker(_prep_marker(out, i), entries[a:b]) if resume else None
                if done is None:
                    todo.append(i)
                else:
                    total.skipped += b - a
                    total.bad.extend(done)
            task = ray.remote(num_cpus=1, max_retries=self.max_retries)(_prep_shard)
            refs = {
                task.remote(
                    list(entries[a:b]), str(root.resolve()), str(out.resolve()), settings, resume
                ): i
                for i in todo
                for a, b in [shards[i]]
            }
            bar = _bar(len(entries), "preprocess (ray)", progress, initial=total.skipped)
            try:
                while refs:
                    ready, _ = ray.wait(list(refs), num_returns=1)
                    i = refs.pop(ready[0])
                    r = self._result(ray, ready[0], i, shards[i])
                    total.add(r)
                    a, b = shards[i]
                    write_json_atomic(
                        _prep_marker(out, i),
                        {
                            "first": entries[a].bin,
                            "last": entries[b - 1].bin,
                            "count": b - a,
                            "bad": [x.to_dict() for x in r.bad],
                        },
                    )
                    bar.update(b - a)
            finally:
                bar.close()
        return total

    def _result(self, ray: Any, ref: Any, i: int, shard: tuple[int, int]) -> Any:
        try:
            return ray.get(ref)
        except ray.exceptions.RayError as e:
            if _is_task_error(ray, e):
                raise _unwrap(ray, e, f"preprocess shard {i}") from None
            raise WorkerFailureError(
                f"preprocess shard {i} (images {shard[0]}..{shard[1] - 1}) failed after "
                f"{self.max_retries} retries: {str(e).splitlines()[0]}; re-run with --resume "
                "to keep the finished shards"
            ) from e

    def finish(self, out: Path) -> None:
        shutil.rmtree(out / SHARDS_DIR, ignore_errors=True)


def preprocess_ray(
    layout: str,
    root: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    spec: Any = None,
    splits: str | Sequence[str] = DEFAULT_SPLITS,
    dtype: str = "float32",
    flip: bool = False,
    address: str | None = None,
    shard_size: int = DEFAULT_PREP_SHARD,
    max_retries: int = 3,
    relative_info: bool = False,
    resume: bool = False,
    force: bool = False,
    skip_bad: bool = False,
    progress: bool = False,
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT_S,
    max_pixels: int | None = None,
) -> Any:
    """:func:`reidctl.preprocess.preprocess_dataset` with Ray tasks doing the tensors
    (:class:`RayPrepExecutor`).

    Same arguments and result (a ``PrepSummary``) and the same directory, byte for byte,
    as the single-machine run.
    """
    from reidctl.preprocess.engine import preprocess_dataset

    # Join a remote cluster before the output directory is touched: an unreachable address
    # leaves nothing behind. (A local Ray starts in write_tensors, after the input checks.)
    joined = (
        connect(address, connect_timeout=connect_timeout)
        if address is not None
        else contextlib.nullcontext()
    )
    with joined:
        return preprocess_dataset(
            layout,
            root,
            out_dir,
            spec=spec,
            splits=splits,
            dtype=dtype,
            flip=flip,
            relative_info=relative_info,
            resume=resume,
            force=force,
            skip_bad=skip_bad,
            progress=progress,
            executor=RayPrepExecutor(address, shard_size, max_retries, connect_timeout),
            **({} if max_pixels is None else {"max_pixels": max_pixels}),
        )


def _read_prep_marker(path: Path, shard: Sequence[ManifestEntry]) -> list[Any] | None:
    """The bad files of a finished shard, or ``None`` if the marker is absent or stale."""
    from reidctl.preprocess.engine import BadFile

    try:
        d = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if (d.get("first"), d.get("last"), d.get("count")) != (
        shard[0].bin,
        shard[-1].bin,
        len(shard),
    ):
        return None
    return [BadFile(b["source"], b["reason"]) for b in d.get("bad", [])]


# --------------------------------------------------------------------------- inference


class InferWorker:
    """Ray actor body: one runner, activated once, running shards of the manifest.

    ``data`` is the preprocessed set's directory, or a
    :class:`~reidctl.runners.image_source.StreamPlan` whose images the actor decodes itself
    (a decoding thread one chunk ahead of the runner).

    A :class:`ReidctlError` while loading the model (missing back end, wrong input shape)
    is kept and raised by every call, so the driver reports it instead of restarting the
    actor again and again.
    """

    def __init__(
        self,
        model_file: str,
        data: Any,
        runner_cls: Any,
        options: dict[str, Any],
        batch_size: int,
        camera: Any = None,
    ) -> None:
        from reidctl.runners.infer import check_input_matches, resolve_camera, single_input

        self.batch_size = batch_size
        self.camera = None
        self.error: ReidctlError | None = None
        self.runner = None
        self.prep: PrepSet | None = None
        self.plan = None
        try:
            if isinstance(data, str):
                self.prep = PrepSet.open(data)
                meta = self.prep.meta
            else:
                self.plan = data
                meta = data.meta
            self.runner = runner_cls(model_file, **options).activate()
            self.input = single_input(self.runner)
            check_input_matches(self.input, meta, model_file)
            source = self.prep if self.prep is not None else self.plan
            self.camera = resolve_camera(
                self.runner.input_specs(), camera, source.entries, source.root, model_file, meta
            )
        except ReidctlError as e:
            self.error = e

    def describe(self) -> dict[str, Any]:
        """pid, node, device and input specs of this worker (raises a load error)."""
        if self.error is not None:
            raise self.error
        import ray

        return {
            "pid": os.getpid(),
            "node": ray.get_runtime_context().get_node_id(),
            "device": self.runner.device_name(),
            "inputs": [s.to_dict() for s in self.runner.input_specs()],
        }

    def run_shard(
        self, start: int, stop: int
    ) -> tuple[dict[str, np.ndarray], list[float], list[Any]]:
        """Outputs of rows ``start:stop`` (of the manifest, or of the planned images: then
        of the good ones among them), the per-call latencies (s) and the bad images."""
        from reidctl.runners.image_source import ImageStream
        from reidctl.runners.infer import infer_entries, run_batches

        if self.error is not None:
            raise self.error
        before = len(self.runner.latencies_s)
        bad: list[Any] = []
        if self.plan is not None:
            part = self.plan.entries[start:stop]
            with ImageStream(
                self.plan, part, self.batch_size, workers=1, processes=False
            ) as stream:
                _, out = run_batches(
                    self.runner,
                    stream.batches(),
                    len(part),
                    input_name=self.input.name,
                    camera=self.camera,
                    root=self.plan.root,
                )
                bad = list(stream.bad)
        else:
            assert self.prep is not None
            out = infer_entries(
                self.runner,
                self.prep,
                self.prep.entries[start:stop],
                self.batch_size,
                input_name=self.input.name,
                camera=self.camera,
            )
        return out, list(self.runner.latencies_s[before:]), bad


def _prepare_results_dir(out_dir: Path, resume: bool, force: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"output {out_dir} exists and is not a directory")
    if not out_dir.is_dir():
        return
    names = {p.name for p in out_dir.iterdir()}
    interrupted = names == {SHARDS_DIR}
    if not names or (interrupted and resume):
        return
    if resume and is_result_dir(out_dir):
        raise OutputExistsError(
            f"{out_dir} holds a complete result directory: nothing to resume; use --force to "
            "run again"
        )
    if not force:
        raise OutputExistsError(
            f"{out_dir} exists and is not empty; pass --force to replace it"
            + (" or --resume to continue the interrupted run" if interrupted else "")
        )
    if not (interrupted or is_result_dir(out_dir)):
        raise OutputExistsError(
            f"{out_dir} is not a reidctl result directory; refusing to replace it even with "
            "--force: choose another -o"
        )
    shutil.rmtree(out_dir / SHARDS_DIR, ignore_errors=True)


def _remove_if_empty(path: Path) -> None:
    """Remove the directory ``path`` if it exists and holds nothing."""
    with contextlib.suppress(OSError):
        if path.is_dir() and not any(path.iterdir()):
            path.rmdir()


def _shard_path(out_dir: Path, i: int) -> Path:
    return out_dir / SHARDS_DIR / f"infer-{i:06d}.npz"


def _load_shard(path: Path, key: str) -> tuple[dict[str, np.ndarray], list[Any]] | None:
    """A persisted shard's outputs and bad images if its key (model, options, range)
    matches, else None."""
    from reidctl.preprocess.engine import BadFile

    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["__key__"]) != key:
                return None
            bad = json.loads(str(z["__bad__"])) if "__bad__" in z.files else []
            out = {k: z[k] for k in z.files if k not in ("__key__", "__bad__")}
            return out, [BadFile(b["source"], b["reason"]) for b in bad]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None


class RayExecutor:
    """The executor of :func:`reidctl.runners.infer.run_inference` on a pool of Ray actors.

    ``address``: see :func:`connect`. ``workers`` actors (default: the cluster's CPUs /
    ``cpus_per_worker``, or its GPUs / ``gpus_per_worker``, at most one per shard) each
    reserve ``cpus_per_worker`` CPUs and ``gpus_per_worker`` GPUs (Ray sets
    ``CUDA_VISIBLE_DEVICES``, so ``cuda:0`` is the worker's own GPU); a runner taking
    ``threads`` gets ``cpus_per_worker`` threads unless ``threads`` is given. A shard is
    ``shard_size`` rows (default ``8 * batch_size``, rounded up to a multiple of the batch
    size, so every batch holds the same rows as in one process). A shard whose worker dies
    is resubmitted up to ``max_retries`` times; with ``resume`` the shards persisted by an
    interrupted run (same model, back end, options, batch size) are not run again.
    """

    def __init__(
        self,
        address: str | None = None,
        workers: int | None = None,
        cpus_per_worker: float = 1,
        gpus_per_worker: float = 0,
        shard_size: int | None = None,
        max_retries: int = 3,
        resume: bool = False,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT_S,
    ) -> None:
        if (workers is not None and workers < 1) or cpus_per_worker <= 0 or gpus_per_worker < 0:
            raise InputError("--workers must be >= 1, cpus per worker > 0, --gpus-per-worker >= 0")
        if max_retries < 0:
            raise InputError(f"max_retries must be >= 0, got {max_retries}")
        if not connect_timeout > 0:
            raise InputError(f"--connect-timeout must be positive, got {connect_timeout}")
        self.connect_timeout = connect_timeout
        self.address, self.workers = address, workers
        self.cpus_per_worker, self.gpus_per_worker = cpus_per_worker, gpus_per_worker
        self.shard_size, self.max_retries, self.resume = shard_size, max_retries, resume

    def prepare_output(self, out_dir: Path, force: bool) -> None:
        _prepare_results_dir(out_dir, self.resume, force)

    def runner_options(self, cls: type, options: dict[str, Any]) -> dict[str, Any]:
        if "threads" in cls.accepted_options and "threads" not in options:
            return {**options, "threads": max(1, int(self.cpus_per_worker))}
        return options

    def run(self, job: Any) -> Any:
        from reidctl.runners.infer import InferOutcome
        from reidctl.specs import TensorSpec

        out_dir, batch_size = job.out_dir, job.batch_size
        plan = job.source
        entries = plan.entries if plan is not None else job.prep.entries
        size = self.shard_size or DEFAULT_INFER_SHARD_BATCHES * batch_size
        size = -(-size // batch_size) * batch_size  # whole batches: same batches as one process
        shards = _shard_ranges(len(entries), size)
        key_base = {
            "model_sha256": job.model_sha256,
            "backend": job.runner_cls.name,
            "options": {k: str(v) for k, v in sorted(job.options.items())},
            "batch_size": batch_size,
        }
        if plan is None:
            key_base["manifest_sha256"] = sha256_file(job.prep.path / MANIFEST_NAME)
        else:  # the images, their names and the preprocessing
            key_base["images"] = hashlib.sha256(
                json.dumps(
                    {"plan": [e.to_dict() for e in entries], "meta": plan.meta},
                    sort_keys=True,
                ).encode()
            ).hexdigest()
        if getattr(job, "camera", None) is not None:
            key_base["camera_offset"] = job.camera.offset
        keys = [json.dumps({**key_base, "rows": [a, b]}, sort_keys=True) for a, b in shards]
        results: dict[int, dict[str, np.ndarray]] = {}
        bad: dict[int, list[Any]] = {}
        if self.resume:
            for i in range(len(shards)):
                loaded = _load_shard(_shard_path(out_dir, i), keys[i])
                if loaded is not None:
                    results[i], bad[i] = loaded
        todo = [i for i in range(len(shards)) if i not in results]

        ray = import_ray()
        t_start = time.perf_counter()
        latencies: list[float] = []
        with connect(self.address, connect_timeout=self.connect_timeout):
            # Connected first: a cluster that cannot be reached leaves no .shards/ behind.
            created = not out_dir.exists()
            (out_dir / SHARDS_DIR).mkdir(parents=True, exist_ok=True)
            try:
                n_workers = self.workers or _default_workers(
                    ray, self.cpus_per_worker, self.gpus_per_worker
                )
                n_workers = max(1, min(n_workers, len(todo) or 1))
                actor_cls = ray.remote(
                    num_cpus=self.cpus_per_worker,
                    num_gpus=self.gpus_per_worker,
                    max_restarts=self.max_retries,
                    max_task_retries=0,  # the driver resubmits, preferring another worker
                )(InferWorker)
                # Absolute paths: the workers do not share the driver's working directory.
                data = plan if plan is not None else str(Path(job.prep.path).resolve())
                args = (str(Path(job.model_file).resolve()), data, job.runner_cls, job.options)
                camera = getattr(job, "camera", None)
                actors = [actor_cls.remote(*args, batch_size, camera) for _ in range(n_workers)]
                try:
                    described = _describe_all(ray, actors, self.max_retries)
                    setup_s = time.perf_counter() - t_start
                    t0 = time.perf_counter()
                    bar = _bar(
                        len(entries),
                        f"infer (ray, {n_workers} workers)",
                        job.progress,
                        initial=sum(b - a for i, (a, b) in enumerate(shards) if i in results),
                    )
                    try:
                        retried = _run_shards(
                            ray,
                            actors,
                            todo,
                            shards,
                            self.max_retries,
                            lambda i, out, lat, b: _persist(
                                out_dir, i, keys[i], out, lat, b, results, latencies, bad
                            ),
                            bar,
                        )
                    finally:
                        bar.close()
                    wall_s = time.perf_counter() - t0
                finally:
                    for a in actors:
                        ray.kill(a, no_restart=True)
            except BaseException:
                # Keep persisted shards for --resume; drop what only this run created empty.
                _remove_if_empty(out_dir / SHARDS_DIR)
                if created:
                    _remove_if_empty(out_dir)
                raise

        filled = [results[i] for i in range(len(shards)) if results[i]]
        outputs = (
            {name: np.concatenate([r[name] for r in filled]) for name in filled[0]}
            if filled
            else {}
        )
        all_bad = [b for i in range(len(shards)) for b in bad.get(i, [])]
        engine = {
            "name": "ray",
            "address": self.address,
            "workers": n_workers,
            "cpus_per_worker": self.cpus_per_worker,
            "gpus_per_worker": self.gpus_per_worker,
            "nodes": len({d["node"] for d in described}),
            "shards": len(shards),
            "shard_size": size,
            "resumed_shards": len(shards) - len(todo),
            "retried_shards": retried,
        }
        # The result directory replaces out_dir as a whole: .shards/ goes with the old one.
        return InferOutcome(
            outputs=outputs,
            device=described[0]["device"],
            inputs=[TensorSpec.from_dict(t) for t in described[0]["inputs"]],
            latencies_s=latencies,
            setup_s=setup_s,
            wall_s=wall_s,
            engine=engine,
            versions={"ray": ray.__version__},
            entries=None if plan is None else plan.kept(all_bad),
            bad=all_bad,
        )


def infer_ray(
    model_file: str | os.PathLike[str],
    prep_dir: str | os.PathLike[str] | None,
    out_dir: str | os.PathLike[str],
    backend: str | type | None = None,
    batch_size: int = 32,
    dump: str | None = None,
    index_base: int = 1,
    force: bool = False,
    *,
    feature: str | None = None,
    progress: bool = False,
    address: str | None = None,
    workers: int | None = None,
    cpus_per_worker: float = 1,
    gpus_per_worker: float = 0,
    shard_size: int | None = None,
    max_retries: int = 3,
    resume: bool = False,
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT_S,
    source: Any = None,
    **runner_options: Any,
) -> dict[str, Any]:
    """:func:`reidctl.runners.infer.run_inference` with a :class:`RayExecutor`.

    The arguments before ``*`` and ``runner_options`` are those of ``run_inference``
    (``backend`` may also be a :class:`~reidctl.runners.base.Runner` subclass: it travels
    to the workers, which never ran your ``register_runner`` call); the others configure
    the :class:`RayExecutor`. Returns the ``run.json`` dictionary, which adds ``engine``
    (ray, address, workers, nodes, shards, retried shards).
    """
    from reidctl.runners.infer import run_inference

    executor = RayExecutor(
        address,
        workers,
        cpus_per_worker,
        gpus_per_worker,
        shard_size,
        max_retries,
        resume,
        connect_timeout,
    )
    return run_inference(
        model_file,
        prep_dir,
        out_dir,
        backend,
        batch_size,
        dump,
        index_base,
        force,
        feature=feature,
        progress=progress,
        executor=executor,
        source=source,
        **runner_options,
    )


def _default_workers(ray: Any, cpus: float, gpus: float) -> int:
    res = ray.cluster_resources()
    n = int(res.get("CPU", 1) // cpus)
    if gpus > 0:
        n = min(n, int(res.get("GPU", 0) // gpus))
        if n < 1:
            raise InputError(
                f"--gpus-per-worker {gpus}: the Ray cluster has {res.get('GPU', 0)} GPUs"
            )
    return max(1, n)


def _describe_all(ray: Any, actors: list[Any], max_retries: int) -> list[dict[str, Any]]:
    """Wait for every actor to load its model; a load error is raised as the typed error."""
    out = []
    for a in actors:
        for attempt in range(max_retries + 1):
            try:
                out.append(ray.get(a.describe.remote()))
                break
            except ray.exceptions.RayError as e:
                if _is_task_error(ray, e):
                    raise _unwrap(ray, e, "loading the model") from None
                if attempt == max_retries:
                    raise WorkerFailureError(
                        f"a Ray worker died while loading the model {max_retries + 1} times: "
                        f"{str(e).splitlines()[0]}"
                    ) from e
    return out


def _persist(
    out_dir: Path,
    i: int,
    key: str,
    out: dict[str, np.ndarray],
    lat: list[float],
    bad_files: list[Any],
    results: dict[int, dict[str, np.ndarray]],
    latencies: list[float],
    bad: dict[int, list[Any]],
) -> None:
    extra = {"__key__": np.array(key)}
    if bad_files:
        extra["__bad__"] = np.array(json.dumps([b.to_dict() for b in bad_files]))
    write_npz_deterministic(_shard_path(out_dir, i), {**out, **extra})
    results[i] = out
    bad[i] = bad_files
    latencies.extend(lat)


def _run_shards(
    ray: Any,
    actors: list[Any],
    todo: list[int],
    shards: list[tuple[int, int]],
    max_retries: int,
    on_done: Callable[[int, dict[str, np.ndarray], list[float], list[Any]], None],
    bar: Any,
) -> int:
    """Feed shards to idle actors; resubmit a dead worker's shard. Returns shards retried."""
    queue = deque(todo)
    idle = deque(range(len(actors)))
    pending: dict[Any, tuple[int, int]] = {}
    failures: dict[int, list[int]] = {}
    retried: set[int] = set()
    while queue or pending:
        assigned = True
        while queue and idle and assigned:
            assigned = False
            for a in list(idle):
                # Prefer a shard that has not failed on this worker; a shard goes back to a
                # worker it failed on only when nothing else runs (else wait for another).
                i = next((s for s in queue if a not in failures.get(s, ())), None)
                if i is None and not pending:
                    i = queue[0]
                if i is None:
                    continue
                queue.remove(i)
                idle.remove(a)
                start, stop = shards[i]
                pending[actors[a].run_shard.remote(start, stop)] = (i, a)
                assigned = True
                if not queue:
                    break
        ready, _ = ray.wait(list(pending), num_returns=1)
        i, a = pending.pop(ready[0])
        try:
            out, lat, bad_files = ray.get(ready[0])
        except ray.exceptions.RayError as e:
            if _is_task_error(ray, e):
                raise _unwrap(ray, e, f"inference shard {i}") from None
            failures.setdefault(i, []).append(a)
            retried.add(i)
            if len(failures[i]) > max_retries:
                start, stop = shards[i]
                raise WorkerFailureError(
                    f"inference shard {i} (rows {start}..{stop - 1}) failed {len(failures[i])} "
                    f"times, on workers {failures[i]}: {str(e).splitlines()[0]}; finished "
                    "shards are kept: re-run with --resume"
                ) from e
            queue.appendleft(i)
            idle.append(a)  # Ray restarts the actor; calls queue until it is back
            continue
        on_done(i, out, lat, bad_files)
        idle.append(a)
        bar.update(shards[i][1] - shards[i][0])
    return len(retried)
