"""Inference straight from images: decode and preprocess in workers, feed the runner batches.

``reidctl infer MODEL --images ROOT --layout NAME`` writes the result directory that
``reidctl preprocess`` followed by ``reidctl infer`` writes, without the tensor files in
between. The pieces:

* :class:`ImageSource` - what to read (layout, root, splits) and how to preprocess it
  (explicit :class:`PreprocessSpec`, else the model's facts: sidecar or ONNX metadata);
  :meth:`ImageSource.plan` scans the layout and names the rows exactly as ``preprocess``
  does (:func:`reidctl.preprocess.engine.plan_entries`), giving a :class:`StreamPlan`;
* :class:`ImageStream` - decoding in worker processes (forked, writing tensors straight
  into a shared ring of batch slots) or, where forking is unsafe (threads running, e.g. in
  a Ray actor), in threads; chunks come back in order through a bounded window, so at most
  ``slots`` chunks of tensors exist at any time; :meth:`ImageStream.batches` yields
  ``(entries, tensors)`` batches of ``batch_size`` good images, the same rows
  ``PrepSet.read_batch`` gives for the same batch of a preprocessed set.

Every tensor is made by :func:`reidctl.preprocess.engine.load_tensor` (the function that
writes ``preprocess``'s tensor files), so the bytes are the same. Bad images follow
``preprocess``'s rules: listed by path, or left out with ``skip_bad``.
"""

from __future__ import annotations

import mmap
import multiprocessing as mp
import os
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from reidctl.artifacts import ManifestEntry
from reidctl.errors import BadDataError, InputError
from reidctl.preprocess.layouts.base import layout_first_camera
from reidctl.specs import PreprocessSpec

__all__ = ["ImageSource", "ImageStream", "StreamPlan", "bad_images_error"]

#: upper bound on the ring of decoded tensors (bytes), whatever the batch size and workers
RING_BYTES = 256 * 2**20
#: at least this many images per decoding task (small batches are grouped)
MIN_CHUNK_IMAGES = 16


@dataclass(frozen=True)
class StreamPlan:
    """A planned streaming run: every image to read (``entries``, numbered and named as
    ``preprocess`` would), where they live and the tensor settings. Picklable (it travels
    to Ray workers)."""

    layout: str
    root: Path
    splits: tuple[str, ...]
    settings: Any  # reidctl.preprocess.transform.TensorSettings
    entries: tuple[ManifestEntry, ...]
    dropped: dict[str, dict[str, int]] = field(default_factory=dict)
    skip_bad: bool = False
    workers: int | None = None

    @property
    def meta(self) -> dict[str, Any]:
        """What ``meta.json`` would say about the tensors (shape, dtype, preprocessing)."""
        s = self.settings
        return {
            "layout": self.layout,
            "first_camera": layout_first_camera(self.layout),
            "root": str(self.root),
            "splits": list(self.splits),
            "preprocess": s.spec.to_dict(),
            "flip": s.flip,
            "dtype": s.dtype,
            "shape": list(s.shape),
        }

    def record(self, bad: Sequence[Any]) -> dict[str, Any]:
        """The ``images`` block of ``run.json``: the source in place of ``prep_dir``."""
        return {
            **self.meta,
            "num_images": len(self.entries),
            "dropped": self.dropped,
            "bad_files": sorted((b.to_dict() for b in bad), key=lambda d: d["source"]),
        }

    def kept(self, bad: Sequence[Any]) -> list[ManifestEntry]:
        """The entries without ``bad`` images, renumbered 0..N-1 (the manifest
        ``preprocess`` writes)."""
        gone = {b.source for b in bad}
        return [
            replace(e, index=i)
            for i, e in enumerate(e for e in self.entries if e.source not in gone)
        ]


def bad_images_error(bad: Sequence[Any], total: int, root: Path) -> BadDataError:
    """The error for unreadable images in a streaming run (no result directory written)."""
    from reidctl.preprocess.engine import format_bad_files

    bad = sorted(bad, key=lambda b: b.source)
    return BadDataError(
        f"{len(bad)} of {total} images could not be read; no result directory was written. "
        "Fix or remove these files and run again, or add --skip-bad to leave them out:\n"
        + format_bad_files(bad, root)
    )


@dataclass(frozen=True)
class ImageSource:
    """Images of a dataset ``layout`` under ``root`` as the input of :func:`run_inference`.

    ``spec`` (with ``dtype`` and ``flip``) is the preprocessing; ``None`` takes the model's
    facts (its sidecar or the ``reidctl.facts`` ONNX metadata), else the registered model
    ``model`` (a name), as ``reidctl preprocess --model-config`` / ``--model`` would.
    ``dtype`` ``None``: ``float32``, or ``uint8`` for a model that normalises in its graph.
    ``workers`` decoding processes (default: every core); ``skip_bad`` leaves unreadable
    images out instead of failing.
    """

    layout: str
    root: str | os.PathLike[str]
    splits: str | Sequence[str] = ("query", "gallery")
    spec: PreprocessSpec | None = None
    dtype: str | None = None
    flip: bool = False
    workers: int | None = None
    skip_bad: bool = False
    model: str | None = None

    def settings_for(self, model_file: Path) -> Any:
        """The :class:`TensorSettings` for ``model_file``."""
        from reidctl.preprocess.config import resolve_dtype, spec_from_model
        from reidctl.preprocess.transform import TensorSettings
        from reidctl.runners.facts import sidecar_or_none

        spec = self.spec
        if spec is None:
            facts = sidecar_or_none(model_file)
            if facts is not None:
                spec = facts.preprocess
            elif self.model is not None:
                spec = spec_from_model(self.model)
            else:
                raise InputError(
                    f"{model_file} has no sidecar and no reidctl facts in its metadata, so its "
                    "preprocessing is unknown; describe it once with `reidctl adopt`, or give "
                    "--size, --mean, --std (as for `reidctl preprocess`)"
                )
        return TensorSettings(spec, resolve_dtype(spec, self.dtype), self.flip)

    def plan(self, model_file: str | os.PathLike[str]) -> StreamPlan:
        """Scan the layout and name every image (sorted, per split) as ``preprocess`` does.

        Raises :class:`InputError` for an unknown layout, a missing root or no images.
        """
        from reidctl.preprocess.engine import plan_entries
        from reidctl.preprocess.layouts import scan_layout

        settings = self.settings_for(Path(model_file))
        if self.workers is not None and self.workers < 1:
            raise InputError(f"--decoders must be at least 1, got {self.workers}")
        scan = scan_layout(self.layout, self.root, self.splits)
        if not scan.records:
            raise InputError(
                f"no images found for splits {', '.join(scan.splits)} under {scan.root}"
            )
        return StreamPlan(
            scan.layout,
            scan.root,
            tuple(scan.splits),
            settings,
            tuple(plan_entries(scan.records)),
            dict(scan.dropped or {}),
            self.skip_bad,
            self.workers,
        )


# --------------------------------------------------------------------------- decoding

_RING: dict[str, Any] = {}


def _init_process(ring: Any, shape: tuple[int, ...], dtype: str) -> None:
    import cv2

    cv2.setNumThreads(1)  # one process per core already
    _RING["slots"] = np.frombuffer(ring, dtype=np.dtype(dtype)).reshape(shape)


def _transform(settings: Any) -> Any:
    from reidctl.preprocess.transform import ImageTransform

    if _RING.get("settings") != settings:
        _RING["settings"] = settings
        _RING["transform"] = ImageTransform(settings)
    return _RING["transform"]


def _fill(
    slots: np.ndarray, slot: int, entries: Sequence[ManifestEntry], root: Path, transform: Any
) -> tuple[int, list[Any]]:
    """Tensors of the good images of ``entries`` into ``slots[slot]``, packed in order;
    returns how many and the bad files."""
    from reidctl.preprocess.engine import BadFile, load_tensor

    rows, bad, n = slots[slot], [], 0
    for e in entries:
        got = load_tensor(root, e, transform, rows[n])
        if isinstance(got, BadFile):
            bad.append(got)
        else:
            n += 1
    return n, bad


def _process_task(args: tuple[int, list[ManifestEntry], str, Any]) -> tuple[int, list[Any]]:
    slot, entries, root, settings = args
    return _fill(_RING["slots"], slot, entries, Path(root), _transform(settings))


def _fork_safe() -> bool:
    from reidctl.preprocess.engine import _start_method

    return _start_method() == "fork"


class ImageStream:
    """Decoded batches of a :class:`StreamPlan`'s ``entries``, in order, bounded memory.

    ``workers`` decoders (default: every core): forked processes writing into a shared
    anonymous memory ring when forking is safe (``processes=True`` asks for them, and is
    honoured only then), else threads (OpenCV releases the GIL while
    decoding). Use as a context manager; :meth:`batches` yields ``(entries, tensors)``
    with ``tensors`` a ``[len(entries), C, H, W]`` array valid until the next batch is
    asked for. Bad images are collected in :attr:`bad`; without ``plan.skip_bad`` the
    first one stops the batches (the rest is still decoded, to list every bad image).
    """

    def __init__(
        self,
        plan: StreamPlan,
        entries: Sequence[ManifestEntry] | None = None,
        batch_size: int = 32,
        workers: int | None = None,
        *,
        processes: bool | None = None,
    ) -> None:
        from reidctl.preprocess.engine import default_workers

        if batch_size < 1:
            raise InputError(f"batch size must be a positive integer, got {batch_size}")
        self.plan = plan
        self.entries = list(plan.entries if entries is None else entries)
        self.batch_size = batch_size
        self.workers = max(1, workers or default_workers())
        s = plan.settings
        per = batch_size * ((MIN_CHUNK_IMAGES + batch_size - 1) // batch_size)
        self.chunk = per  # images per task: whole batches
        row_bytes = s.nbytes
        want = 2 * self.workers + 2
        fit = max(2, RING_BYTES // max(1, per * row_bytes))
        self.num_slots = max(2, min(want, fit, -(-len(self.entries) // per) or 1))
        self.shape = (self.num_slots, per, *s.shape)
        self.dtype = s.np_dtype.str
        self.bad: list[Any] = []
        # forking a process that already runs other threads can deadlock the children (a lock
        # held by a thread that does not exist in them): processes only where fork is safe
        wanted = self.workers > 1 if processes is None else processes
        self.processes = bool(wanted) and _fork_safe()
        self._pool: Any = None
        self._threads: ThreadPoolExecutor | None = None

    def __enter__(self) -> ImageStream:
        nbytes = int(np.prod(self.shape)) * np.dtype(self.dtype).itemsize
        if self.processes:
            self._ring = mmap.mmap(-1, nbytes)
            self._slots = np.frombuffer(self._ring, dtype=np.dtype(self.dtype)).reshape(self.shape)
            self._pool = mp.get_context("fork").Pool(
                self.workers,
                initializer=_init_process,
                initargs=(self._ring, self.shape, self.dtype),
            )
        else:
            self._slots = np.empty(self.shape, np.dtype(self.dtype))
            self._threads = ThreadPoolExecutor(self.workers, thread_name_prefix="reidctl-decode")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
            self._pool = None
        if self._threads is not None:
            self._threads.shutdown(wait=True, cancel_futures=True)
            self._threads = None

    def _submit(self, slot: int, entries: list[ManifestEntry]) -> Any:
        root, settings = self.plan.root, self.plan.settings
        if self._pool is not None:
            r = self._pool.apply_async(_process_task, ((slot, entries, str(root), settings),))
            return r.get
        assert self._threads is not None
        transform = _transform(settings)
        # one transform per thread would be cleaner; its tables are read-only, so sharing is safe
        f = self._threads.submit(_fill, self._slots, slot, entries, root, transform)
        return f.result

    def _chunks(self) -> Iterator[tuple[list[ManifestEntry], np.ndarray, int]]:
        """Decoded chunks in order: (good entries, their rows, slot); a bounded window."""
        chunks = [self.entries[i : i + self.chunk] for i in range(0, len(self.entries), self.chunk)]
        free = deque(range(self.num_slots))
        pending: deque[tuple[Any, int, list[ManifestEntry]]] = deque()
        nxt = 0
        while nxt < len(chunks) or pending:
            while free and nxt < len(chunks):
                slot = free.popleft()
                pending.append((self._submit(slot, chunks[nxt]), slot, chunks[nxt]))
                nxt += 1
            get, slot, chunk = pending.popleft()
            n, bad = get()
            if bad:
                self.bad.extend(bad)
                gone = {b.source for b in bad}
                chunk = [e for e in chunk if e.source not in gone]
            yield chunk, self._slots[slot, :n], slot
            free.append(slot)

    def batches(self) -> Iterator[tuple[list[ManifestEntry], np.ndarray]]:
        """``(entries, tensors)`` of ``batch_size`` good images each (the last may be
        shorter), in plan order. Chunks without bad images are handed out as views of the
        ring (no copy)."""
        bs = self.batch_size
        carry = np.empty((bs, *self.shape[2:]), np.dtype(self.dtype))
        carry_entries: list[ManifestEntry] = []
        for entries, rows, _slot in self._chunks():
            if self.bad and not self.plan.skip_bad:
                continue  # drain: every bad image gets listed, nothing more is run
            pos, k = 0, len(entries)
            if carry_entries:
                take = min(bs - len(carry_entries), k)
                carry[len(carry_entries) : len(carry_entries) + take] = rows[:take]
                carry_entries += entries[:take]
                pos = take
                if len(carry_entries) == bs:
                    yield carry_entries, carry
                    carry_entries = []
            while k - pos >= bs:
                yield entries[pos : pos + bs], rows[pos : pos + bs]
                pos += bs
            if pos < k:
                carry[: k - pos] = rows[pos:]
                carry_entries = list(entries[pos:])
        if carry_entries and not (self.bad and not self.plan.skip_bad):
            yield carry_entries, carry[: len(carry_entries)]
