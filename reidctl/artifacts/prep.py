"""The preprocessed set ``PREP/`` (docs/formats.md section 2).

``meta.json`` (written last) + ``manifest.jsonl`` + ``prep.info`` + one raw tensor file per
image. This module is the only code that opens tensor files: :class:`PrepSet` reads them
(:meth:`PrepSet.read_batch`), :func:`write_tensor` writes one, :func:`finalize_prep_set`
writes the manifest, the info file and, last, ``meta.json``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from reidctl.artifacts.common import check_format, read_json, tool_info
from reidctl.errors import FormatError, PreprocessMismatchError
from reidctl.io import write_json_atomic, write_text_atomic

PREP_FORMAT = "reidctl.prep/1"
PREP_FIX = "re-run `reidctl preprocess` to re-create the preprocessed set"
META_NAME = "meta.json"
MANIFEST_NAME = "manifest.jsonl"
INFO_NAME = "prep.info"
TMP_SUFFIX = ".tmp"


# --------------------------------------------------------------------------- manifest


@dataclass(frozen=True)
class ManifestEntry:
    """One tensor of a preprocessed set. ``camid`` is the camera number as in the file name."""

    index: int
    bin: str  # tensor path relative to the preprocessed directory
    source: str  # image path relative to the dataset root
    pid: int  # -1 junk, 0 distractor (Market-1501 convention)
    camid: int
    split: str  # "query" | "gallery" | "train"

    @property
    def stem(self) -> str:
        return Path(self.bin).stem

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "bin": self.bin,
            "source": self.source,
            "pid": self.pid,
            "camid": self.camid,
            "split": self.split,
        }


def manifest_line(entry: ManifestEntry) -> str:
    return json.dumps(entry.to_dict(), sort_keys=True) + "\n"


def write_manifest(path: str | os.PathLike[str], entries: Iterable[ManifestEntry]) -> None:
    """Write ``manifest.jsonl`` (one sorted-key JSON line per entry) atomically."""
    write_text_atomic(path, "".join(manifest_line(e) for e in entries))


def read_manifest(path: str | os.PathLike[str]) -> list[ManifestEntry]:
    """Read a ``manifest.jsonl`` (file or the directory holding it)."""
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST_NAME
    if not path.is_file():
        raise FormatError(
            f"manifest not found: {path}; run `reidctl preprocess` to create the preprocessed set"
        )
    entries = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                d = json.loads(line)
                entries.append(
                    ManifestEntry(
                        index=int(d["index"]),
                        bin=str(d["bin"]),
                        source=str(d["source"]),
                        pid=int(d["pid"]),
                        camid=int(d["camid"]),
                        split=str(d["split"]),
                    )
                )
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
                raise FormatError(f"{path}:{lineno}: invalid manifest line ({e})") from e
    if [e.index for e in entries] != list(range(len(entries))):
        raise FormatError(f"{path}: indices must run 0..N-1 in order")
    return entries


# --------------------------------------------------------------------------- meta


def read_prep_meta(prep_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Read ``PREP/meta.json`` (written last by preprocess: its absence means incomplete);
    its format tag must be ``reidctl.prep/1``."""
    prep_dir = Path(prep_dir)
    path = prep_dir / META_NAME
    if not path.is_file():
        raise FormatError(
            f"{path} not found: {prep_dir} is not a complete preprocessed set "
            "(run `reidctl preprocess`, or `--resume` an interrupted run)"
        )
    meta = read_json(path, "preprocessing meta")
    check_format(meta, path, PREP_FORMAT, PREP_FIX)
    return meta


# --------------------------------------------------------------------------- tensors


def tensor_complete(path: Path, nbytes: int) -> bool:
    """A tensor file counts as complete when it exists with exactly ``nbytes`` bytes."""
    try:
        return path.stat().st_size == nbytes
    except OSError:
        return False


def write_tensor(out_dir: Path, entry: ManifestEntry, data: bytes | memoryview) -> None:
    """Write ``out_dir/entry.bin`` (raw bytes) under a temporary name, renamed when complete."""
    tmp = out_dir / f".{entry.bin}{TMP_SUFFIX}"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, out_dir / entry.bin)


def _read_into(path: Path, out: np.ndarray) -> None:
    """Fill ``out`` (C-contiguous) with the raw bytes of ``path``; the size must match."""
    try:
        with open(path, "rb", buffering=0) as f:
            n = f.readinto(memoryview(out).cast("B"))
            size = os.fstat(f.fileno()).st_size
    except FileNotFoundError:
        raise FormatError(
            f"tensor file missing: {path}; the preprocessed set is incomplete, re-run "
            "`reidctl preprocess`"
        ) from None
    except OSError as e:
        raise FormatError(f"cannot read tensor file {path}: {e.strerror}") from e
    if n != out.nbytes or size != out.nbytes:
        what = "truncated" if size < out.nbytes else "too large"
        raise FormatError(
            f"tensor file {path} is {what}: it holds {size} bytes, expected {out.nbytes} "
            f"({list(out.shape)} {out.dtype}); re-run `reidctl preprocess` for this set"
        )


def read_tensor(
    path: str | os.PathLike[str], dtype: str | np.dtype, shape: Sequence[int]
) -> np.ndarray:
    """Read one raw little-endian C-order tensor file of ``shape`` and ``dtype``.

    Raises :class:`FormatError` naming the file when it is missing, truncated or too large.
    """
    out = np.empty(tuple(shape), dtype=np.dtype(dtype).newbyteorder("<"))
    _read_into(Path(path), out)
    return out.astype(out.dtype.newbyteorder("="), copy=False)


# --------------------------------------------------------------------------- the set


def check_manifest_fits(
    prep_dir: Path, meta: dict[str, Any], entries: Sequence[ManifestEntry]
) -> None:
    """The manifest must list as many tensors as ``meta.json`` says (``num_tensors`` and the
    per-split ``counts``, where recorded), and every ``bin`` must be a file name inside the
    preprocessed directory (no absolute path, no ``..``, no sub-directory escaping it).
    :class:`FormatError` naming the file otherwise."""
    manifest = prep_dir / MANIFEST_NAME
    n = meta.get("num_tensors")
    if n is not None and n != len(entries):
        raise FormatError(
            f"{manifest} lists {len(entries)} tensors but {prep_dir / META_NAME} says "
            f"num_tensors {n}: the set was changed after preprocessing; {PREP_FIX}"
        )
    counts = meta.get("counts")
    if isinstance(counts, dict) and entries:
        have: dict[str, int] = {}
        for e in entries:
            have[e.split] = have.get(e.split, 0) + 1
        want = {k: int(v) for k, v in counts.items() if int(v)}
        if have != want:
            raise FormatError(
                f"{manifest} lists {have} tensors per split but {prep_dir / META_NAME} says "
                f"{want}; {PREP_FIX}"
            )
    for e in entries:
        p = Path(e.bin)
        if not e.bin or p.is_absolute() or ".." in p.parts or "\\" in e.bin or len(p.parts) != 1:
            raise FormatError(
                f"{manifest}: entry {e.index} names tensor {e.bin!r}, which is not a file "
                f"name inside {prep_dir}; tensors are read only from the preprocessed "
                f"directory itself. {PREP_FIX}"
            )


@dataclass(frozen=True)
class PrepSet:
    """A complete preprocessed set: its directory, ``meta.json`` and manifest entries."""

    path: Path
    meta: dict[str, Any]
    entries: tuple[ManifestEntry, ...]

    @classmethod
    def open(cls, prep_dir: str | os.PathLike[str]) -> PrepSet:
        """Read ``meta.json`` (format tag checked) and ``manifest.jsonl``; :class:`FormatError`
        (exit code 2) for an incomplete set, an unknown format, or a manifest that does not
        fit ``meta.json`` (:func:`check_manifest_fits`)."""
        path = Path(prep_dir)
        meta = read_prep_meta(path)
        entries = tuple(read_manifest(path))
        check_manifest_fits(path, meta, entries)
        return cls(path, meta, entries)

    @property
    def dtype(self) -> np.dtype:
        try:
            return np.dtype(self.meta.get("dtype", "float32"))
        except TypeError as e:
            raise FormatError(f"{self.path / META_NAME} has an invalid dtype ({e})") from e

    @property
    def shape(self) -> tuple[int, ...]:
        """The per-tensor shape ``(C, H, W)``."""
        try:
            return tuple(int(v) for v in self.meta["shape"])
        except (KeyError, TypeError, ValueError) as e:
            raise FormatError(
                f"{self.path / META_NAME} lacks a valid shape ({e}); {PREP_FIX}"
            ) from e

    @property
    def root(self) -> Path | None:
        """The dataset root the images came from (``None`` if not recorded)."""
        root = self.meta.get("root")
        return Path(root) if root else None

    def __len__(self) -> int:
        return len(self.entries)

    def read_batch(self, indices: Iterable[int], out: np.ndarray | None = None) -> np.ndarray:
        """Tensors of the manifest rows ``indices`` as ``[len(indices), C, H, W]`` (dtype of
        ``meta.json``), into ``out`` when given. Each file's size is checked."""
        idx = list(indices)
        shape, dtype = self.shape, self.dtype.newbyteorder("<")
        if out is None:
            out = np.empty((len(idx), *shape), dtype=dtype)
        for row, i in enumerate(idx):
            _read_into(self.path / self.entries[i].bin, out[row])
        return out


def finalize_prep_set(
    out_dir: Path,
    entries: Sequence[ManifestEntry],
    meta: dict[str, Any],
    info: str,
) -> PrepSet:
    """Write ``manifest.jsonl``, ``prep.info`` (``info``) and, last, ``meta.json`` (``meta``
    plus this version's ``format`` and ``tool``). Returns the set as :meth:`PrepSet.open`
    would read it."""
    write_manifest(out_dir / MANIFEST_NAME, entries)
    write_text_atomic(out_dir / INFO_NAME, info)
    meta = {**meta, "format": PREP_FORMAT, "tool": tool_info()}
    write_json_atomic(out_dir / META_NAME, meta)
    return PrepSet(out_dir, meta, tuple(entries))


# --------------------------------------------------------------------------- model fit

#: ``meta.json`` preprocessing fields compared with a model's facts (``--flip`` is not: a
#: mirrored set is a legitimate test-time augmentation of the same model)
PREPROCESS_FIELDS = ("height", "width", "color", "interpolation", "normalize_in_graph")
NORMALISE_FIELDS = ("mean", "std")


def _fmt(value: Any) -> str:
    if isinstance(value, list | tuple):
        return ",".join(f"{float(v):g}" for v in value)
    return str(value)


def preprocess_differences(prep: PrepSet, model_preprocess: Any) -> list[tuple[str, Any, Any]]:
    """``(field, set value, model value)`` for every preprocessing setting where ``prep``'s
    ``meta.json`` differs from ``model_preprocess`` (a :class:`PreprocessSpec`).

    Compared: size, colour order, interpolation, normalisation in graph and, for float
    tensors (uint8 tensors are raw pixels whatever the set's mean/std say), mean and std
    (relative tolerance 1e-6). ``flip`` is not compared.
    """
    from reidctl.specs import PreprocessSpec

    block = prep.meta.get("preprocess")
    if not isinstance(block, dict):
        return [("preprocess", "missing from meta.json", "the model's")]
    have = PreprocessSpec.from_dict(block).to_dict()
    want = model_preprocess.to_dict()
    diffs = [(k, have[k], want[k]) for k in PREPROCESS_FIELDS if have[k] != want[k]]
    if prep.dtype.kind == "f":
        for k in NORMALISE_FIELDS:
            if not np.allclose(have[k], want[k], rtol=1e-6, atol=0.0):
                diffs.append((k, have[k], want[k]))
    return diffs


def check_prep_fits_model(
    prep: PrepSet,
    model_file: str | os.PathLike[str],
    model_preprocess: Any | None,
    *,
    allow_mismatch: bool = False,
) -> dict[str, Any]:
    """Refuse a preprocessed set whose preprocessing differs from the model's facts.

    ``model_preprocess`` is the model sidecar's :class:`PreprocessSpec` (``None`` for a
    foreign model without facts: nothing to compare). Raises
    :class:`PreprocessMismatchError` (exit 2) naming both settings of every differing field,
    unless ``allow_mismatch``. Returns the record for ``run.json``: ``{"checked": bool,
    "mismatch": [{field, prep, model}, ...], "allowed": bool}``; a ``note`` says what was not
    checked or what was let through.
    """
    if model_preprocess is None:
        return {
            "checked": False,
            "mismatch": [],
            "allowed": allow_mismatch,
            "note": f"{model_file} has no sidecar: the preprocessing of {prep.path} was not "
            "checked against the model",
        }
    diffs = preprocess_differences(prep, model_preprocess)
    record: dict[str, Any] = {
        "checked": True,
        "mismatch": [{"field": k, "prep": a, "model": b} for k, a, b in diffs],
        "allowed": allow_mismatch,
    }
    if diffs:
        what = "; ".join(f"{k}: set {_fmt(a)}, model {_fmt(b)}" for k, a, b in diffs)
        if not allow_mismatch:
            raise PreprocessMismatchError(
                f"{prep.path / META_NAME} was preprocessed differently from what {model_file} "
                f"expects ({what}); preprocess again with the model's settings (`reidctl "
                "preprocess ... --model-config <model>.json`), or pass "
                "--allow-preprocess-mismatch to run anyway (recorded in the output)"
            )
        record["note"] = (
            f"running {model_file} on {prep.path} despite a preprocessing mismatch ({what}), "
            "as --allow-preprocess-mismatch asks"
        )
    return record
