"""Bad inputs through the command line: every case is one ``reidctl`` invocation.

Each case asserts the exit code, that the message names the offending file, value or
address, that no Python traceback reaches the user (``main`` would raise instead of
returning) and that nothing is left half-written.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
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


# --------------------------------------------------------------------------- faiss


@pytest.fixture(scope="module")
def indexes(results, tmp_path_factory) -> dict[str, Path]:
    """flat, ivf and hnsw indexes over ``results``'s gallery."""
    pytest.importorskip("faiss", reason="faiss-cpu is not installed (reidctl[faiss])")
    from reidctl.scale import faiss_index as fi

    root = tmp_path_factory.mktemp("indexes")
    return {
        kind: fi.save_gallery_index(fi.build_gallery_index(results, kind), root / f"{kind}.index")
        for kind in ("flat", "ivf", "hnsw")
    }


# (case id, index kind, search options, text the message must hold)
SEARCH_CASES = [
    ("nprobe-0", "ivf", ["--nprobe", "0"], "--nprobe must be at least 1, got 0"),
    ("nprobe-neg", "ivf", ["--nprobe", "-1"], "--nprobe must be at least 1, got -1"),
    ("ef-search-0", "hnsw", ["--ef-search", "0"], "--ef-search must be at least 1, got 0"),
    ("ef-search-neg", "hnsw", ["--ef-search", "-3"], "--ef-search must be at least 1, got -3"),
    ("nprobe-on-hnsw", "hnsw", ["--nprobe", "4"], "--nprobe applies to ivf"),
    ("nprobe-on-flat", "flat", ["--nprobe", "4"], "--nprobe applies to ivf"),
    ("ef-search-on-ivf", "ivf", ["--ef-search", "8"], "--ef-search applies to hnsw"),
    ("k-0", "flat", ["-k", "0"], "-k must be at least 1, got 0"),
]


@pytest.mark.faiss
@pytest.mark.parametrize(
    "kind,opts,message", [c[1:] for c in SEARCH_CASES], ids=[c[0] for c in SEARCH_CASES]
)
def test_search_refuses_bad_parameters(results, indexes, tmp_path, capsys, kind, opts, message):
    pytest.importorskip("faiss", reason="faiss-cpu is not installed (reidctl[faiss])")
    out = tmp_path / "topk.npz"
    code, text = run_cli(capsys, ["search", indexes[kind], results, "-o", out, *opts])
    assert code == 2, text
    assert message in text
    assert list(tmp_path.iterdir()) == []


@pytest.mark.faiss
@pytest.mark.parametrize("command", ["index-build", "search"])
def test_faiss_output_that_is_a_directory(results, indexes, tmp_path, capsys, command):
    pytest.importorskip("faiss", reason="faiss-cpu is not installed (reidctl[faiss])")
    target = tmp_path / "out"
    target.mkdir()
    args = {
        "index-build": ["index", "build", results, "-o", target, "--force"],
        "search": ["search", indexes["flat"], results, "-o", target, "--force"],
    }[command]
    code, text = run_cli(capsys, args)
    assert code == 2, text
    assert str(target) in text and "is a directory" in text
    assert list(target.iterdir()) == []


def _with_bad_values(res: Path, rows: list[int], value: float) -> Path:
    """Put ``value`` (NaN or inf) into feature rows ``rows`` of a result directory."""
    path = res / "features" / "feature.npy"
    feats = np.load(path)
    feats[rows, 1] = value
    np.save(path, feats)
    return res


# make_results rows: 12 query (0..11), 40 gallery (12..51), 3 train
NONFINITE = [
    ("nan", float("nan")),
    ("inf", float("inf")),
    ("-inf", float("-inf")),
]


@pytest.mark.faiss
@pytest.mark.parametrize("name,value", NONFINITE, ids=[c[0] for c in NONFINITE])
def test_nonfinite_gallery_refused_by_index_build(tmp_path, capsys, name, value):
    pytest.importorskip("faiss", reason="faiss-cpu is not installed (reidctl[faiss])")
    res = _with_bad_values(_complete(make_results(tmp_path / "res", seed=3)[0]), [20], value)
    out = tmp_path / "g.index"
    code, text = run_cli(capsys, ["index", "build", res, "-o", out])
    assert code == 1, text
    assert "NaN or inf" in text and "gallery_0020" in text and "feature.npy" in text
    assert not out.exists() and not Path(f"{out}.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["res"]


@pytest.mark.faiss
@pytest.mark.parametrize("name,value", NONFINITE, ids=[c[0] for c in NONFINITE])
@pytest.mark.parametrize("command", ["search", "eval-index"])
def test_nonfinite_queries_refused(tmp_path, capsys, name, value, command):
    pytest.importorskip("faiss", reason="faiss-cpu is not installed (reidctl[faiss])")
    res = _with_bad_values(_complete(make_results(tmp_path / "res", seed=3)[0]), [3], value)
    index = tmp_path / "g.index"
    assert main(["index", "build", str(res), "-o", str(index)]) == 0  # gallery rows are fine
    capsys.readouterr()
    out = tmp_path / "out.file"
    args = {
        "search": ["search", index, res, "-o", out],
        "eval-index": ["eval", res, "--index", index, "--json", out],
    }[command]
    code, text = run_cli(capsys, args)
    assert code == 1, text
    assert "NaN or inf" in text and "query_0003" in text
    assert not out.exists()


@pytest.mark.faiss
@pytest.mark.parametrize("exact_check", [[], ["--exact-check"]], ids=["plain", "exact-check"])
def test_eval_index_of_another_result_directory(results, indexes, tmp_path, capsys, exact_check):
    pytest.importorskip("faiss", reason="faiss-cpu is not installed (reidctl[faiss])")
    other = _complete(make_results(tmp_path / "other", seed=4)[0])
    out = tmp_path / "m.json"
    args = ["eval", other, "--index", indexes["flat"], "--json", out, *exact_check]
    code, text = run_cli(capsys, args)
    assert code == 2, text
    assert str(results.resolve()) in text and str(other.resolve()) in text
    assert "reidctl index build" in text
    assert not out.exists()


@pytest.mark.faiss
def test_eval_index_after_features_changed(tmp_path, capsys):
    pytest.importorskip("faiss", reason="faiss-cpu is not installed (reidctl[faiss])")
    res = _complete(make_results(tmp_path / "res", seed=3)[0])
    index = tmp_path / "g.index"
    assert main(["index", "build", str(res), "-o", str(index)]) == 0
    feats = np.load(res / "features" / "feature.npy")
    np.save(res / "features" / "feature.npy", feats * 2)
    capsys.readouterr()
    code, text = run_cli(capsys, ["eval", res, "--index", index])
    assert code == 2, text
    assert "changed since" in text and str(index) in text
