"""Sidecars of converted models: the source's facts carried forward (docs/formats.md §1).

Every converter that turns one model file into another goes through :func:`model_facts`
(read the source's facts) and :func:`carry_sidecar` (write the converted file's sidecar),
so the sidecar layout of converted models is decided in one place.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from reidctl.artifacts import read_sidecar, sidecar_path, write_sidecar
from reidctl.errors import FormatError
from reidctl.io import sha256_file
from reidctl.runners.facts import source_facts

# keys of the source sidecar that describe the source file, not the model
_SOURCE_ONLY = ("format", "tool", "validation", "model_file", "model_sha256", "source")


def model_facts(model_file: str | os.PathLike[str]) -> dict[str, Any]:
    """Facts of a model to convert or package: its sidecar; for an ONNX without one, the
    facts derived from its graph. Other files without a sidecar raise :class:`FormatError`."""
    model_file = Path(model_file)
    if model_file.suffix.lower() == ".onnx":
        return source_facts(model_file).to_dict()
    if not model_file.is_file():
        raise FormatError(f"model file not found: {model_file}")
    if not sidecar_path(model_file).is_file():
        raise FormatError(
            f"{model_file} has no sidecar ({sidecar_path(model_file).name}): convert it with "
            "`reidctl convert`, which writes one, or start from the ONNX model"
        )
    return read_sidecar(model_file)


def carried_sidecar(
    facts: dict[str, Any],
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    conversion: dict[str, Any],
    *,
    model_name: str | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """The sidecar of ``dst`` converted from ``src``: ``facts`` less what described ``src``,
    plus ``source`` (file, sha256), ``conversion``, ``model_file`` (``model_name`` or the
    name of ``dst``), ``model_sha256`` of ``dst`` (which must exist) and ``fields``."""
    src, dst = Path(src), Path(dst)
    side = {k: v for k, v in facts.items() if k not in _SOURCE_ONLY}
    side.update(fields)
    side["source"] = {"file": src.name, "sha256": sha256_file(src)}
    side["conversion"] = conversion
    side["model_file"] = model_name or dst.name
    side["model_sha256"] = sha256_file(dst)
    return side


def carry_sidecar(
    facts: dict[str, Any],
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    conversion: dict[str, Any],
    *,
    model_name: str | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """Write ``<dst>.json`` (see :func:`carried_sidecar`) atomically; return it."""
    side = carried_sidecar(facts, src, dst, conversion, model_name=model_name, **fields)
    write_sidecar(dst, side)
    return side
