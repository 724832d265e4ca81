"""The camera input of camera-aware models fed from the manifest: camera = camid - offset.

The expected features come from a bare onnxruntime session fed with the tensors and
``camid - offset`` computed here, never from reidctl's own inference path.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from reidctl.artifacts import PrepSet, ResultDir
from reidctl.cli import main
from reidctl.errors import InputError
from reidctl.runners.cameras import CameraRule, camera_rule, prep_first_camera
from reidctl.runners.infer import run_inference
from tests.runners.helpers import export_camera_model, export_tiny, make_prep

CAMIDS = [1, 2, 3, 4, 5, 6, 1, 2, 3, 4]


def reference(model: Path, data: np.ndarray, cameras: list[int]) -> np.ndarray:
    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    cam = np.asarray(cameras, dtype=np.int64)
    return sess.run(None, {"image": data, "camera": cam})[0]


@pytest.fixture
def cam_model(tmp_path: Path) -> Path:
    return export_camera_model(tmp_path / "cam.onnx", sidecar=True)


def features(out: Path) -> np.ndarray:
    return np.asarray(ResultDir.open(out).features())


def test_infer_feeds_camid_minus_the_first_camera(tmp_path, cam_model) -> None:
    prep, data = make_prep(tmp_path / "prep", camids=CAMIDS)
    run = run_inference(cam_model, prep, tmp_path / "r", batch_size=4)
    ref = reference(cam_model, data, [c - 1 for c in CAMIDS])
    np.testing.assert_allclose(features(tmp_path / "r"), ref, rtol=0, atol=1e-6)
    assert run["camera"] == {
        "input": "camera",
        "index": "camid - 1",
        "offset": 1,
        "offset_from": "the sidecar's first_camera",  # "synthetic" sets record none
        "num_cameras": 6,
    }
    assert json.loads((tmp_path / "r" / "run.json").read_text())["camera"]["offset"] == 1


def test_another_camera_changes_the_features(tmp_path, cam_model) -> None:
    cams = [1, 2, 3, 4, 5, 5, 4, 3, 2, 1]
    prep, data = make_prep(tmp_path / "prep", camids=cams)
    r1, r0 = tmp_path / "r1", tmp_path / "r0"
    assert main(["infer", str(cam_model), str(prep), "-o", str(r1), "--bs", "3"]) == 0
    assert main(["infer", str(cam_model), str(prep), "-o", str(r0), "--camera-offset", "0"]) == 0
    f1, f0 = features(r1), features(r0)
    np.testing.assert_allclose(f0, reference(cam_model, data, cams), rtol=0, atol=1e-6)
    np.testing.assert_allclose(f1, reference(cam_model, data, [c - 1 for c in cams]), atol=1e-6)
    assert np.abs(f0 - f1).max(axis=1).min() > 1e-3  # every row moved
    # compare works on such result directories: it reports the difference
    assert main(["compare", str(r1), str(r1)]) == 0
    assert main(["compare", str(r1), str(r0)]) == 1


def test_a_camid_outside_the_model_is_refused_naming_the_image(tmp_path, cam_model, capsys):
    prep, _ = make_prep(tmp_path / "prep", camids=[1, 2, 3, 4, 5, 6, 7, 1, 2, 3])
    out = tmp_path / "r"
    assert main(["infer", str(cam_model), str(prep), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "gallery/gallery_0006_c1s1_000000_00.jpg: camid 7 gives camera index 6" in err
    assert "6 camera rows (0..5" in err and "--camera-offset" in err
    assert "Traceback" not in err and not out.exists()
    # an offset beyond the range in the other direction
    prep2, _ = make_prep(tmp_path / "prep2", camids=CAMIDS)
    assert main(["infer", str(cam_model), str(prep2), "-o", str(out), "--camera-offset", "2"]) == 2
    assert "camid 1 gives camera index -1 (camid - 2, offset from --camera-offset)" in (
        capsys.readouterr().err
    )
    assert not out.exists()


def test_entries_without_camera_ids_are_refused(tmp_path, cam_model) -> None:
    prep, _ = make_prep(tmp_path / "prep", camids=[1, 2, -1, 4, 5, 6, 1, 2, 3, 4])
    with pytest.raises(InputError, match=r"query_0002_c1s1_000000_00\.jpg has no camera id"):
        run_inference(cam_model, prep, tmp_path / "r")


def test_the_sets_first_camera_wins_over_the_sidecars(tmp_path, cam_model) -> None:
    cams = [0, 1, 2, 3, 4, 5, 0, 1, 2, 3]  # a dataset that numbers its cameras from 0
    prep, data = make_prep(tmp_path / "prep", camids=cams, meta={"first_camera": 0})
    run = run_inference(cam_model, prep, tmp_path / "r")
    assert run["camera"]["offset"] == 0
    assert run["camera"]["offset_from"] == "the preprocessed set's first_camera"
    ref = reference(cam_model, data, cams)
    np.testing.assert_allclose(features(tmp_path / "r"), ref, rtol=0, atol=1e-6)


def test_rule_resolution_order() -> None:
    side = {"camera": {"input": "camera", "num_cameras": 6, "first_camera": 1}}
    assert camera_rule(side, {"first_camera": 0}, 3) == CameraRule(3, 6, "--camera-offset")
    assert camera_rule(side, {"first_camera": 0}).offset == 0
    assert camera_rule(side, {"layout": "folder", "first_camera": None}).offset == 1
    assert camera_rule(None, {"layout": "market1501"}) == CameraRule(
        1, None, "the preprocessed set's first_camera"
    )  # a set written before first_camera was recorded: its layout's
    assert prep_first_camera({"layout": "msmt17"}) == 1
    assert prep_first_camera({"layout": "folder"}) is None
    assert camera_rule(None, None) == CameraRule(1, None, "default")
    with pytest.raises(InputError, match="must be an integer"):
        camera_rule(side, None, True)


def test_camera_offset_needs_a_camera_aware_model(tmp_path, capsys) -> None:
    model = export_tiny(tmp_path / "tiny.onnx")
    prep, _ = make_prep(tmp_path / "prep")
    assert main(["infer", str(model), str(prep), "-o", str(tmp_path / "r")]) == 0
    assert "camera" not in json.loads((tmp_path / "r" / "run.json").read_text())
    args = ["infer", str(model), str(prep), "-o", str(tmp_path / "r2"), "--camera-offset", "3"]
    code = main(args)
    assert code == 2 and "--camera-offset applies to camera-aware models" in capsys.readouterr().err


@pytest.mark.filterwarnings("ignore:.*has no sidecar")
def test_model_without_sidecar_checks_only_non_negative(tmp_path) -> None:
    model = export_camera_model(tmp_path / "cam.onnx")  # no sidecar, no camera block
    prep, data = make_prep(tmp_path / "prep", camids=CAMIDS)
    run = run_inference(model, prep, tmp_path / "r")
    assert run["camera"]["num_cameras"] is None and run["camera"]["offset"] == 1
    np.testing.assert_allclose(
        features(tmp_path / "r"), reference(model, data, [c - 1 for c in CAMIDS]), atol=1e-6
    )
    prep0, _ = make_prep(tmp_path / "prep0", camids=[0] * 10)
    with pytest.raises(InputError, match="camid 0 gives camera index -1"):
        run_inference(model, prep0, tmp_path / "r0")


def test_int8_calibrates_and_guards_with_the_manifests_cameras(tmp_path, cam_model) -> None:
    from reidctl.artifacts import read_sidecar
    from reidctl.convert.int8 import PrepCalibrationReader, SameSetWarning, int8_from_onnx

    prep, data = make_prep(tmp_path / "prep", n=12, camids=[*CAMIDS, 5, 6])
    reader = PrepCalibrationReader(prep, "image", samples=12, batch_size=5, camera=camera_rule(
        read_sidecar(cam_model), PrepSet.open(prep).meta
    ))  # fmt: skip
    first = reader.get_next()
    assert first is not None and sorted(first) == ["camera", "image"]
    assert first["camera"].tolist() == [0, 1, 2, 3, 4] and first["camera"].dtype == np.int64
    np.testing.assert_array_equal(first["image"], data[:5])

    with pytest.warns(SameSetWarning):  # a toy check: calibration and guard on one set
        side = int8_from_onnx(
            cam_model, prep, tmp_path / "cam.int8.onnx", samples=12, eval_dir=prep, threads=1
        )
    assert side["conversion"]["calibration"]["camera"]["offset"] == 1
    assert side["camera"]["num_cameras"] == 6  # the facts travel on
    assert side["conversion"]["accuracy_guard"]["min_cosine"] > 0.9
    # the INT8 model runs through infer with the same rule
    run_inference(tmp_path / "cam.int8.onnx", prep, tmp_path / "r8")
    ref = reference(cam_model, data, [c - 1 for c in [*CAMIDS, 5, 6]])
    cos = np.sum(features(tmp_path / "r8") * ref, axis=1) / (
        np.linalg.norm(features(tmp_path / "r8"), axis=1) * np.linalg.norm(ref, axis=1)
    )
    assert cos.min() > 0.99

    bad, _ = make_prep(tmp_path / "bad", camids=[1, 2, 3, 4, 5, 6, 9, 1, 2, 3])
    with pytest.raises(InputError, match="camid 9 gives camera index 8"):
        int8_from_onnx(cam_model, bad, tmp_path / "bad.int8.onnx", samples=10)
    assert not (tmp_path / "bad.int8.onnx").exists()


@pytest.mark.filterwarnings("ignore::reidctl.convert.fp16.Float16NotRunWarning")
def test_fp16_keeps_the_camera_input_int64_and_feeds_manifest_cameras(tmp_path, cam_model):
    import onnx

    from reidctl.convert.fp16 import fp16_from_onnx

    prep, _ = make_prep(tmp_path / "prep", camids=CAMIDS)
    for keep in (True, False):
        out = tmp_path / f"cam-{keep}.fp16.onnx"
        side = fp16_from_onnx(cam_model, out, keep_io_types=keep, data=prep)
        m = onnx.load(str(out))
        types = {i.name: i.type.tensor_type.elem_type for i in m.graph.input}
        assert types["camera"] == onnx.TensorProto.INT64
        assert side["inputs"][1]["dtype"] == "int64" and side["camera"]["num_cameras"] == 6
        assert side["conversion"]["validation"]["results"][0]["mean_cosine"] > 0.999


@pytest.mark.ray
@pytest.mark.slow
def test_ray_engine_feeds_the_same_cameras(tmp_path, cam_model, capsys) -> None:
    pytest.importorskip("ray", reason="ray is not installed (reidctl[ray])")
    prep, data = make_prep(tmp_path / "prep", camids=CAMIDS)
    ray_args = ["--engine", "ray", "--workers", "1", "--bs", "4"]
    out = tmp_path / "r-ray"
    assert main(["infer", str(cam_model), str(prep), "-o", str(out), *ray_args]) == 0
    ref = reference(cam_model, data, [c - 1 for c in CAMIDS])
    np.testing.assert_allclose(features(out), ref, rtol=0, atol=1e-6)
    run = json.loads((out / "run.json").read_text())
    assert run["engine"]["name"] == "ray" and run["camera"]["offset"] == 1
    capsys.readouterr()
    bad = tmp_path / "r-bad"
    assert main(["infer", str(cam_model), str(prep), "-o", str(bad), *ray_args,
                 "--camera-offset", "2"]) == 2  # fmt: skip
    assert "camid 1 gives camera index -1" in capsys.readouterr().err and not bad.exists()


@pytest.mark.shared
def test_images_stream_feeds_the_same_cameras(tmp_path, cam_model, market_mini) -> None:
    """``infer --images`` (no tensor files) gives what preprocess + infer give."""
    prep = tmp_path / "prep"
    pre = ["preprocess", "market1501", "--root", str(market_mini), "--model-config"]
    assert main([*pre, str(cam_model), "-o", str(prep)]) == 0
    assert main(["infer", str(cam_model), str(prep), "-o", str(tmp_path / "r"), "--bs", "8"]) == 0
    args = ["infer", str(cam_model), "--images", str(market_mini), "--layout", "market1501"]
    assert main([*args, "-o", str(tmp_path / "rs"), "--bs", "8"]) == 0
    run = json.loads((tmp_path / "rs" / "run.json").read_text())
    assert run["camera"]["offset"] == 1
    assert run["camera"]["offset_from"] == "the preprocessed set's first_camera"
    np.testing.assert_array_equal(features(tmp_path / "rs"), features(tmp_path / "r"))
    # and the camera is live: the reference with camid - 1 matches, camid - 0 would not fit
    p = PrepSet.open(prep)
    cams = [e.camid - 1 for e in p.entries]
    ref = reference(cam_model, p.read_batch(range(len(p.entries))), cams)
    np.testing.assert_allclose(features(tmp_path / "rs"), ref, rtol=0, atol=1e-5)
    assert main([*args, "-o", str(tmp_path / "r0"), "--camera-offset", "0"]) == 2
