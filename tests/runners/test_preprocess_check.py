"""A preprocessed set made with other preprocessing than the model's sidecar states is
refused wherever a set meets a model: infer, bench --data, convert int8 --calib / --eval."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from reidctl.cli import main
from tests.convert.test_int8 import _tiny_onnx, make_prep

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("prep-check")
    return {
        "model": _tiny_onnx(base / "tiny.onnx"),
        "good": make_prep(base / "good", {"query": 1, "gallery": 2}, seed=2),
        "calib": make_prep(base / "calib", {"train": 2}, seed=1),
        "base": base,
    }


def _variant(src: Path, dst: Path, **changes) -> Path:
    """A copy of ``src`` whose meta.json preprocessing says ``changes``."""
    dst.mkdir()
    for p in src.iterdir():
        (dst / p.name).write_bytes(p.read_bytes())
    meta = json.loads((dst / "meta.json").read_text())
    meta["preprocess"].update(changes)
    for k in ("flip",):
        if k in changes:
            meta[k] = changes.pop(k)
            meta["preprocess"].pop(k)
    (dst / "meta.json").write_text(json.dumps(meta))
    return dst


MISMATCHES = [
    ({"color": "bgr"}, "color: set bgr, model rgb"),
    ({"mean": [0.5, 0.5, 0.5]}, "mean: set 0.5,0.5,0.5, model 0.485,0.456,0.406"),
    ({"std": [0.2, 0.2, 0.2]}, "std: set 0.2,0.2,0.2"),
    ({"interpolation": "area"}, "interpolation: set area, model bilinear"),
    ({"normalize_in_graph": True}, "normalize_in_graph: set True, model False"),
]


def _run(argv: list[str], capsys) -> tuple[int, str]:
    rc = main([str(a) for a in argv])
    return rc, capsys.readouterr().err


@pytest.mark.parametrize(("changes", "text"), MISMATCHES)
def test_infer_refuses_mismatch(env, tmp_path, capsys, changes, text) -> None:
    prep = _variant(env["good"], tmp_path / "p", **changes)
    out = tmp_path / "res"
    rc, err = _run(["infer", env["model"], prep, "-o", out], capsys)
    assert rc == 2, err
    assert text in err and str(prep / "meta.json") in err and str(env["model"]) in err
    assert "--allow-preprocess-mismatch" in err and "Traceback" not in err
    assert not out.exists()


def test_infer_allows_mismatch_on_request_and_records_it(env, tmp_path, capsys) -> None:
    prep = _variant(env["good"], tmp_path / "p", color="bgr")
    out = tmp_path / "res"
    argv = ["infer", env["model"], prep, "-o", out, "--allow-preprocess-mismatch"]
    rc, err = _run(argv, capsys)
    assert rc == 0, err
    assert "preprocessing mismatch" in err
    check = json.loads((out / "run.json").read_text())["preprocess_check"]
    assert check["allowed"] is True and check["checked"] is True
    assert check["mismatch"] == [{"field": "color", "prep": "bgr", "model": "rgb"}]


def test_matching_and_flipped_sets_run(env, tmp_path, capsys) -> None:
    for name, prep in (
        ("same", env["good"]),
        ("flip", _variant(env["good"], tmp_path / "f", flip=True)),
    ):
        rc, err = _run(["infer", env["model"], prep, "-o", tmp_path / name], capsys)
        assert rc == 0, err
        check = json.loads((tmp_path / name / "run.json").read_text())["preprocess_check"]
        assert check == {"checked": True, "mismatch": [], "allowed": False}


def test_foreign_model_runs_with_a_note(env, tmp_path, capsys) -> None:
    bare = tmp_path / "bare.onnx"
    bare.write_bytes(env["model"].read_bytes())
    prep = _variant(env["good"], tmp_path / "p", color="bgr")
    rc, err = _run(["infer", bare, prep, "-o", tmp_path / "res"], capsys)
    assert rc == 0, err
    assert "has no sidecar" in err and "not checked" in err
    check = json.loads((tmp_path / "res" / "run.json").read_text())["preprocess_check"]
    assert check["checked"] is False


def test_bench_data_refuses_mismatch(env, tmp_path, capsys) -> None:
    prep = _variant(env["good"], tmp_path / "p", std=[0.5, 0.5, 0.5])
    argv = ["bench", env["model"], "--backend", "ort", "--bs", "2", "--iters", "1",
            "--warmup", "0", "--data", prep]  # fmt: skip
    rc, err = _run(argv, capsys)
    assert rc == 2 and "std: set 0.5,0.5,0.5" in err and "Traceback" not in err
    rc, err = _run([*argv, "--allow-preprocess-mismatch"], capsys)
    assert rc == 0, err


@pytest.mark.parametrize("role", ["--calib", "--eval"])
def test_convert_int8_refuses_mismatch(env, tmp_path, capsys, role) -> None:
    bad = _variant(env["calib" if role == "--calib" else "good"], tmp_path / "p", color="bgr")
    calib = bad if role == "--calib" else env["calib"]
    out = tmp_path / "q.onnx"
    argv = ["convert", "int8", env["model"], "--calib", calib, "-o", out]
    if role == "--eval":
        argv += ["--eval", bad]
    rc, err = _run(argv, capsys)
    assert rc == 2 and "color: set bgr, model rgb" in err and str(bad) in err
    assert not out.exists()
    rc, err = _run([*argv, "--allow-preprocess-mismatch"], capsys)
    assert rc == 0, err
    side = json.loads(Path(f"{out}.json").read_text())
    key = role.lstrip("-")
    assert side["conversion"]["preprocess_check"][key]["mismatch"][0]["field"] == "color"
