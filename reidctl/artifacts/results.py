"""The result directory ``RESULTS/`` (docs/formats.md section 3).

``run.json`` (written last) + ``model.json`` + ``manifest.jsonl`` + ``features/<output>.npy``
(+ an optional vendor dump). :class:`ResultDir` is the only code that knows the layout:
:meth:`ResultDir.open` and :meth:`ResultDir.features` read it, :meth:`ResultDir.write`
writes it (staged beside the target, renamed into place). :class:`RunRecord` is
``run.json``.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from reidctl.artifacts.common import check_format, read_json, tool_info
from reidctl.artifacts.prep import MANIFEST_NAME, ManifestEntry, read_manifest, write_manifest
from reidctl.artifacts.sidecar import ModelSidecar
from reidctl.errors import (
    FormatError,
    InputError,
    OutputExistsError,
    ShapeMismatchError,
    UnknownNameError,
)
from reidctl.io import make_temp_dir, sha256_file, write_json_atomic

RESULT_FORMAT = "reidctl.results/1"
RESULT_FIX = "re-run `reidctl infer` to re-create the result directory"
RUN_NAME = "run.json"
MODEL_JSON_NAME = "model.json"
FEATURES_DIR = "features"


@dataclass(frozen=True)
class RunRecord:
    """``run.json``: how a result directory was made. Times in seconds, latency in ms.

    ``engine`` is ``None`` for a single-process run (then left out of the file), else the
    distributed engine's record (name, workers, shards, ...). ``prep_dir`` is ``None`` and
    ``images`` the image source (layout, root, splits, preprocessing, bad files) for a run
    straight from images (``reidctl infer --images``). ``camera`` (a camera-aware model's
    only) is how the ``camera`` input was computed from the manifest's camids.
    """

    backend: str
    device: str
    options: Mapping[str, Any]
    model_file: str
    model_sha256: str
    prep_dir: str | None
    batch_size: int
    num_images: int
    wall_s: float
    setup_s: float
    latencies_s: Sequence[float]
    outputs: Sequence[str]
    feature: str
    dump: Mapping[str, Any] | None = None
    versions: Mapping[str, str] = field(default_factory=dict)
    engine: Mapping[str, Any] | None = None
    images: Mapping[str, Any] | None = None
    preprocess_check: Mapping[str, Any] | None = None
    camera: Mapping[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        lat = self.latencies_s
        d: dict[str, Any] = {
            "format": RESULT_FORMAT,
            "backend": self.backend,
            "device": self.device,
            "options": {k: v for k, v in sorted(self.options.items())},
            "model_file": self.model_file,
            "model_sha256": self.model_sha256,
            "prep_dir": self.prep_dir,
            "batch_size": self.batch_size,
            "num_images": self.num_images,
            "wall_s": round(self.wall_s, 4),
            "setup_s": round(self.setup_s, 4),
            "images_per_s": round(self.num_images / self.wall_s, 2) if self.wall_s > 0 else None,
            "mean_batch_latency_ms": round(1000 * float(np.mean(lat)), 3) if len(lat) else None,
            "outputs": list(self.outputs),
            "feature": self.feature,
            "dump": None if self.dump is None else dict(self.dump),
            "versions": dict(self.versions),
            "tool": tool_info(),
        }
        if self.engine is not None:
            d["engine"] = dict(self.engine)
        if self.images is not None:
            d["images"] = dict(self.images)
        if self.preprocess_check is not None:
            d["preprocess_check"] = dict(self.preprocess_check)
        if self.camera is not None:
            d["camera"] = dict(self.camera)
        return d


_PROCESS_START = time.time()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_stale_stages(out_dir: str | os.PathLike[str]) -> list[Path]:
    """Remove what an interrupted :meth:`ResultDir.write` of ``out_dir`` left beside it.

    A run killed while writing (``kill -9``, power loss) leaves its hidden staging folder
    ``.<name>.<pid>.<random>.partial`` (or ``.old``) next to the output. Only folders of
    this output are considered, and of those only the ones whose owning process is gone,
    or, for names without a pid, the ones older than this process. Returns what was removed.
    """
    out_dir = Path(out_dir)
    parent = out_dir.resolve().parent
    removed: list[Path] = []
    prefix = f".{out_dir.name}."
    if not parent.is_dir():
        return removed
    for p in parent.iterdir():
        name = p.name
        if not (name.startswith(prefix) and name.endswith((".partial", ".old")) and p.is_dir()):
            continue
        middle = name[len(prefix) :].split(".")  # [pid, random, suffix] or [random, suffix]
        if len(middle) == 3 and middle[0].isdigit():
            pid: int | None = int(middle[0])
        elif len(middle) == 2:
            pid = None
        else:  # another output whose name starts with this one's (res -> res.v2)
            continue
        try:
            stale = (not _pid_alive(pid)) if pid is not None else p.stat().st_mtime < _PROCESS_START
        except OSError:
            continue
        if stale and pid != os.getpid():
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed


def check_output_names(names: Sequence[str]) -> None:
    """Every output becomes ``features/<name>.npy``: refuse names that are not file names."""
    for name in names:
        if not name or "/" in name or "\\" in name or name in (".", ".."):
            raise FormatError(f"output name {name!r} cannot be used as a file name")


def is_result_dir(path: Path) -> bool:
    """Whether ``path`` looks like a (possibly incomplete) result directory."""
    return any((path / n).exists() for n in (RUN_NAME, MODEL_JSON_NAME, FEATURES_DIR))


def check_replaceable(out_dir: Path, force: bool) -> None:
    """``out_dir`` may become a result directory: absent, empty, or (with ``force``) an
    earlier result directory. :class:`OutputExistsError` otherwise."""
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"output {out_dir} exists and is not a directory")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if not force:
            raise OutputExistsError(
                f"{out_dir} exists and is not empty; pass --force to replace it"
            )
        if not is_result_dir(out_dir):
            raise OutputExistsError(
                f"{out_dir} is not a reidctl result directory (no {RUN_NAME}, {MODEL_JSON_NAME} "
                f"or {FEATURES_DIR}/); refusing to replace it even with --force: choose another -o"
            )


@dataclass(frozen=True)
class ResultDir:
    """A complete result directory: ``run`` (``run.json``), ``model`` (``model.json``) and
    ``manifest`` (one entry per feature row)."""

    path: Path
    run: dict[str, Any]
    model: ModelSidecar
    manifest: tuple[ManifestEntry, ...]

    @classmethod
    def open(cls, results_dir: str | os.PathLike[str]) -> ResultDir:
        """Read ``run.json`` (must exist; format tag checked), ``model.json`` and the manifest.

        :class:`FormatError` (exit code 2) for a missing or incomplete directory (the hint
        names ``--prep`` when it looks like a vendor dump) or an unknown format.
        """
        d = Path(results_dir)
        if not d.is_dir():
            raise FormatError(f"result directory not found: {d}; run `reidctl infer` first")
        if not (d / RUN_NAME).is_file():
            dumps = any(p.suffix in (".bin", ".txt") for p in d.iterdir())
            hint = (
                "; for a vendor dump directory pass --prep PREP --output-index K" if dumps else ""
            )
            raise FormatError(
                f"{d / RUN_NAME} not found: {d} is not a complete result directory (the run is "
                f"incomplete: interrupted `reidctl infer`?); re-run `reidctl infer` to finish "
                f"it{hint}"
            )
        run = read_json(d / RUN_NAME, "run record")
        check_format(run, d / RUN_NAME, RESULT_FORMAT, RESULT_FIX)
        model = ModelSidecar.read(d / MODEL_JSON_NAME, "model facts")
        return cls(d, run, model, tuple(read_manifest(d / MANIFEST_NAME)))

    @property
    def outputs(self) -> list[str]:
        """The output names (``model.json``'s outputs)."""
        return self.model.output_names

    @property
    def prep_dir(self) -> Path | None:
        p = self.run.get("prep_dir")
        return Path(p) if p else None

    def features_file(self, name: str) -> str:
        """Where output ``name`` lives, relative to the directory (``features/<name>.npy``)."""
        return f"{FEATURES_DIR}/{name}.npy"

    def features_sha256(self, name: str) -> str:
        return sha256_file(self.path / self.features_file(name))

    def features(self, name: str | None = None, *, mmap: bool = False) -> np.ndarray:
        """Output ``name`` (default: ``model.json``'s feature) as ``[N, ...]``, one row per
        manifest entry. :class:`UnknownNameError` lists the outputs for an unknown name;
        :class:`FormatError` for a missing or unreadable file; :class:`ShapeMismatchError`
        when the rows disagree with the manifest."""
        name = name or self.model.feature
        if name not in self.outputs:
            raise UnknownNameError("output", name, self.outputs)
        path = self.path / self.features_file(name)
        if not path.is_file():
            raise FormatError(
                f"{path} not found; the result directory lacks the {name} output ({RESULT_FIX})"
            )
        try:
            arr = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise FormatError(f"{path} is not a readable .npy array ({e}); {RESULT_FIX}") from e
        if arr.ndim < 2 or len(arr) != len(self.manifest):
            raise ShapeMismatchError(
                f"{path} has shape {arr.shape} but {MANIFEST_NAME} lists {len(self.manifest)} "
                "entries; features and manifest must have one row per entry (re-run "
                "`reidctl infer`)"
            )
        return arr

    @staticmethod
    def write(
        out_dir: str | os.PathLike[str],
        entries: Sequence[ManifestEntry],
        outputs: Mapping[str, np.ndarray],
        model: ModelSidecar,
        run: RunRecord,
        extra: Callable[[Path], None] | None = None,
    ) -> ResultDir:
        """Write a complete result directory at ``out_dir``.

        ``outputs`` rows follow ``entries`` (written as the manifest); ``model`` becomes
        ``model.json`` and ``run`` ``run.json``, written last. ``extra(stage_dir)`` may add
        files (the vendor dump). The directory is staged under a temporary name beside
        ``out_dir`` and renamed into place; an existing ``out_dir`` is replaced (callers
        check ``--force`` first).
        """
        out_dir = Path(out_dir)
        check_output_names(list(outputs))
        parent = out_dir.resolve().parent
        parent.mkdir(parents=True, exist_ok=True)
        remove_stale_stages(out_dir)
        # The owner's pid in the name lets a later run tell a dead run's leftovers from a
        # live one's stage.
        stage = make_temp_dir(parent, prefix=f".{out_dir.name}.{os.getpid()}.", suffix=".partial")
        old = None
        run_dict = run.to_dict()
        try:
            (stage / FEATURES_DIR).mkdir()
            for name, arr in outputs.items():
                np.save(stage / FEATURES_DIR / f"{name}.npy", arr)
            write_manifest(stage / MANIFEST_NAME, entries)
            model.write(stage / MODEL_JSON_NAME)
            if extra is not None:
                extra(stage)
            write_json_atomic(stage / RUN_NAME, run_dict)  # last: marks the directory complete
            if out_dir.exists():
                old = make_temp_dir(parent, prefix=f".{out_dir.name}.{os.getpid()}.", suffix=".old")
                os.replace(out_dir, old / out_dir.name)
            try:
                os.replace(stage, out_dir)
            except OSError:
                if old is not None:  # put the previous results back
                    os.replace(old / out_dir.name, out_dir)
                raise
        finally:
            if stage.exists():
                shutil.rmtree(stage, ignore_errors=True)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        return ResultDir(out_dir, run_dict, model, tuple(entries))
