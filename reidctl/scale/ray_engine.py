"""Preprocessing and inference on a Ray cluster, with the single-machine artefacts as output.

* :func:`preprocess_ray` splits the planned tensors into shards and runs
  :func:`reidctl.preprocess.engine.process_shard` on each as a Ray task; the driver writes
  the manifest, ``prep.info`` and ``meta.json`` exactly as ``reidctl preprocess`` does.
* :func:`infer_ray` starts a pool of Ray actors, each holding one activated runner for its
  whole life (the model loads once per worker), and hands them shards of the manifest; the
  driver persists every finished shard under ``RESULTS/.shards/`` and writes the result
  directory of ``reidctl infer`` at the end, rows in manifest order. Shard boundaries fall
  on multiples of the batch size, so every batch holds the same rows as in a single-process
  run and the CPU ``ort`` features are byte-identical.

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

from reidctl.artifacts import MANIFEST_NAME, ManifestEntry, read_manifest, read_prep_meta
from reidctl.errors import BadDataError, FormatError, InputError, OutputExistsError, ReidctlError
from reidctl.io import sha256_file, write_json_atomic
from reidctl.scale._optional import import_ray
from reidctl.scale.faiss_index import write_npz_deterministic

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


def connect(
    address: str | None = None,
    *,
    num_cpus: int | None = None,
    num_gpus: int | None = None,
    object_store_memory: int | None = None,
) -> RayConnection:
    """Connect to Ray: reuse this process's connection, join ``address``, or start locally.

    ``address``: ``None`` starts a local single-node Ray on 127.0.0.1 with ``num_cpus`` /
    ``num_gpus`` / ``object_store_memory`` (bytes; Ray's defaults when ``None``) and no
    dashboard; ``"auto"`` joins the cluster this machine belongs to (``ray start`` run
    here); ``"HOST:PORT"`` joins that head node's GCS. An existing connection
    (``ray.init`` called by the caller) is used as is.
    """
    ray = import_ray()
    if ray.is_initialized():
        return RayConnection(False, address)
    try:
        if address is None:
            ray.init(
                num_cpus=num_cpus,
                num_gpus=num_gpus,
                object_store_memory=object_store_memory,
                include_dashboard=False,
                logging_level=logging.WARNING,
                _node_ip_address="127.0.0.1",
            )
        else:
            ray.init(address=address, logging_level=logging.WARNING)
    except (ConnectionError, RuntimeError, ValueError) as e:
        where = "a local Ray instance" if address is None else f"the Ray cluster at {address!r}"
        raise InputError(
            f"cannot connect to {where}: {str(e).splitlines()[0] if str(e) else e}; start the "
            "head with `ray start --head` and pass its address (HOST:PORT) or `auto`"
        ) from e
    return RayConnection(address is None, address)


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
        total=total, initial=initial, unit="img", desc=desc, file=sys.stderr, disable=not progress
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
) -> Any:
    """:func:`reidctl.preprocess.preprocess_dataset` with Ray tasks doing the tensors.

    Same arguments and result (a ``PrepSummary``) and the same directory, byte for byte,
    as the single-machine run. ``shard_size`` images go to one task; a task whose worker
    dies is retried by Ray up to ``max_retries`` times. Each finished shard leaves a marker
    in ``PREP/.shards/`` so ``resume`` skips it (removed once ``meta.json`` is written).
    """
    from reidctl.preprocess.engine import (
        PrepSummary,
        ShardResult,
        conclude_preprocess,
        plan_entries,
        prepare_output_dir,
        run_state,
    )
    from reidctl.preprocess.layouts.base import scan_layout
    from reidctl.preprocess.transform import TensorSettings
    from reidctl.specs import PreprocessSpec

    if shard_size < 1 or max_retries < 0:
        raise InputError("shard_size must be >= 1 and max_retries >= 0")
    ray = import_ray()
    settings = TensorSettings(spec or PreprocessSpec(), dtype, flip)
    scan = scan_layout(layout, root, splits)
    if not scan.records:
        raise InputError(f"no images found for splits {', '.join(scan.splits)} under {scan.root}")
    entries = plan_entries(scan.records)
    out = prepare_output_dir(
        out_dir,
        run_state(scan.layout, scan.root, scan.splits, settings),
        resume=resume,
        force=force,
    )
    shards = _shard_ranges(len(entries), shard_size)
    if not resume:
        shutil.rmtree(out / SHARDS_DIR, ignore_errors=True)
    (out / SHARDS_DIR).mkdir(exist_ok=True)

    total, bad = ShardResult(), []
    todo = []
    for i, (a, b) in enumerate(shards):
        done = _read_prep_marker(_prep_marker(out, i), entries[a:b]) if resume else None
        if done is None:
            todo.append(i)
        else:
            total.skipped += b - a
            bad.extend(done)
    t0 = time.perf_counter()
    with connect(address):
        task = ray.remote(num_cpus=1, max_retries=max_retries)(_prep_shard)
        refs = {
            task.remote(entries[a:b], str(scan.root), str(out), settings, resume): i
            for i in todo
            for a, b in [shards[i]]
        }
        bar = _bar(len(entries), "preprocess (ray)", progress, initial=total.skipped)
        try:
            while refs:
                ready, _ = ray.wait(list(refs), num_returns=1)
                i = refs.pop(ready[0])
                try:
                    r = ray.get(ready[0])
                except ray.exceptions.RayError as e:
                    if _is_task_error(ray, e):
                        raise _unwrap(ray, e, f"preprocess shard {i}") from None
                    raise WorkerFailureError(
                        f"preprocess shard {i} (images {shards[i][0]}..{shards[i][1] - 1}) "
                        f"failed after {max_retries} retries: {str(e).splitlines()[0]}; "
                        "re-run with --resume to keep the finished shards"
                    ) from e
                total.add(r)
                bad.extend(r.bad)
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
    wall = time.perf_counter() - t0
    bad, meta = conclude_preprocess(out, entries, bad, scan, settings, skip_bad, relative_info)
    shutil.rmtree(out / SHARDS_DIR, ignore_errors=True)
    written = total.written
    return PrepSummary(out, meta["counts"], written, total.skipped, bad, wall, meta)


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

    A :class:`ReidctlError` while loading the model (missing back end, wrong input shape)
    is kept and raised by every call, so the driver reports it instead of restarting the
    actor again and again.
    """

    def __init__(
        self,
        model_file: str,
        prep_dir: str,
        runner_cls: Any,
        options: dict[str, Any],
        batch_size: int,
    ) -> None:
        from reidctl.runners.infer import check_input_matches, single_input

        self.prep_dir, self.batch_size = prep_dir, batch_size
        self.error: ReidctlError | None = None
        self.runner = None
        try:
            self.meta = read_prep_meta(prep_dir)
            self.entries = read_manifest(prep_dir)
            self.runner = runner_cls(model_file, **options).activate()
            self.input = single_input(self.runner)
            check_input_matches(self.input, self.meta, model_file)
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

    def run_shard(self, start: int, stop: int) -> tuple[dict[str, np.ndarray], list[float]]:
        """Outputs of manifest rows ``start:stop`` and the per-call latencies (s)."""
        from reidctl.runners.infer import infer_entries

        if self.error is not None:
            raise self.error
        before = len(self.runner.latencies_s)
        out = infer_entries(
            self.runner,
            self.prep_dir,
            self.entries[start:stop],
            self.batch_size,
            dtype=str(self.meta.get("dtype", "float32")),
            shape=self.meta["shape"],
            input_name=self.input.name,
        )
        return out, list(self.runner.latencies_s[before:])


def _prepare_results_dir(out_dir: Path, resume: bool, force: bool) -> None:
    from reidctl.runners.infer import is_result_dir

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


def _shard_path(out_dir: Path, i: int) -> Path:
    return out_dir / SHARDS_DIR / f"infer-{i:06d}.npz"


def _load_shard(path: Path, key: str) -> dict[str, np.ndarray] | None:
    """A persisted shard's outputs if its key (model, options, range) matches, else None."""
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["__key__"]) != key:
                return None
            return {k: z[k] for k in z.files if k != "__key__"}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None


def infer_ray(
    model_file: str | os.PathLike[str],
    prep_dir: str | os.PathLike[str],
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
    **runner_options: Any,
) -> dict[str, Any]:
    """:func:`reidctl.runners.infer.run_inference` on a pool of Ray actors.

    The arguments before ``*`` and ``runner_options`` are those of ``run_inference``;
    ``backend`` may also be a :class:`~reidctl.runners.base.Runner` subclass (it travels
    to the workers, which never ran your ``register_runner`` call). ``address``: see
    :func:`connect`. ``workers`` actors (default: the cluster's CPUs / ``cpus_per_worker``,
    or its GPUs / ``gpus_per_worker``, at most one per shard) each reserve
    ``cpus_per_worker`` CPUs and ``gpus_per_worker`` GPUs (Ray sets
    ``CUDA_VISIBLE_DEVICES``, so ``cuda:0`` is the worker's own GPU); a runner taking
    ``threads`` gets ``cpus_per_worker`` threads unless ``threads`` is given. A shard is
    ``shard_size`` rows (default ``8 * batch_size``, rounded up to a multiple of
    ``batch_size``). Returns the ``run.json`` dictionary, which adds ``engine`` (ray,
    address, workers, nodes, shards, retried shards).
    """
    from reidctl import __version__
    from reidctl.artifacts import RESULT_FORMAT, tool_info
    from reidctl.runners.base import Runner
    from reidctl.runners.facts import derive_facts, output_specs, sidecar_or_none, with_feature
    from reidctl.runners.infer import (
        check_options,
        load_inference_inputs,
        runner_class,
        write_results,
    )

    model_file, prep_dir, out_dir = Path(model_file), Path(prep_dir), Path(out_dir)
    if (workers is not None and workers < 1) or cpus_per_worker <= 0 or gpus_per_worker < 0:
        raise InputError("--workers must be >= 1, cpus per worker > 0, --gpus-per-worker >= 0")
    if max_retries < 0:
        raise InputError(f"max_retries must be >= 0, got {max_retries}")
    meta, entries = load_inference_inputs(model_file, prep_dir, dump, batch_size)
    _prepare_results_dir(out_dir, resume, force)
    if isinstance(backend, type) and issubclass(backend, Runner):
        cls = backend
    else:
        cls = runner_class(model_file, backend)
    options = check_options(cls, runner_options)
    if "threads" in cls.accepted_options and "threads" not in options:
        options["threads"] = max(1, int(cpus_per_worker))
    sidecar = sidecar_or_none(model_file)

    size = shard_size or DEFAULT_INFER_SHARD_BATCHES * batch_size
    size = -(-size // batch_size) * batch_size  # whole batches: same batches as one process
    shards = _shard_ranges(len(entries), size)
    key_base = {
        "model_sha256": sha256_file(model_file),
        "backend": cls.name,
        "options": {k: str(v) for k, v in sorted(options.items())},
        "batch_size": batch_size,
        "manifest_sha256": sha256_file(prep_dir / MANIFEST_NAME),
    }
    keys = [json.dumps({**key_base, "rows": [a, b]}, sort_keys=True) for a, b in shards]
    results: dict[int, dict[str, np.ndarray]] = {}
    if resume:
        for i in range(len(shards)):
            loaded = _load_shard(_shard_path(out_dir, i), keys[i])
            if loaded is not None:
                results[i] = loaded
    (out_dir / SHARDS_DIR).mkdir(parents=True, exist_ok=True)
    todo = [i for i in range(len(shards)) if i not in results]

    ray = import_ray()
    t_start = time.perf_counter()
    latencies: list[float] = []
    with connect(address):
        n_workers = workers or _default_workers(ray, cpus_per_worker, gpus_per_worker)
        n_workers = max(1, min(n_workers, len(todo) or 1))
        actor_cls = ray.remote(
            num_cpus=cpus_per_worker,
            num_gpus=gpus_per_worker,
            max_restarts=max_retries,
            max_task_retries=0,  # the driver resubmits, preferring another worker
        )(InferWorker)
        actors = [
            actor_cls.remote(str(model_file), str(prep_dir), cls, options, batch_size)
            for _ in range(n_workers)
        ]
        try:
            described = _describe_all(ray, actors, max_retries)
            setup_s = time.perf_counter() - t_start
            t0 = time.perf_counter()
            bar = _bar(
                len(entries),
                f"infer (ray, {n_workers} workers)",
                progress,
                initial=sum(b - a for i, (a, b) in enumerate(shards) if i in results),
            )
            try:
                retried = _run_shards(
                    ray,
                    actors,
                    todo,
                    shards,
                    max_retries,
                    lambda i, out, lat: _persist(out_dir, i, keys[i], out, lat, results, latencies),
                    bar,
                )
            finally:
                bar.close()
            wall_s = time.perf_counter() - t0
        finally:
            for a in actors:
                ray.kill(a, no_restart=True)

    outputs = {
        name: np.concatenate([results[i][name] for i in range(len(shards))]) for name in results[0]
    }
    for name in outputs:
        if not name or "/" in name or "\\" in name or name in (".", ".."):
            raise FormatError(f"output name {name!r} cannot be used as a file name")
    from reidctl.specs import TensorSpec

    inputs = [TensorSpec.from_dict(t) for t in described[0]["inputs"]]
    facts = sidecar or derive_facts(
        model_file, inputs, output_specs(outputs), meta.get("preprocess"), options.get("model")
    )
    facts = with_feature(facts, feature)
    run = {
        "format": RESULT_FORMAT,
        "backend": cls.name,
        "device": described[0]["device"],
        "options": {k: v for k, v in sorted(options.items())},
        "model_file": str(model_file.resolve()),
        "model_sha256": key_base["model_sha256"],
        "prep_dir": str(prep_dir.resolve()),
        "batch_size": batch_size,
        "num_images": len(entries),
        "wall_s": round(wall_s, 4),
        "setup_s": round(setup_s, 4),
        "images_per_s": round(len(entries) / wall_s, 2) if wall_s > 0 else None,
        "mean_batch_latency_ms": round(1000 * float(np.mean(latencies)), 3) if latencies else None,
        "outputs": list(outputs),
        "feature": facts["feature"],
        "dump": None if dump is None else {"format": dump, "index_base": index_base},
        "versions": {
            "reidctl": __version__,
            "numpy": np.__version__,
            "ray": ray.__version__,
            **cls.versions(),
        },
        "engine": {
            "name": "ray",
            "address": address,
            "workers": n_workers,
            "cpus_per_worker": cpus_per_worker,
            "gpus_per_worker": gpus_per_worker,
            "nodes": len({d["node"] for d in described}),
            "shards": len(shards),
            "shard_size": size,
            "resumed_shards": len(shards) - len(todo),
            "retried_shards": retried,
        },
        "tool": tool_info(),
    }
    # write_results swaps the staged directory in; the old one (with .shards/) goes away.
    write_results(out_dir, prep_dir, entries, outputs, facts, run, dump, index_base)
    return run


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
    results: dict[int, dict[str, np.ndarray]],
    latencies: list[float],
) -> None:
    write_npz_deterministic(_shard_path(out_dir, i), {**out, "__key__": np.array(key)})
    results[i] = out
    latencies.extend(lat)


def _run_shards(
    ray: Any,
    actors: list[Any],
    todo: list[int],
    shards: list[tuple[int, int]],
    max_retries: int,
    on_done: Callable[[int, dict[str, np.ndarray], list[float]], None],
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
            out, lat = ray.get(ready[0])
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
        on_done(i, out, lat)
        idle.append(a)
        bar.update(shards[i][1] - shards[i][0])
    return len(retried)
