"""Small file helpers shared by every stage: atomic writes, hashes, canonical JSON.

Every file and directory reidctl creates gets the permissions the process umask gives an
ordinary ``open()`` / ``mkdir()`` (0644 and 0755 under umask 022). :func:`tempfile.mkstemp`
and :func:`tempfile.mkdtemp` create 0600 / 0700 entries, which a rename into place would
keep, so the temporary names here come from :func:`make_temp_file` and
:func:`make_temp_dir` instead.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
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


_TEMP_ATTEMPTS = 100


def _temp_names(directory: str | os.PathLike[str], prefix: str, suffix: str) -> Iterator[Path]:
    directory = Path(directory)
    for _ in range(_TEMP_ATTEMPTS):
        yield directory / f"{prefix}{secrets.token_hex(6)}{suffix}"
    raise FileExistsError(f"no free temporary name {prefix}*{suffix} in {directory}")


def make_temp_file(directory: str | os.PathLike[str], prefix: str = "", suffix: str = "") -> Path:
    """Create a new empty file with a unique name in ``directory`` and return its path.

    Unlike :func:`tempfile.mkstemp` (always 0600) the file gets the umask's ordinary mode
    (``0o666 & ~umask``), so renaming it into place leaves a normally readable artefact.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    for candidate in _temp_names(directory, prefix, suffix):
        try:
            fd = os.open(candidate, flags, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return candidate
    raise AssertionError("unreachable")  # _temp_names raises when it runs out


def make_temp_dir(directory: str | os.PathLike[str], prefix: str = "", suffix: str = "") -> Path:
    """Create a new empty directory with a unique name in ``directory`` and return its path.

    Unlike :func:`tempfile.mkdtemp` (always 0700) the directory gets the umask's ordinary
    mode (``0o777 & ~umask``), so a staged directory renamed into place is normally readable.
    """
    for candidate in _temp_names(directory, prefix, suffix):
        try:
            os.mkdir(candidate, 0o777)
        except FileExistsError:
            continue
        return candidate
    raise AssertionError("unreachable")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only on success.

    On any exception the temporary file is removed and ``path`` is left as it was. The
    temporary file exists (empty) when the block starts, with the umask's ordinary mode; a
    writer that replaces it rather than writing into it gets that mode from the umask too.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = make_temp_file(path.parent, prefix=f".{path.name}.", suffix=".tmp")
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
