"""``run_inference`` and ``compare`` on tiny ONNX models with the ort back end."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil

import numpy as np
import pytest

from reidctl.artifacts import read_manifest
from reidctl.cli import main
from reidctl.errors import (
    BackendUnavailableError,
    FormatError,
    InputError,
    OutputExistsError,
    ShapeMismatchError,
    UnknownNameError,
    ValidationError,
)
from reidctl.runners.compare import check_comparison, compare_results, row_cosine
from reidctl.runners.infer import read_tensor, run_inference
from tests.runners.helpers import make_prep, ort_reference


@pytest.fixture(scope="module")
def ort_run(tiny_onnx, prep, tmp_path_factory):
    out = tmp_path_factory.mktemp("res") / "ort"
    run = run_inference(tiny_onnx, prep[0], out, batch_size=4, dump="bin", threads=1)
    return out, run


def test_features_match_a_bare_session_in_manifest_order(ort_run, tiny_onnx, prep):
    out, run = ort_run
    ref_feat, ref_local = ort_reference(tiny_onnx, prep[1])
    np.testing.assert_allclose(np.load(out / "features/feature.npy"), ref_feat, atol=1e-6)
    np.testing.assert_allclose(np.load(out / "features/local.npy"), ref_local, atol=1e-6)
    assert run["outputs"] == ["feature", "local"] and run["feature"] == "feature"
    assert run["num_images"] == 10 and run["batch_size"] == 4 and run["backend"] == "ort"
    assert run["images_per_s"] > 0 and "onnxruntime" in run["versions"]
    assert json.loads((out / "run.json").read_text()) == run
    assert (out / "manifest.jsonl").read_bytes() == (prep[0] / "manifest.jsonl").read_bytes()
    assert json.loads((out / "model.json").read_text())["model"] == "tiny"
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no staging left


def test_dump_uses_vendor_names_from_index_base(ort_run, prep, tmp_path, tiny_onnx):
    out, _ = ort_run
    entries = read_manifest(prep[0])
    feats = np.load(out / "features/feature.npy")
    local = np.load(out / "features/local.npy")
    assert len(list((out / "dump").iterdir())) == 2 * len(entries)
    stem = entries[3].stem
    np.testing.assert_array_equal(np.fromfile(out / f"dump/{stem}_1.bin", "<f4"), feats[3])
    np.testing.assert_array_equal(np.fromfile(out / f"dump/{stem}_2.bin", "<f4"), local[3].ravel())
    run_inference(tiny_onnx, prep[0], tmp_path / "r0", dump="txt", index_base=0)
    txt = np.loadtxt(tmp_path / f"r0/dump/{stem}_1.txt")
    assert txt.shape == (2, 4)
    np.testing.assert_allclose(txt, local[3], rtol=1e-6, atol=1e-7)
    assert (tmp_path / f"r0/dump/{stem}_0.txt").is_file()


def test_static_batch_foreign_onnx_runs_padded_and_matches(
    ort_run, tiny_static_foreign, prep, tmp_path
):
    out, _ = ort_run
    run = run_inference(tiny_static_foreign, prep[0], tmp_path / "s", batch_size=32)
    feats = np.load(tmp_path / "s/features/feature.npy")
    np.testing.assert_allclose(feats, np.load(out / "features/feature.npy"), atol=1e-5)
    facts = json.loads((tmp_path / "s/model.json").read_text())
    assert facts["inputs"][0]["name"] == "input.1" and facts["static_batch"] == 4
    assert facts["feature"] == "feature" and "no sidecar" in facts["facts_source"]
    assert run["num_images"] == 10


def test_feature_override_and_unknown_feature(tiny_onnx, prep, tmp_path):
    run_inference(tiny_onnx, prep[0], tmp_path / "a", feature="local")
    assert json.loads((tmp_path / "a/model.json").read_text())["feature"] == "local"
    with pytest.raises(UnknownNameError, match="feature, local"):
        run_inference(tiny_onnx, prep[0], tmp_path / "b", feature="logits")


def test_existing_output_needs_force_and_is_replaced(ort_run, tiny_onnx, prep, tmp_path):
    out = tmp_path / "r"
    shutil.copytree(ort_run[0], out)
    with pytest.raises(OutputExistsError, match="--force"):
        run_inference(tiny_onnx, prep[0], out)
    run_inference(tiny_onnx, prep[0], out, force=True)
    assert not (out / "dump").exists()  # the old directory was replaced, not merged
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(OutputExistsError, match="not a reidctl result directory"):
        run_inference(tiny_onnx, prep[0], other, force=True)
    assert (other / "notes.txt").read_text() == "keep me"


def test_shape_and_dtype_mismatch_show_both_shapes(tiny_onnx, tmp_path):
    wrong, _ = make_prep(tmp_path / "p1", n=2, shape=(3, 32, 8))
    with pytest.raises(ShapeMismatchError, match=r"\['batch', 3, 16, 8\].*\[batch, 3, 32, 8\]"):
        run_inference(tiny_onnx, wrong, tmp_path / "r1")
    u8, _ = make_prep(tmp_path / "p2", n=2, dtype="uint8")
    with pytest.raises(ShapeMismatchError, match=r"float32.*uint8"):
        run_inference(tiny_onnx, u8, tmp_path / "r2")
    assert not (tmp_path / "r1").exists() and not (tmp_path / "r2").exists()


def test_truncated_tensor_names_the_file(tiny_onnx, tmp_path):
    p, _ = make_prep(tmp_path / "p", n=3)
    victim = sorted(p.glob("*.bin"))[1]
    victim.write_bytes(victim.read_bytes()[:-4])
    with pytest.raises(FormatError, match=f"{victim.name} is truncated"):
        run_inference(tiny_onnx, p, tmp_path / "r")
    with pytest.raises(FormatError, match="truncated"):
        read_tensor(victim, "float32", (3, 16, 8))
    assert not (tmp_path / "r").exists()


def test_read_tensor_round_trip(prep):
    entries = read_manifest(prep[0])
    arr = read_tensor(prep[0] / entries[2].bin, "float32", (3, 16, 8))
    np.testing.assert_array_equal(arr, prep[1][2])


def test_missing_manifest_or_meta(tiny_onnx, tmp_path):
    p, _ = make_prep(tmp_path / "p", n=2)
    os.remove(p / "manifest.jsonl")
    with pytest.raises(FormatError, match="manifest not found"):
        run_inference(tiny_onnx, p, tmp_path / "r")
    os.remove(p / "meta.json")
    with pytest.raises(FormatError, match=r"meta\.json not found"):
        run_inference(tiny_onnx, p, tmp_path / "r")


def test_unknown_and_unavailable_backend_and_foreign_options(tiny_onnx, prep, tmp_path):
    with pytest.raises(UnknownNameError, match="valid back ends: acl, ais_bench, openvino, ort"):
        run_inference(tiny_onnx, prep[0], tmp_path / "r", backend="tvm")
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"\0")
    if importlib.util.find_spec("tensorrt") is None:
        with pytest.raises(BackendUnavailableError, match="TensorRT >= 10"):
            run_inference(engine, prep[0], tmp_path / "r")
    with pytest.raises(InputError, match="precision do not apply to back end 'ort'"):
        run_inference(tiny_onnx, prep[0], tmp_path / "r", precision="bf16")


def test_cli_infer_refuses_an_unknown_runner_option(tiny_onnx, prep, tmp_path, capsys):
    out = tmp_path / "r-precision"
    assert main(["infer", str(tiny_onnx), str(prep[0]), "-o", str(out), "--precision", "f16"]) == 2
    err = capsys.readouterr().err
    assert "precision do not apply to back end 'ort' (its options: threads, streams)" in err
    assert not out.exists()


def test_compare_reports_and_fails_beyond_thresholds(ort_run, tiny_onnx, prep, tmp_path):
    a = ort_run[0]
    report = compare_results(a, a, atol=0.0, min_cos=0.999999)
    assert report["passed"] and report["outputs"]["feature"]["max_abs_diff"] == 0.0
    b = tmp_path / "b"
    shutil.copytree(a, b)
    f = np.load(b / "features/feature.npy")
    f[7] = -f[7]
    np.save(b / "features/feature.npy", f)
    report = compare_results(a, b, min_cos=0.9999)
    assert report["outputs"]["feature"]["worst_rows"][0]["index"] == 7
    assert report["outputs"]["feature"]["min_cosine"] == pytest.approx(-1.0)
    with pytest.raises(ValidationError, match="feature: min cosine"):
        check_comparison(report)
    assert main(["compare", str(a), str(b)]) == 1
    assert main(["compare", str(a), str(a), "--atol", "0"]) == 0
    (b / "run.json").unlink()
    assert main(["compare", str(a), str(b)]) == 2  # incomplete result directory


def test_row_cosine_handles_zero_rows():
    a = np.array([[1.0, 0.0], [0.0, 0.0]])
    np.testing.assert_allclose(row_cosine(a, a), [1.0, 1.0])


def test_cli_infer_and_backends(tiny_onnx, prep, tmp_path, capsys):
    assert (
        main(["infer", str(tiny_onnx), str(prep[0]), "-o", str(tmp_path / "r"), "--bs", "3"]) == 0
    )
    assert "images/s" in capsys.readouterr().out
    assert main(["infer", str(tiny_onnx), str(prep[0]), "-o", str(tmp_path / "r")]) == 2
    assert (
        main(
            ["infer", str(tiny_onnx), str(prep[0]), "-o", str(tmp_path / "x"), "--backend", "nope"]
        )
        == 2
    )
    assert "valid back ends" in capsys.readouterr().err
    assert main(["backends"]) == 0
    table = capsys.readouterr().out
    assert any(line.split()[:2] == ["ort", "yes"] for line in table.splitlines())


@pytest.mark.openvino
def test_openvino_matches_ort_in_fp32(ort_run, tiny_onnx, prep, tmp_path):
    pytest.importorskip("openvino")
    run = run_inference(tiny_onnx, prep[0], tmp_path / "ov", backend="openvino", batch_size=3)
    assert run["device"].endswith("f32)")
    report = compare_results(ort_run[0], tmp_path / "ov", atol=1e-4, min_cos=0.99999)
    check_comparison(report)
