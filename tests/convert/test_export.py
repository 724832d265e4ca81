"""reidctl export: ONNX export, validation, sidecar, atomicity and errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from reidctl.artifacts import read_sidecar
from reidctl.cli import main
from reidctl.convert.onnx import onnx_from_torch
from reidctl.errors import InputError, OutputExistsError, ValidationError
from reidctl.models.loading import create_model
from reidctl.models.registry import get_spec, list_models

SMALL = "osnet_x0_25"


def _axis0(value_info: onnx.ValueInfoProto) -> str | int:
    d = value_info.type.tensor_type.shape.dim[0]
    return d.dim_param if d.dim_param else d.dim_value


@pytest.fixture(scope="module")
def small_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("export") / "small.onnx"
    onnx_from_torch(SMALL, out)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("name", list_models())
def test_every_registered_model_exports_with_dynamic_batch(name: str, tmp_path: Path) -> None:
    out = tmp_path / f"{name}.onnx"
    sidecar = onnx_from_torch(name, out, validate_batches=(1, 3))
    spec = get_spec(name)
    proto = onnx.load(str(out))
    names = [o.name for o in proto.graph.output]
    required = [o.name for o in spec.outputs if o.name not in spec.optional_outputs]
    assert names == required  # random init: no classifier, so no optional outputs
    assert [i.name for i in proto.graph.input] == [i.name for i in spec.inputs]
    assert [i["name"] for i in sidecar["inputs"]] == [i.name for i in spec.inputs]
    assert all(_axis0(i) == "batch" for i in proto.graph.input)
    if spec.camera_input is not None:
        assert proto.graph.input[1].type.tensor_type.elem_type == onnx.TensorProto.INT64
        assert sidecar["camera"]["num_cameras"] == spec.num_cameras
        assert sidecar["camera"]["index"] == "camid - first_camera"
    assert all(_axis0(o) == "batch" for o in proto.graph.output)
    assert sidecar["feature"] == spec.feature
    assert {r["batch"] for r in sidecar["validation"]["results"]} == {1, 3}
    assert all(r["rel_diff"] <= spec.tolerance for r in sidecar["validation"]["results"])


@pytest.mark.shared
@pytest.mark.slow
def test_real_osnet_checkpoint_matches_torch_within_1e4(
    osnet_weights: Path, tmp_path: Path
) -> None:
    out = tmp_path / "osnet.onnx"
    assert main(["export", SMALL, "--weights", str(osnet_weights), "-o", str(out)]) == 0
    sidecar = read_sidecar(out)
    assert sidecar["weights"]["sha256"].startswith("c0ff09177a21")
    loaded = create_model(SMALL, weights=osnet_weights)
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(1)
    for batch in (1, 3, 32):
        x = rng.standard_normal((batch, 3, 256, 128), dtype=np.float32)
        (got,) = sess.run(["feature"], {"image": x})
        with torch.inference_mode():
            (ref,) = loaded.module(torch.from_numpy(x))
        assert got.shape == (batch, 512)
        assert np.max(np.abs(got - ref.numpy())) <= 1e-4


def test_sidecar_carries_the_facts(small_onnx: Path) -> None:
    sidecar = json.loads(Path(f"{small_onnx}.json").read_text())
    assert sidecar["format"] == "reidctl.model/1"
    assert sidecar["model"] == SMALL
    assert sidecar["weights"] is None
    assert sidecar["inputs"] == [
        {"name": "image", "shape": ["batch", 3, 256, 128], "dtype": "float32"}
    ]
    assert sidecar["outputs"] == [{"name": "feature", "shape": ["batch", 512], "dtype": "float32"}]
    assert sidecar["feature"] == "feature" and sidecar["l2_normalize"] is True
    assert sidecar["opset"] == 17
    assert sidecar["preprocess"]["height"] == 256 and sidecar["preprocess"]["width"] == 128
    from reidctl.io import sha256_file

    assert sidecar["model_sha256"] == sha256_file(small_onnx)
    assert {r["batch"] for r in sidecar["validation"]["results"]} == {1, 3, 32}


def test_export_is_deterministic(small_onnx: Path, tmp_path: Path) -> None:
    again = tmp_path / "again.onnx"
    onnx_from_torch(SMALL, again, validate_batches=(1,))
    assert again.read_bytes() == small_onnx.read_bytes()


def test_static_batch(tmp_path: Path) -> None:
    out = tmp_path / "static.onnx"
    sidecar = onnx_from_torch(SMALL, out, static_batch=4)
    proto = onnx.load(str(out))
    assert _axis0(proto.graph.input[0]) == 4
    assert all(_axis0(o) == 4 for o in proto.graph.output)
    assert sidecar["static_batch"] == 4
    assert [r["batch"] for r in sidecar["validation"]["results"]] == [4]


def test_fold_normalize_takes_uint8_and_matches_float_model(
    small_onnx: Path, tmp_path: Path
) -> None:
    out = tmp_path / "folded.onnx"
    sidecar = onnx_from_torch(SMALL, out, fold_normalize=True, validate_batches=(2,))
    assert sidecar["inputs"][0]["dtype"] == "uint8"
    assert sidecar["preprocess"]["normalize_in_graph"] is True
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (2, 3, 256, 128), dtype=np.uint8)
    mean = np.array(sidecar["preprocess"]["mean"], np.float32).reshape(1, 3, 1, 1)
    std = np.array(sidecar["preprocess"]["std"], np.float32).reshape(1, 3, 1, 1)
    x = ((img.astype(np.float32) / 255.0 - mean) / std).astype(np.float32)
    (folded,) = ort.InferenceSession(str(out)).run(None, {"image": img})
    (plain,) = ort.InferenceSession(str(small_onnx)).run(None, {"image": x})
    assert np.max(np.abs(folded - plain)) <= 1e-4 * np.max(np.abs(plain))


def test_validation_failure_leaves_nothing_and_keeps_existing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "m.onnx"
    out.write_bytes(b"previous model")
    import reidctl.convert.onnx as export_mod

    real = export_mod.validate_onnx

    def strict(*args, **kwargs):  # tolerance 0 cannot be met
        args = list(args)
        args[6] = 0.0
        return real(*args, **kwargs)

    monkeypatch.setattr(export_mod, "validate_onnx", strict)
    with pytest.raises(ValidationError, match="output 'feature' at batch 1"):
        onnx_from_torch(SMALL, out, force=True, validate_batches=(1,))
    assert out.read_bytes() == b"previous model"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


def test_existing_output_needs_force(small_onnx: Path) -> None:
    with pytest.raises(OutputExistsError, match="--force"):
        onnx_from_torch(SMALL, small_onnx)


# ----------------------------------------------------------------- CLI errors (exit code 2)


def _run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(args)
    return code, capsys.readouterr().err


def test_cli_unknown_model_lists_valid_names(tmp_path: Path, capsys) -> None:
    code, err = _run(["export", "resnet51", "-o", str(tmp_path / "a.onnx")], capsys)
    assert code == 2
    assert "unknown model 'resnet51'" in err and "osnet_x0_25" in err and "aligned_reid" in err


def test_cli_missing_weights(tmp_path: Path, capsys) -> None:
    code, err = _run(
        ["export", SMALL, "--weights", str(tmp_path / "nope.pth"), "-o", str(tmp_path / "a.onnx")],
        capsys,
    )
    assert code == 2 and "weights file not found" in err and "nope.pth" in err
    assert not (tmp_path / "a.onnx").exists()


def test_cli_corrupt_weights(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"\x80\x02this is not a checkpoint")
    code, err = _run(
        ["export", SMALL, "--weights", str(bad), "-o", str(tmp_path / "a.onnx")], capsys
    )
    assert code == 2 and "bad.pth" in err and "checkpoint" in err


def test_cli_wrong_keys_lists_them(tmp_path: Path, capsys) -> None:
    ckpt = tmp_path / "wrong.pth"
    torch.save(
        {"state_dict": {"foo.weight": torch.zeros(3), "conv1.conv.weight": torch.zeros(1)}}, ckpt
    )
    code, err = _run(
        ["export", SMALL, "--weights", str(ckpt), "-o", str(tmp_path / "a.onnx")], capsys
    )
    assert code == 2
    assert "missing keys" in err and "unexpected keys (1): foo.weight" in err
    assert "conv1.conv.weight: checkpoint (1,)" in err


def test_cli_bad_static_batch(tmp_path: Path, capsys) -> None:
    code, err = _run(
        ["export", SMALL, "--static-batch", "0", "-o", str(tmp_path / "a.onnx")], capsys
    )
    assert code == 2 and "--static-batch" in err


def test_cli_unwritable_output(tmp_path: Path, capsys) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a file where a folder should be")
    code, err = _run(["export", SMALL, "-o", str(blocker / "sub" / "a.onnx")], capsys)
    assert code == 2 and "cannot create the output folder" in err


def test_cli_existing_output(small_onnx: Path, capsys) -> None:
    code, err = _run(["export", SMALL, "-o", str(small_onnx)], capsys)
    assert code == 2 and "--force" in err


def test_check_output_path_rejects_other_suffix(tmp_path: Path) -> None:
    from reidctl.convert.onnx import check_output_path

    with pytest.raises(InputError, match=r"\.onnx"):
        check_output_path(tmp_path / "model.bin", force=False)
