"""Small file helpers shared by every stage: atomic writes, hashes, canonical JSON."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def refuse_existing(*paths: str | os.PathLike[str] | None, force: bool) -> None:
    """Check output *file* paths before any work starts.

    Raises :class:`InputError` for a path that is an existing directory (a file cannot
    replace it, ``--force`` or not) and :class:`OutputExistsError` for the first path that
    exists, unless ``force``. ``None`` entries (an output that was not asked for) are skipped.
    """
    from reidctl.errors import InputError, OutputExistsError

    given = [Path(p) for p in paths if p is not None]
    for p in given:
        if p.is_dir():
            raise InputError(f"{p} is a directory; give a file path for this output")
    if force:
        return
    for p in given:
        if p.exists():
            raise OutputExistsError(f"{p} exists; pass --force to overwrite it")


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def dumps_json(obj: Any) -> str:
    """Canonical JSON: sorted keys, two-space indent, trailing newline (byte-stable)."""
    return json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only on success.

    On any exception the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | os.PathLike[str], obj: Any) -> None:
    write_text_atomic(path, dumps_json(obj))
