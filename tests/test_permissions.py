"""Artefacts get the permissions the umask gives an ordinary file or directory, although
they are written under temporary names and renamed into place."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from reidctl.io import (
    atomic_path,
    make_temp_dir,
    make_temp_file,
    write_json_atomic,
    write_text_atomic,
)


@pytest.fixture
def umask() -> Iterator[Callable[[int], int]]:
    """Set the process umask for the test; the previous one comes back afterwards."""
    old = os.umask(0o022)
    try:
        yield os.umask
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize(
    ("mask", "file_mode", "dir_mode"),
    [(0o022, 0o644, 0o755), (0o027, 0o640, 0o750), (0o077, 0o600, 0o700)],
)
def test_atomic_helpers_follow_the_umask(
    tmp_path: Path, umask, mask: int, file_mode: int, dir_mode: int
) -> None:
    umask(mask)
    write_text_atomic(tmp_path / "a.txt", "x")
    write_json_atomic(tmp_path / "sub" / "b.json", {"k": 1})
    with atomic_path(tmp_path / "c.bin") as tmp:
        tmp.unlink()  # a writer that replaces the file instead of writing into it
        tmp.write_bytes(b"\0")
    for name in ("a.txt", "sub/b.json", "c.bin"):
        assert _mode(tmp_path / name) == file_mode, name
    assert _mode(make_temp_file(tmp_path, prefix=".t.")) == file_mode
    staged = make_temp_dir(tmp_path, prefix=".stage.", suffix=".partial")
    assert staged.name.startswith(".stage.") and staged.name.endswith(".partial")
    assert _mode(staged) == dir_mode
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")) == []


def test_temp_names_are_unique(tmp_path: Path) -> None:
    made = {make_temp_dir(tmp_path, prefix="d") for _ in range(50)}
    made |= {make_temp_file(tmp_path, prefix="f") for _ in range(50)}
    assert len(made) == 100 and all(p.parent == tmp_path for p in made)


@pytest.mark.slow
def test_every_artefact_of_the_chain_is_0644_and_every_directory_0755(
    tmp_path: Path, umask
) -> None:
    from reidctl.demo import DemoSettings, run_demo

    out = tmp_path / "demo"
    # export (model + sidecar), preprocess (tensors, prep.info, manifest), infer (a result
    # directory staged and renamed), eval (metrics.json, plots), bench (json, csv, plot)
    run_demo(DemoSettings(out=out, quick=True, threads=1, backends=("ort",), int8=False))
    files = [p for p in sorted(out.rglob("*")) if p.is_file()]
    dirs = [out, *(p for p in sorted(out.rglob("*")) if p.is_dir())]
    names = {p.name for p in files}
    for expected in ("model.onnx", "model.onnx.json", "prep.info", "manifest.jsonl"):
        assert expected in names, expected
    for expected in ("meta.json", "metrics.json", "cmc.png", "ranked.png", "run.json"):
        assert expected in names, expected
    assert any(p.suffix == ".bin" for p in files) and any(p.suffix == ".npy" for p in files)
    assert (out / "results").is_dir()
    wrong = [f"{p.relative_to(out)} {oct(_mode(p))}" for p in files if _mode(p) != 0o644]
    wrong += [f"{p.relative_to(out)}/ {oct(_mode(p))}" for p in dirs if _mode(p) != 0o755]
    assert wrong == []
