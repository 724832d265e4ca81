"""The on-disk artefacts that connect the stages (see docs/formats.md).

* model sidecar ``<model file>.json``  (written by export and convert)
* preprocessed set ``PREP/meta.json`` + ``PREP/manifest.jsonl`` + ``PREP/prep.info`` + tensors
* result directory ``RESULTS/run.json`` + ``model.json`` + ``manifest.jsonl`` + ``features/``
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reidctl import __version__
from reidctl.errors import FormatError
from reidctl.io import dumps_json, write_text_atomic
from reidctl.specs import ModelFacts, PreprocessSpec, TensorSpec

SIDECAR_FORMAT = "reidctl.model/1"
PREP_FORMAT = "reidctl.prep/1"
RESULT_FORMAT = "reidctl.results/1"
META_NAME = "meta.json"
MANIFEST_NAME = "manifest.jsonl"
INFO_NAME = "prep.info"
RUN_NAME = "run.json"
MODEL_JSON_NAME = "model.json"
FEATURES_DIR = "features"


def tool_info() -> dict[str, str]:
    return {"name": "reidctl", "version": __version__}


# --------------------------------------------------------------------------- sidecar


def sidecar_path(model_file: str | os.PathLike[str]) -> Path:
    """``model.onnx`` -> ``model.onnx.json`` (the same rule for engines, OM and XML files)."""
    p = Path(model_file)
    return p.with_name(p.name + ".json")


def read_json(path: str | os.PathLike[str], what: str) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FormatError(f"{what} not found: {path}")
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise FormatError(f"{what} {path} is not valid JSON ({e}); re-create it") from e
    if not isinstance(obj, dict):
        raise FormatError(f"{what} {path} must hold a JSON object")
    return obj


def facts_from_dict(d: dict[str, Any], source: str = "sidecar") -> ModelFacts:
    """Build :class:`ModelFacts` from a sidecar or ``model.json`` dictionary."""
    try:
        return ModelFacts(
            model=str(d["model"]),
            preprocess=PreprocessSpec.from_dict(d["preprocess"]),
            inputs=tuple(TensorSpec.from_dict(t) for t in d["inputs"]),
            outputs=tuple(TensorSpec.from_dict(t) for t in d["outputs"]),
            feature=str(d["feature"]),
            l2_normalize=bool(d["l2_normalize"]),
            extra={k: v for k, v in d.items() if k not in _FACT_KEYS},
        )
    except KeyError as e:
        raise FormatError(f"{source} lacks the field {e.args[0]!r}") from e


_FACT_KEYS = {"model", "preprocess", "inputs", "outputs", "feature", "l2_normalize"}


def facts_to_dict(facts: ModelFacts) -> dict[str, Any]:
    d: dict[str, Any] = dict(facts.extra)
    d.update(
        model=facts.model,
        preprocess=facts.preprocess.to_dict(),
        inputs=[t.to_dict() for t in facts.inputs],
        outputs=[t.to_dict() for t in facts.outputs],
        feature=facts.feature,
        l2_normalize=facts.l2_normalize,
    )
    return d


def read_sidecar(model_file: str | os.PathLike[str]) -> dict[str, Any]:
    """Read ``<model_file>.json``; raises :class:`FormatError` if missing or invalid."""
    return read_json(sidecar_path(model_file), "model sidecar")


def write_sidecar(model_file: str | os.PathLike[str], sidecar: dict[str, Any]) -> Path:
    path = sidecar_path(model_file)
    sidecar = {"format": SIDECAR_FORMAT, "tool": tool_info(), **sidecar}
    write_text_atomic(path, dumps_json(sidecar))
    return path


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


def write_manifest(path: str | os.PathLike[str], entries: list[ManifestEntry]) -> None:
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


def read_prep_meta(prep_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Read ``PREP/meta.json`` (written last by preprocess: its absence means incomplete)."""
    prep_dir = Path(prep_dir)
    path = prep_dir / META_NAME
    if not path.is_file():
        raise FormatError(
            f"{path} not found: {prep_dir} is not a complete preprocessed set "
            "(run `reidctl preprocess`, or `--resume` an interrupted run)"
        )
    return read_json(path, "preprocessing meta")
