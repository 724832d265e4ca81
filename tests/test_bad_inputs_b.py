"""Bad inputs through the command line: every case is one ``reidctl`` invocation.

Each case asserts the exit code, that the message names the offending file, value or
address, that no Python traceback reaches the user (``main`` would raise instead of
returning) and that nothing is left half-written.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from reidctl.cli import main
from reidctl.io import write_json_atomic
from reidctl.specs import PreprocessSpec
from tests.scale.helpers import make_results


def _complete(res: Path) -> Path:
    """make_results plus the model.json fields the dense evaluation reads."""
    facts = json.loads((res / "model.json").read_text())
    facts["preprocess"] = PreprocessSpec().to_dict()
    facts["inputs"] = [{"name": "image", "shape": ["batch", 3, 256, 128], "dtype": "float32"}]
    write_json_atomic(res / "model.json", facts)
    return res


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    return _complete(make_results(tmp_path_factory.mktemp("bad_b") / "results", seed=3)[0])


def _tree(root: Path) -> dict[str, bytes | None]:
    """Every path under ``root`` (hidden ones included) with its bytes (None: directory)."""
    return {
        str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None)
        for p in sorted(root.rglob("*"))
    }


def run_cli(capsys, args: list[str]) -> tuple[int, str]:
    """One invocation; returns (exit code, stderr + stdout). A traceback would raise here."""
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    text = out.err + out.out
    assert "Traceback" not in text
    return code, text


# --------------------------------------------------------------------------- eval outputs

# (case id, option arguments given the output path, what the output is)
EVAL_OUTPUTS: list[tuple[str, Callable[[Path], list[str]]]] = [
    ("json", lambda p: ["--json", p]),
    ("plot", lambda p: ["--plot", p]),
    ("visualize", lambda p: ["--visualize", "2", p]),
]


@pytest.mark.parametrize("name,opts", EVAL_OUTPUTS, ids=[c[0] for c in EVAL_OUTPUTS])
def test_eval_output_that_is_a_directory(results, tmp_path, capsys, name, opts):
    target = tmp_path / "a_dir"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    for force in ([], ["--force"]):
        code, text = run_cli(capsys, ["eval", results, *opts(target), *force])
        assert code == 2, text
        assert str(target) in text and "is a directory" in text
    assert _tree(target) == {"keep.txt": b"mine"}


@pytest.mark.parametrize("name,opts", EVAL_OUTPUTS, ids=[c[0] for c in EVAL_OUTPUTS])
def test_eval_refuses_existing_output_without_force(results, tmp_path, capsys, name, opts):
    target = tmp_path / f"old.{name}"
    target.write_bytes(b"earlier run")
    code, text = run_cli(capsys, ["eval", results, *opts(target)])
    assert code == 2, text
    assert str(target) in text and "--force" in text
    assert target.read_bytes() == b"earlier run"
    assert sorted(p.name for p in tmp_path.iterdir()) == [target.name]  # no temp file left


def test_eval_force_overwrites_json_and_plot(results, tmp_path, capsys):
    js, png = tmp_path / "m.json", tmp_path / "cmc.png"
    js.write_text("old")
    png.write_text("old")
    code, text = run_cli(capsys, ["eval", results, "--json", js, "--plot", png, "--force"])
    assert code == 0, text
    assert json.loads(js.read_text())["format"].startswith("reidctl.metrics/")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
