"""What every artefact module shares: the tool record, JSON reading, the format-tag rule.

A format tag is ``<kind>/<version>`` (e.g. ``reidctl.model/1``). A reader accepts its own
kind at a version up to the one it knows; a missing tag, another kind or a newer version
is a :class:`FormatError` (exit code 2) naming the file and the fix.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from reidctl import __version__
from reidctl.errors import FormatError


def tool_info() -> dict[str, str]:
    """The ``tool`` record every artefact carries: ``{"name": "reidctl", "version": ...}``."""
    return {"name": "reidctl", "version": __version__}


def read_json(path: str | os.PathLike[str], what: str) -> dict[str, Any]:
    """A JSON object from ``path``; :class:`FormatError` when missing, invalid or not an object."""
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


def _split_tag(tag: str) -> tuple[str, int] | None:
    kind, sep, version = tag.rpartition("/")
    if not sep or not kind or not version.isdigit():
        return None
    return kind, int(version)


def check_format(obj: dict[str, Any], path: str | os.PathLike[str], expected: str, fix: str) -> int:
    """Check ``obj["format"]`` against ``expected`` (``kind/version``); return its version.

    Raises :class:`FormatError` naming ``path`` and ``fix`` (what re-creates the file) when
    the tag is missing, of another kind, malformed or newer than ``expected``.
    """
    kind, known = _split_tag(expected)  # type: ignore[misc]
    tag = obj.get("format")
    if tag is None:
        raise FormatError(
            f"{path} has no format tag (expected {expected!r}): it was not written by reidctl "
            f"or by a version too old to read; {fix}"
        )
    parsed = _split_tag(tag) if isinstance(tag, str) else None
    if parsed is None or parsed[0] != kind or parsed[1] < 1:
        raise FormatError(f"{path} has format {tag!r}, not {expected!r}; {fix}")
    if parsed[1] > known:
        raise FormatError(
            f"{path} has format {tag!r}, newer than this reidctl reads ({expected!r}); "
            f"upgrade reidctl, or {fix}"
        )
    return parsed[1]


def read_tagged(path: str | os.PathLike[str], what: str, expected: str, fix: str) -> dict[str, Any]:
    """:func:`read_json` then :func:`check_format`."""
    obj = read_json(path, what)
    check_format(obj, path, expected, fix)
    return obj
