"""Vendor dump directories as the inference tools write them, read one output at a time.

Layouts recognised (:func:`find_dump_layout`), each ``<stem>_<k>.<ext>`` per input and
model output, ``<stem>`` the preprocessed tensor's file name without suffix:

* ``ais_bench``: ``--output OUT`` gets a sub-folder named after the date and time
  (``OUT/2023_01_01-12_00_00/``) holding the files, ``k`` counting the outputs from 0, and a
  summary (``sumary.json`` inside the folder in older releases, ``OUT/<folder>_summary.json``
  beside it in newer ones). OUT, the dated folder, or any folder holding ``sumary.json``.
* Ascend ``benchmark``: ``result/dumpOutput_device<N>/``, ``k`` counting from 1.
  ``result/`` or the ``dumpOutput_device<N>`` folder.
* ``reidctl infer --dump``: ``RESULTS/dump/``, ``k`` from the ``index_base`` recorded in
  ``RESULTS/run.json``.
* any other folder of such files: ``k`` from 0 when ``<stem>_0.*`` files exist, else from 1.

``.bin`` files hold raw little-endian values (float32 unless told ``float16``), ``.txt``
files whitespace-separated numbers, ``.npy`` files one NumPy array (read without pickle).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from reidctl.errors import FormatError, InputError, ShapeMismatchError

DUMP_DTYPES = ("float32", "float16")
DUMP_SUFFIXES = (".bin", ".txt", ".npy")
AIS_BENCH_DIR = re.compile(r"^\d{4}_\d{2}_\d{2}-\d{2}_\d{2}_\d{2}$")
BENCHMARK_DIR = re.compile(r"^dumpOutput_device\d+$")
AIS_BENCH_SUMMARY = "sumary.json"


@dataclass(frozen=True)
class DumpLayout:
    """Where a dump's files are (``root``), which tool wrote them (``tool``: ``ais_bench``,
    ``benchmark``, ``reidctl`` or ``files``) and the number of its first output
    (``index_base``: 0 or 1)."""

    root: Path
    tool: str
    index_base: int

    def describe(self) -> str:
        return f"{self.tool} layout in {self.root}, outputs numbered from {self.index_base}"


def _subdirs(path: Path, pattern: re.Pattern[str]) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_dir() and pattern.match(p.name))


def _one(path: Path, found: list[Path], what: str) -> Path:
    if len(found) > 1:
        names = ", ".join(p.name for p in found)
        raise InputError(
            f"{path} holds {len(found)} {what} folders ({names}); pass the one to evaluate"
        )
    return found[0]


def _observed_base(root: Path) -> int:
    """0 when any ``*_0.<ext>`` file exists in ``root``, else 1."""
    for p in root.iterdir():
        if p.suffix in DUMP_SUFFIXES and p.stem.rsplit("_", 1)[-1] == "0":
            return 0
    return 1


def _reidctl_base(path: Path) -> int | None:
    """The ``index_base`` a ``reidctl infer --dump`` run recorded, when ``path`` is its dump."""
    if path.name != "dump" or not (path.parent / "run.json").is_file():
        return None
    from reidctl.artifacts import ResultDir

    try:
        dump = ResultDir.open(path.parent).run.get("dump")
    except FormatError:
        return None
    base = dump.get("index_base") if isinstance(dump, dict) else None
    return base if base in (0, 1) else None


def find_dump_layout(path: str | os.PathLike[str]) -> DumpLayout:
    """Recognise the tool that wrote the dump at ``path`` (see the module docstring).

    Raises :class:`FormatError` when ``path`` is not a directory and :class:`InputError`
    when it holds several runs (dated folders or devices) to choose from.
    """
    path = Path(path)
    if not path.is_dir():
        raise FormatError(f"dump directory not found: {path}")
    if BENCHMARK_DIR.match(path.name):
        return DumpLayout(path, "benchmark", 1)
    devices = _subdirs(path, BENCHMARK_DIR)
    if devices:
        return DumpLayout(_one(path, devices, "dumpOutput_device*"), "benchmark", 1)
    if AIS_BENCH_DIR.match(path.name) or (path / AIS_BENCH_SUMMARY).is_file():
        return DumpLayout(path, "ais_bench", 0)
    runs = _subdirs(path, AIS_BENCH_DIR)
    if runs:
        return DumpLayout(_one(path, runs, "dated ais_bench output"), "ais_bench", 0)
    base = _reidctl_base(path)
    if base is not None:
        return DumpLayout(path, "reidctl", base)
    return DumpLayout(path, "files", _observed_base(path))


def parse_shape(text: str) -> tuple[int, ...]:
    """``"8x128"`` -> ``(8, 128)``; :class:`InputError` unless positive integers."""
    try:
        shape = tuple(int(t) for t in text.lower().split("x"))
    except ValueError:
        shape = ()
    if not shape or any(d < 1 for d in shape):
        raise InputError(f"invalid shape {text!r}; write it as SxD, e.g. 8x128")
    return shape


def _read_one(path: Path, dtype: str) -> np.ndarray:
    if path.suffix == ".bin":
        size = path.stat().st_size
        item = np.dtype(dtype).itemsize
        if size % item:
            raise ShapeMismatchError(
                f"{path} holds {size} bytes, not a whole number of {dtype} values; check "
                "--dump-dtype"
            )
        return np.fromfile(path, dtype=np.dtype(dtype).newbyteorder("<"))
    if path.suffix == ".npy":
        try:
            return np.load(path, allow_pickle=False).ravel()
        except ValueError as e:
            raise FormatError(f"{path} is not a readable .npy array ({e})") from e
    try:
        return np.loadtxt(path, dtype=np.float32, ndmin=1).ravel()
    except ValueError as e:
        raise FormatError(f"{path} does not hold whitespace-separated numbers ({e})") from e


def read_dump_output(
    root: Path,
    stems: list[str],
    k: int,
    dtype: str = "float32",
    shape: tuple[int, ...] | None = None,
    what: str = "output",
    max_listed: int = 5,
) -> np.ndarray:
    """The files ``<stem>_<k>.bin|txt|npy`` of every stem, stacked: float32 [N, *shape].

    Without ``shape`` each file's values form a vector, its length the same for every file
    (the first file that differs is named). A missing file is an error listing the first
    ``max_listed`` missing names, never a zero vector.
    """
    if dtype not in DUMP_DTYPES:
        raise InputError(f"unknown dump dtype {dtype!r}; valid: {', '.join(DUMP_DTYPES)}")
    paths, missing = [], []
    for stem in stems:
        for suffix in DUMP_SUFFIXES:
            p = root / f"{stem}_{k}{suffix}"
            if p.is_file():
                paths.append(p)
                break
        else:
            missing.append(f"{stem}_{k}.bin|.txt|.npy")
    if missing:
        shown = ", ".join(missing[:max_listed])
        more = f" (+{len(missing) - max_listed} more)" if len(missing) > max_listed else ""
        raise FormatError(
            f"{len(missing)} of {len(stems)} dump files of {what} {k} missing in {root}: "
            f"{shown}{more}; check the output index and that the dump covers the whole "
            "preprocessed set"
        )
    want = int(np.prod(shape)) if shape else None
    rows: list[np.ndarray] = []
    for p in paths:
        v = _read_one(p, dtype)
        if want is not None and v.size != want:
            raise ShapeMismatchError(
                f"{p} holds {v.size} {dtype} values, but {what} {k} has shape "
                f"{list(shape or ())} ({want} values); check the output index and --dump-dtype"
            )
        if rows and v.size != rows[0].size:
            raise ShapeMismatchError(
                f"{p} holds {v.size} {dtype} values but {paths[0].name} holds {rows[0].size}; "
                f"every file of {what} {k} must have the same size (a file cut short, or "
                "several rows per file from a batched run)"
            )
        rows.append(v)
    if not rows:
        return np.zeros((0, *(shape or (0,))), np.float32)
    feat = np.stack(rows).astype(np.float32)
    return feat.reshape(len(rows), *shape) if shape else feat
