"""Records -> tensor files, manifest, info file and ``meta.json`` (see ``docs/formats.md``).

The pieces, usable on their own (a Ray engine calls :func:`process_shard` per shard):

* :func:`plan_entries` names each tensor (``<split>_<image stem>.bin``) and numbers it;
* :func:`prepare_output_dir` applies the ``--resume`` / ``--force`` rules and records the
  run's settings in a hidden state file, so a resumed run cannot mix settings;
* :func:`process_shard` decodes, transforms and writes a list of entries;
* :func:`finalize_output` writes ``manifest.jsonl``, ``prep.info`` and, last, ``meta.json``.

:func:`preprocess_dataset` runs them all; its ``executor`` writes the tensors
(:class:`LocalPool`, a process pool, by default; ``reidctl.scale.ray_engine.RayPrepExecutor``
as Ray tasks).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
import threading
import time
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

import numpy as np

from reidctl.artifacts import (
    INFO_NAME,
    MANIFEST_NAME,
    META_NAME,
    ManifestEntry,
    finalize_prep_set,
    read_json,
    tensor_complete,
    write_tensor,
)
from reidctl.artifacts.prep import TMP_SUFFIX
from reidctl.errors import BadDataError, FormatError, InputError, OutputExistsError
from reidctl.io import write_json_atomic
from reidctl.platform import usable_cores
from reidctl.preprocess.layouts.base import (
    DEFAULT_SPLITS,
    Layout,
    Record,
    layout_first_camera,
    scan_layout,
)
from reidctl.preprocess.transform import (
    DEFAULT_MAX_PIXELS,
    BadImageError,
    ImageTransform,
    TensorSettings,
    decode_image,
)
from reidctl.progress import bar_disable
from reidctl.specs import PreprocessSpec

#: hidden file holding an unfinished run's settings; removed once meta.json is written
STATE_NAME = ".reidctl-prep-state.json"


@dataclass(frozen=True)
class BadFile:
    """An image that could not be turned into a tensor, and why."""

    source: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"source": self.source, "reason": self.reason}


@dataclass
class ShardResult:
    """What :func:`process_shard` did: tensors written, skipped (already complete), bad."""

    written: int = 0
    skipped: int = 0
    bad: list[BadFile] = field(default_factory=list)

    def add(self, other: ShardResult) -> None:
        self.written += other.written
        self.skipped += other.skipped
        self.bad.extend(other.bad)


@dataclass
class PrepSummary:
    """The outcome of :func:`preprocess_dataset`. ``images_per_s`` counts written tensors."""

    out_dir: Path
    counts: dict[str, int]
    written: int
    skipped: int
    bad_files: list[BadFile]
    wall_s: float
    meta: dict[str, Any]

    @property
    def images_per_s(self) -> float:
        return self.written / self.wall_s if self.wall_s > 0 else 0.0


# --------------------------------------------------------------------------- planning


def bin_name(split: str, source: str) -> str:
    """The tensor file name of an image: split prefix + image stem, e.g.
    ``query_0004_c2s3_059152_00.bin``. The prefix keeps stems unique across splits."""
    return f"{split}_{PurePosixPath(source).stem}.bin"


def plan_entries(records: Sequence[Record]) -> list[ManifestEntry]:
    """Number ``records`` in order and name their tensors.

    Raises :class:`InputError` when two images would share a tensor name (e.g. ``a.jpg``
    and ``a.png`` in one split), since later stages key results by stem.
    """
    entries, seen = [], {}
    for i, r in enumerate(records):
        name = bin_name(r.split, r.source)
        if name in seen:
            raise InputError(
                f"{r.source} and {seen[name]} would both be stored as {name}; "
                "rename one of them (tensor names must be unique)"
            )
        seen[name] = r.source
        entries.append(ManifestEntry(i, name, r.source, r.pid, r.camid, r.split))
    return entries


# --------------------------------------------------------------------------- output dir


def run_state(
    layout: str, root: Path, splits: Sequence[str], settings: TensorSettings
) -> dict[str, Any]:
    """The settings a resumed run must share with the interrupted one."""
    return {
        "layout": layout,
        "root": str(root),
        "splits": list(splits),
        "preprocess": settings.spec.to_dict(),
        "flip": settings.flip,
        "dtype": settings.dtype,
    }


def _is_ours(name: str) -> bool:
    return name.endswith((".bin", TMP_SUFFIX)) or name in (
        META_NAME,
        MANIFEST_NAME,
        INFO_NAME,
        STATE_NAME,
    )


def _remove_temporaries(out_dir: Path) -> None:
    for p in out_dir.iterdir():
        if p.name.startswith(".") and p.name.endswith(TMP_SUFFIX) and p.is_file():
            p.unlink()


def prepare_output_dir(
    out_dir: str | os.PathLike[str],
    state: dict[str, Any],
    *,
    resume: bool = False,
    force: bool = False,
) -> Path:
    """Make ``out_dir`` ready for a run with ``state`` (see :func:`run_state`).

    An empty or missing directory is used as is. A non-empty one is refused unless
    ``resume`` (the settings must match those of the earlier run, read from ``meta.json`` or
    the state file; complete tensors are then kept) or ``force`` (every tensor, temporary and
    artefact file of an earlier run is deleted first; other files are left alone).
    Leftover temporary files are removed in both cases. Returns the absolute directory.
    """
    if resume and force:
        raise InputError("give either --resume or --force, not both")
    out = Path(out_dir).expanduser().resolve()
    if out.exists() and not out.is_dir():
        raise InputError(f"output {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        if force:
            for p in out.iterdir():
                if p.is_file() and _is_ours(p.name):
                    p.unlink()
        elif resume:
            _check_resumable(out, state)
            _remove_temporaries(out)
        else:
            raise OutputExistsError(
                f"output directory {out} is not empty; use --resume to continue an interrupted "
                "run, --force to overwrite it, or choose another -o"
            )
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"cannot create output directory {out}: {e}") from e
    write_json_atomic(out / STATE_NAME, state)
    return out


def _check_resumable(out: Path, state: dict[str, Any]) -> None:
    earlier = None
    for name in (STATE_NAME, META_NAME):
        if (out / name).is_file():
            d = read_json(out / name, "preprocessing state")
            earlier = {k: d.get(k) for k in state}
            break
    if earlier is None:
        foreign = sorted(p.name for p in out.iterdir() if not _is_ours(p.name))
        if foreign:
            raise OutputExistsError(
                f"cannot resume in {out}: it holds files preprocess does not write "
                f"({', '.join(foreign[:5])}); use --force or choose another -o"
            )
        return  # only tensors left: nothing to compare, sizes are checked per tensor
    diff = sorted(k for k in state if earlier.get(k) != state[k])
    if diff:
        raise InputError(
            f"cannot resume in {out}: the earlier run used other settings ({', '.join(diff)}: "
            f"{', '.join(repr(earlier.get(k)) for k in diff)}); repeat them or use --force"
        )


# --------------------------------------------------------------------------- tensors


is_complete = tensor_complete


def process_shard(
    entries: Iterable[ManifestEntry],
    root: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    settings: TensorSettings,
    *,
    skip_existing: bool = False,
    transform: ImageTransform | None = None,
) -> ShardResult:
    """Write the tensor of every entry: ``root/entry.source`` -> ``out_dir/entry.bin``.

    Each tensor goes to a temporary name and is renamed when complete. A file that cannot be
    read or decoded is recorded in the result (with the reason) and the rest carry on. With
    ``skip_existing`` a tensor already complete (right size) is left alone. ``out_dir``
    must exist. Safe to call from several processes on disjoint shards.
    """
    root, out_dir = Path(root), Path(out_dir)
    transform = transform or ImageTransform(settings)
    nbytes = settings.nbytes
    buf = None
    result = ShardResult()
    for e in entries:
        target = out_dir / e.bin
        if skip_existing and is_complete(target, nbytes):
            result.skipped += 1
            continue
        got = load_tensor(root, e, transform, buf)
        if isinstance(got, BadFile):
            result.bad.append(got)
            continue
        buf = got
        write_tensor(out_dir, e, buf.data)
        result.written += 1
    return result


def load_tensor(
    root: Path, entry: ManifestEntry, transform: ImageTransform, out: np.ndarray | None = None
) -> np.ndarray | BadFile:
    """The tensor of ``root/entry.source`` (``(C, H, W)``, into ``out`` when given), or a
    :class:`BadFile` saying why the image cannot be read or decoded.

    The one per-image step of every preprocessing path (tensor files and streaming).
    """
    try:
        with open(root / entry.source, "rb") as f:
            data = f.read()
        return transform(decode_image(data, entry.source, transform.settings.max_pixels), out)
    except OSError as err:
        return BadFile(entry.source, f"cannot read: {err.strerror or err}")
    except BadImageError as err:
        return BadFile(entry.source, str(err).split(": ", 1)[-1])


_WORKER: dict[str, Any] = {}


def _init_worker() -> None:
    import cv2

    # one process per core already; OpenCV's own threads would only compete with them
    cv2.setNumThreads(1)


def _worker_task(args: tuple[list[ManifestEntry], str, str, TensorSettings, bool]) -> ShardResult:
    entries, root, out_dir, settings, skip_existing = args
    if _WORKER.get("settings") != settings:
        _WORKER["settings"] = settings
        _WORKER["transform"] = ImageTransform(settings)
    return process_shard(
        entries,
        root,
        out_dir,
        settings,
        skip_existing=skip_existing,
        transform=_WORKER["transform"],
    )


def _start_method() -> str:
    """``fork`` (cheapest: workers start in milliseconds) unless threads other than tqdm's
    idle monitor run, since a thread holding a lock at fork time can deadlock the child
    (e.g. inside a Ray worker, or OpenCV's own worker threads once it has run a parallel
    resize in this process); then ``spawn``. Native threads count too (``/proc/self/task``)."""
    if sys.platform != "linux":
        return "spawn"
    others = [
        t
        for t in threading.enumerate()
        if t is not threading.main_thread() and type(t).__name__ != "TMonitor"
    ]
    monitors = threading.active_count() - 1 - len(others)
    try:
        os_threads = len(os.listdir("/proc/self/task"))
    except OSError:
        os_threads = 1 + len(others) + monitors
    return "fork" if not others and os_threads <= 1 + monitors else "spawn"


def default_workers() -> int:
    """The cores this process may use."""
    return usable_cores()


def _chunks(items: Sequence[ManifestEntry], size: int) -> list[list[ManifestEntry]]:
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


def write_tensors(
    entries: Sequence[ManifestEntry],
    root: Path,
    out_dir: Path,
    settings: TensorSettings,
    *,
    workers: int | None = None,
    skip_existing: bool = False,
    progress: bool = False,
) -> ShardResult:
    """:func:`process_shard` over ``entries`` with a pool of ``workers`` processes.

    ``workers`` defaults to every core; 1 runs in this process. Entries go to the workers in
    chunks, so the per-image cost is the work itself. ``progress`` shows a tqdm bar on stderr.
    """
    from tqdm import tqdm

    workers = default_workers() if workers is None else workers
    if workers < 1:
        raise InputError(f"--workers must be at least 1, got {workers}")
    total = ShardResult()
    todo = list(entries)
    if skip_existing:
        # cheap stat() here keeps complete tensors out of the pool's queue
        todo = [e for e in entries if not is_complete(out_dir / e.bin, settings.nbytes)]
        total.skipped = len(entries) - len(todo)
    workers = min(workers, max(1, len(todo) // 32))
    chunk = max(8, min(256, len(todo) // (workers * 8) or 1))
    tasks = [(c, str(root), str(out_dir), settings, False) for c in _chunks(todo, chunk)]
    bar = None
    try:
        if workers == 1:
            bar = tqdm(
                total=len(entries),
                initial=total.skipped,
                unit="img",
                file=sys.stderr,
                disable=bar_disable(progress),
                desc="preprocess",
            )
            transform = ImageTransform(settings)
            for c, *_ in tasks:
                r = process_shard(c, root, out_dir, settings, transform=transform)
                total.add(r)
                bar.update(len(c))
            return total
        with mp.get_context(_start_method()).Pool(workers, initializer=_init_worker) as pool:
            bar = tqdm(
                total=len(entries),
                initial=total.skipped,
                unit="img",
                file=sys.stderr,
                disable=bar_disable(progress),
                desc="preprocess",
            )
            for r in pool.imap_unordered(_worker_task, tasks):
                total.add(r)
                bar.update(r.written + len(r.bad))
        return total
    finally:
        if bar is not None:
            bar.close()


class PrepExecutor(Protocol):
    """Writes the tensors of a preprocessing run (a process pool, Ray tasks, ...)."""

    def write_tensors(
        self,
        entries: Sequence[ManifestEntry],
        root: Path,
        out: Path,
        settings: TensorSettings,
        *,
        resume: bool = False,
        progress: bool = False,
    ) -> ShardResult:
        """:func:`process_shard` over ``entries``; with ``resume`` complete tensors stay."""

    def finish(self, out: Path) -> None:
        """Clean up once ``meta.json`` is written."""


@dataclass(frozen=True)
class LocalPool:
    """:func:`write_tensors` with ``workers`` processes on this machine (default: every core)."""

    workers: int | None = None

    def write_tensors(
        self,
        entries: Sequence[ManifestEntry],
        root: Path,
        out: Path,
        settings: TensorSettings,
        *,
        resume: bool = False,
        progress: bool = False,
    ) -> ShardResult:
        return write_tensors(
            entries,
            root,
            out,
            settings,
            workers=self.workers,
            skip_existing=resume,
            progress=progress,
        )

    def finish(self, out: Path) -> None:
        return None


# --------------------------------------------------------------------------- finishing


def info_lines(
    entries: Sequence[ManifestEntry], out_dir: Path, width: int, height: int, relative: bool
) -> str:
    """The Ascend benchmark tool's info file: ``index path width height`` per tensor."""
    base = "" if relative else f"{out_dir}{os.sep}"
    return "".join(f"{e.index} {base}{e.bin} {width} {height}\n" for e in entries)


def finalize_output(
    out_dir: Path,
    entries: Sequence[ManifestEntry],
    *,
    layout: str,
    root: Path,
    splits: Sequence[str],
    settings: TensorSettings,
    bad_files: Sequence[BadFile] = (),
    dropped: dict[str, dict[str, int]] | None = None,
    relative_info: bool = False,
) -> dict[str, Any]:
    """Write ``manifest.jsonl``, ``prep.info`` and, last, ``meta.json``; return the meta.

    ``entries`` are the tensors kept (bad files already removed); they are renumbered
    0..N-1 in order. Tensor files of earlier runs that are not among them are deleted, so
    the directory holds exactly what the manifest lists. Checks every tensor is complete.
    """
    entries = [replace(e, index=i) for i, e in enumerate(entries)]
    nbytes = settings.nbytes
    missing = [e.bin for e in entries if not is_complete(out_dir / e.bin, nbytes)]
    if missing:
        raise FormatError(
            f"{len(missing)} tensors missing or incomplete in {out_dir} (e.g. {missing[0]}); "
            "re-run with --resume"
        )
    keep = {e.bin for e in entries}
    for p in out_dir.glob("*.bin"):
        if p.name not in keep:
            p.unlink()
    spec = settings.spec
    counts = {s: 0 for s in splits}
    for e in entries:
        counts[e.split] += 1
    meta = {
        "layout": layout,
        "first_camera": layout_first_camera(layout),
        "root": str(root),
        "splits": list(splits),
        "preprocess": spec.to_dict(),
        "flip": settings.flip,
        "dtype": settings.dtype,
        "byte_order": "little",
        "shape": list(settings.shape),
        "num_tensors": len(entries),
        "counts": counts,
        "dropped": dropped or {},
        "bad_files": sorted((b.to_dict() for b in bad_files), key=lambda d: d["source"]),
        "info": {"file": INFO_NAME, "relative": relative_info},
    }
    if not relative_info and any(c.isspace() for c in str(out_dir)):
        # the info file's four fields are separated by spaces (the vendor tool's format)
        warnings.warn(
            f"the output directory {out_dir} contains whitespace, which would split the "
            f"absolute paths of {INFO_NAME}'s space-separated fields: writing paths relative "
            "to it instead (as --relative-info does)",
            stacklevel=2,
        )
        relative_info = True
    bad_names = [e.bin for e in entries if any(c.isspace() for c in e.bin)]
    if bad_names:
        warnings.warn(
            f"{len(bad_names)} tensor names contain whitespace (e.g. {bad_names[0]!r}, from "
            f"the image file name): their {INFO_NAME} lines have more than four fields; "
            "manifest.jsonl is unaffected",
            stacklevel=2,
        )
    meta["info"]["relative"] = relative_info
    info = info_lines(entries, out_dir, spec.width, spec.height, relative_info)
    prep = finalize_prep_set(out_dir, entries, meta, info)
    (out_dir / STATE_NAME).unlink(missing_ok=True)
    return prep.meta


def format_bad_files(bad: Sequence[BadFile], root: Path, limit: int = 20) -> str:
    lines = [f"  {root / b.source}: {b.reason}" for b in bad[:limit]]
    if len(bad) > limit:
        lines.append(f"  ... and {len(bad) - limit} more")
    return "\n".join(lines)


# --------------------------------------------------------------------------- all together


def conclude_preprocess(
    out: Path,
    entries: Sequence[ManifestEntry],
    bad: Sequence[BadFile],
    scan: Any,
    settings: TensorSettings,
    skip_bad: bool,
    relative_info: bool,
) -> tuple[list[BadFile], dict[str, Any]]:
    """Fail on unreadable images (unless ``skip_bad``), else write manifest, info and meta.

    Shared by every engine that wrote the tensors. Returns the sorted bad files and the
    ``meta.json`` dictionary.
    """
    bad = sorted(bad, key=lambda b: b.source)
    if bad and not skip_bad:
        raise BadDataError(
            f"{len(bad)} of {len(entries)} images could not be read; the other tensors are in "
            f"{out} but the set is incomplete (no meta.json). Fix or remove these files and "
            "re-run with --resume, or add --skip-bad --resume to leave them out:\n"
            + format_bad_files(bad, scan.root)
        )
    bad_sources = {b.source for b in bad}
    meta = finalize_output(
        out,
        [e for e in entries if e.source not in bad_sources],
        layout=scan.layout,
        root=scan.root,
        splits=scan.splits,
        settings=settings,
        bad_files=bad,
        dropped=scan.dropped,
        relative_info=relative_info,
    )
    return bad, meta


def preprocess_dataset(
    layout: str | Layout,
    root: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    spec: PreprocessSpec | None = None,
    splits: str | Sequence[str] = DEFAULT_SPLITS,
    dtype: str = "float32",
    flip: bool = False,
    workers: int | None = None,
    relative_info: bool = False,
    resume: bool = False,
    force: bool = False,
    skip_bad: bool = False,
    progress: bool = False,
    executor: PrepExecutor | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> PrepSummary:
    """Turn a dataset into a preprocessed set in ``out_dir`` (see ``docs/formats.md``).

    ``executor`` writes the tensors (default :class:`LocalPool` with ``workers`` processes).

    ``spec`` defaults to :class:`PreprocessSpec` () (256x128, bilinear, RGB, ImageNet
    mean/std). Bad images are reported by path: by default every other image is still
    processed and then :class:`BadDataError` lists them (``meta.json`` is not written, so
    the set stays incomplete: fix the files and ``resume``); with ``skip_bad`` they are
    left out and listed in ``meta.json``. Images of more than ``max_pixels`` pixels (width x
    height, read from the header before decoding) are bad images too. Raises
    :class:`InputError` for a bad layout, root, name or output directory.
    """
    settings = TensorSettings(spec or PreprocessSpec(), dtype, flip, max_pixels)
    scan = scan_layout(layout, root, splits)
    if not scan.records:
        raise InputError(f"no images found for splits {', '.join(scan.splits)} under {scan.root}")
    entries = plan_entries(scan.records)
    state = run_state(scan.layout, scan.root, scan.splits, settings)
    out = prepare_output_dir(out_dir, state, resume=resume, force=force)
    executor = executor or LocalPool(workers)
    t0 = time.perf_counter()
    result = executor.write_tensors(
        entries, scan.root, out, settings, resume=resume, progress=progress
    )
    wall = time.perf_counter() - t0
    bad, meta = conclude_preprocess(
        out, entries, result.bad, scan, settings, skip_bad, relative_info
    )
    executor.finish(out)
    return PrepSummary(out, meta["counts"], result.written, result.skipped, bad, wall, meta)
