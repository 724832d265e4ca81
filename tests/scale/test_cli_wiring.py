"""The scale-out engines through the CLI: ``eval --index``, ``--engine ray``, option checks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from reidctl.artifacts import read_manifest
from reidctl.cli import main
from reidctl.io import write_json_atomic
from reidctl.specs import PreprocessSpec
from tests.scale.helpers import export_tiny_onnx, make_results

N_QUERY, N_GALLERY = 12, 40


@pytest.fixture(scope="module")
def indexed(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny result directory and a flat FAISS index over its gallery rows."""
    pytest.importorskip("faiss", reason="faiss-cpu is not installed (reidctl[faiss])")
    from reidctl.scale import faiss_index as fi

    root = tmp_path_factory.mktemp("wiring")
    res, _ = make_results(root / "results", n_query=N_QUERY, n_gallery=N_GALLERY, seed=3)
    # The dense evaluation reads the whole model.json (formats.md section 3): complete it.
    facts = json.loads((res / "model.json").read_text())
    facts["preprocess"] = PreprocessSpec().to_dict()
    facts["inputs"] = [{"name": "image", "shape": ["batch", 3, 256, 128], "dtype": "float32"}]
    write_json_atomic(res / "model.json", facts)
    index = fi.save_gallery_index(fi.build_gallery_index(res), root / "gallery.index")
    return res, index


@pytest.mark.faiss
def test_eval_index_json_recall_and_full_depth_equals_dense(indexed, tmp_path, capsys):
    res, index = indexed
    out = tmp_path / "m.json"
    args = ["eval", str(res), "--index", str(index), "-k", "5", "--exact-check", "--json"]
    assert main([*args, str(out)]) == 0
    printed = capsys.readouterr().out
    assert "rank-1" in printed and "within the top k" in printed
    assert "recall@5 against exact search: 1.0000" in printed
    m = json.loads(out.read_text())
    assert 0.0 <= m["rank1"] <= 1.0 and 0.0 <= m["mAP"] <= 1.0
    assert m["index"]["k"] == 5 and len(m["cmc"]) == 5
    assert m["index"]["recall_at_k"] == 1.0  # a flat index is exact
    assert m["index"]["exact"]["mAP"] == pytest.approx(m["mAP"])

    # k >= gallery size: the top-k lists are the full ranking, so the metrics are the dense ones
    deep, dense = tmp_path / "deep.json", tmp_path / "dense.json"
    assert main(["eval", str(res), "--index", str(index), "-k", "64", "--json", str(deep)]) == 0
    assert main(["eval", str(res), "--json", str(dense)]) == 0
    capsys.readouterr()
    d, e = json.loads(deep.read_text()), json.loads(dense.read_text())
    assert d["index"]["k"] == N_GALLERY
    assert d["rank1"] == pytest.approx(e["rank1"])
    assert d["mAP"] == pytest.approx(e["mAP"], abs=1e-9)
    assert d["num_valid_query"] == e["num_valid_query"] and d["num_gallery"] == N_GALLERY
    # shallow lists can only lose positives: their mAP is a lower bound
    assert m["mAP"] <= e["mAP"] + 1e-12


@pytest.mark.faiss
def test_eval_index_refuses_dense_only_options(indexed, tmp_path, capsys):
    res, index = indexed
    base = ["eval", str(res), "--index", str(index)]
    assert main([*base, "--rerank"]) == 2
    assert "--rerank cannot be used with --index" in capsys.readouterr().err
    assert main([*base, "--prep", str(tmp_path), "--centroids"]) == 2
    assert "--prep, --centroids cannot be used with --index" in capsys.readouterr().err
    assert main(["eval", str(res), "-k", "5"]) == 2
    assert "add --index" in capsys.readouterr().err


def test_engine_option_conflicts_exit_2(tmp_path, capsys):
    pre = ["preprocess", "market1501", "--root", str(tmp_path), "-o", str(tmp_path / "p")]
    assert main([*pre, "--engine", "ray", "--workers", "2"]) == 2
    assert "--workers applies to the local engine" in capsys.readouterr().err
    assert main([*pre, "--address", "auto"]) == 2
    assert "add --engine ray" in capsys.readouterr().err
    assert not (tmp_path / "p").exists()

    inf = ["infer", str(tmp_path / "m.onnx"), str(tmp_path), "-o", str(tmp_path / "r")]
    assert main([*inf, "--workers", "2", "--resume"]) == 2
    assert "--workers, --resume apply to the Ray engine" in capsys.readouterr().err
    assert main([*inf, "--address", "127.0.0.1:6379"]) == 2
    assert main([*inf, "--gpus-per-worker", "1"]) == 2
    assert main([*inf, "--engine", "spark"]) == 2
    assert not (tmp_path / "r").exists()


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


@pytest.mark.ray
@pytest.mark.slow
def test_preprocess_and_infer_with_ray_engine_equal_local(tmp_path, capsys):
    pytest.importorskip("ray", reason="ray is not installed (reidctl[ray])")
    from reidctl.preprocess.synthetic import make_synthetic_market

    data = make_synthetic_market(
        tmp_path / "data", 4, num_train_ids=0, num_distractors=2, num_junk=1
    )
    model = export_tiny_onnx(tmp_path / "tiny.onnx")
    pre = ["preprocess", "market1501", "--root", str(data.root), "--relative-info"]
    assert main([*pre, "-o", str(tmp_path / "prep"), "--workers", "1"]) == 0
    assert main([*pre, "-o", str(tmp_path / "prep-ray"), "--engine", "ray"]) == 0
    assert "tensors (query" in capsys.readouterr().out
    assert _files(tmp_path / "prep-ray") == _files(tmp_path / "prep")

    prep = str(tmp_path / "prep")
    assert main(["infer", str(model), prep, "-o", str(tmp_path / "res"), "--bs", "2"]) == 0
    capsys.readouterr()
    ray_args = ["--bs", "2", "--engine", "ray", "--workers", "2"]
    assert main(["infer", str(model), prep, "-o", str(tmp_path / "res-ray"), *ray_args]) == 0
    printed = capsys.readouterr().out
    assert "ray: 2 worker(s) on 1 node(s)" in printed and "0 retried" in printed
    run = json.loads((tmp_path / "res-ray" / "run.json").read_text())
    assert run["engine"]["name"] == "ray" and run["engine"]["workers"] == 2
    feat = "features/feature.npy"
    local, distributed = _files(tmp_path / "res"), _files(tmp_path / "res-ray")
    assert distributed[feat] == local[feat]
    # the whole directory but run.json (timings, engine record) is the same, byte for byte
    assert {k: v for k, v in distributed.items() if k != "run.json"} == {
        k: v for k, v in local.items() if k != "run.json"
    }
    rows = len(read_manifest(prep))  # junk (pid -1) is dropped
    assert rows == data.num_query + data.num_gallery - data.num_junk
    assert np.load(tmp_path / "res-ray" / feat).shape == (rows, 16)
