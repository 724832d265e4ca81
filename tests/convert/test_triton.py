"""Triton repositories, their config.pbtxt parsed with Triton's own protobuf schema."""

from __future__ import annotations

import json

import pytest

from reidctl.artifacts import read_sidecar, write_sidecar
from reidctl.cli import main
from reidctl.convert.triton import triton_repository
from reidctl.errors import InputError, OutputExistsError
from tests.runners.helpers import H, W, export_tiny

model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2")
text_format = pytest.importorskip("google.protobuf.text_format")


def parse(path):
    return text_format.Parse(path.read_text(encoding="utf-8"), model_config_pb2.ModelConfig())


def tensor(cfg_list, name):
    return next(t for t in cfg_list if t.name == name)


def check_params(cfg, facts):
    params = {k: v.string_value for k, v in cfg.parameters.items()}
    assert params["reidctl.model"] == facts["model"]
    assert params["reidctl.feature"] == facts["feature"]
    assert params["reidctl.l2_normalize"] == ("true" if facts["l2_normalize"] else "false")
    assert json.loads(params["reidctl.preprocess"]) == facts["preprocess"]


def test_onnx_repository(tmp_path, capsys):
    model = export_tiny(tmp_path / "tiny.onnx")
    repo = tmp_path / "repo"
    args = ["convert", "triton", str(model), "-o", str(repo), "--name", "tiny"]
    assert main([*args, "--max-batch", "16", "--instances", "3"]) == 0
    cfg = parse(repo / "tiny" / "config.pbtxt")
    M = model_config_pb2
    assert cfg.name == "tiny" and cfg.platform == "onnxruntime_onnx"
    assert cfg.default_model_filename == "model.onnx" and cfg.max_batch_size == 16
    image = tensor(cfg.input, "image")
    assert image.data_type == M.TYPE_FP32 and list(image.dims) == [3, H, W]
    assert [o.name for o in cfg.output] == ["feature", "local"]
    assert list(tensor(cfg.output, "feature").dims) == [8]
    assert list(tensor(cfg.output, "local").dims) == [2, 4]
    assert list(cfg.dynamic_batching.preferred_batch_size) == [4, 8, 16]
    assert cfg.dynamic_batching.max_queue_delay_microseconds == 100
    assert len(cfg.instance_group) == 1 and cfg.instance_group[0].count == 3
    assert cfg.instance_group[0].kind == M.ModelInstanceGroup.KIND_AUTO
    check_params(cfg, read_sidecar(model))
    copied = repo / "tiny" / "1" / "model.onnx"
    assert copied.read_bytes() == model.read_bytes()
    assert read_sidecar(copied)["source"]["file"] == "tiny.onnx"
    assert sorted(p.name for p in repo.iterdir()) == ["tiny"]  # no staging leftovers
    # an existing entry is refused, replaced with --force
    assert main(args) == 2
    assert main([*args, "--force"]) == 0
    assert parse(repo / "tiny" / "config.pbtxt").max_batch_size == 64
    assert sorted(p.name for p in repo.iterdir()) == ["tiny"]


def test_static_batch_keeps_the_batch_in_dims(tmp_path):
    model = export_tiny(tmp_path / "static.onnx", static_batch=4)
    out = triton_repository(model, tmp_path / "repo")
    cfg = parse(tmp_path / "repo" / "static" / "config.pbtxt")
    assert out["max_batch_size"] == 0 and cfg.max_batch_size == 0
    assert list(tensor(cfg.input, "image").dims) == [4, 3, H, W]
    assert not cfg.HasField("dynamic_batching")


@pytest.mark.openvino
def test_openvino_ir_repository(tmp_path):
    pytest.importorskip("openvino")
    from reidctl.convert.openvino import ir_from_onnx

    model = export_tiny(tmp_path / "tiny.onnx")
    xml = tmp_path / "tiny.xml"
    ir_from_onnx(model, xml)
    with pytest.raises(InputError, match="CPU only"):
        triton_repository(xml, tmp_path / "repo", kind="gpu")
    triton_repository(xml, tmp_path / "repo", name="tiny_ov", max_batch=32, instances=1)
    cfg = parse(tmp_path / "repo" / "tiny_ov" / "config.pbtxt")
    assert cfg.backend == "openvino" and not cfg.platform
    assert cfg.default_model_filename == "model.xml" and cfg.max_batch_size == 32
    assert cfg.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_CPU
    assert list(cfg.dynamic_batching.preferred_batch_size) == [4, 8, 16, 32]
    version = tmp_path / "repo" / "tiny_ov" / "1"
    assert (version / "model.bin").read_bytes() == xml.with_suffix(".bin").read_bytes()
    assert (version / "model.xml").read_bytes() == xml.read_bytes()
    check_params(cfg, read_sidecar(xml))
    # the copied IR runs as it is
    import openvino as ov

    assert ov.Core().read_model(str(version / "model.xml")).inputs[0].get_any_name() == "image"


def _fake_plan(tmp_path, *, camera: bool, profile_max: int = 32):
    """A stand-in engine file with the sidecar `reidctl convert trt` writes."""
    plan = tmp_path / "cam.plan"
    plan.write_bytes(b"not a real engine")
    inputs = [{"name": "image", "shape": ["batch", 3, 256, 128], "dtype": "float32"}]
    if camera:
        inputs.append({"name": "camera", "shape": ["batch"], "dtype": "int64"})
    write_sidecar(
        plan,
        {
            "model": "transreid_like",
            "preprocess": {"height": 256, "width": 128, "mean": [0.5] * 3, "std": [0.5] * 3},
            "inputs": inputs,
            "outputs": [{"name": "feature", "shape": ["batch", 768], "dtype": "float16"}],
            "feature": "feature",
            "l2_normalize": True,
            "conversion": {
                "kind": "tensorrt",
                "batch_sizes": [1, 4, 8, profile_max],
                "profile": {"min": 1, "opt": 8, "max": profile_max},
            },
            "model_file": plan.name,
        },
    )
    return plan


def test_plan_repository_with_a_camera_input(tmp_path):
    plan = _fake_plan(tmp_path, camera=True)
    with pytest.raises(InputError, match="largest batch 32"):
        triton_repository(plan, tmp_path / "repo", max_batch=64)
    out = triton_repository(plan, tmp_path / "repo", name="cam")
    assert out["kind"] == "KIND_GPU"
    M = model_config_pb2
    cfg = parse(tmp_path / "repo" / "cam" / "config.pbtxt")
    assert cfg.platform == "tensorrt_plan" and cfg.default_model_filename == "model.plan"
    assert cfg.max_batch_size == 32  # the engine profile's max, below the default 64
    camera = tensor(cfg.input, "camera")
    assert camera.data_type == M.TYPE_INT64
    assert list(camera.dims) == [1] and camera.HasField("reshape")
    assert list(camera.reshape.shape) == []
    assert tensor(cfg.output, "feature").data_type == M.TYPE_FP16
    assert list(cfg.dynamic_batching.preferred_batch_size) == [4, 8, 32]  # the engine's sizes
    assert cfg.instance_group[0].kind == M.ModelInstanceGroup.KIND_GPU
    assert cfg.instance_group[0].count == 2
    check_params(cfg, read_sidecar(plan))
    assert (tmp_path / "repo" / "cam" / "1" / "model.plan").read_bytes() == plan.read_bytes()
    with pytest.raises(OutputExistsError):
        triton_repository(plan, tmp_path / "repo", name="cam")


def test_refusals(tmp_path):
    plan = tmp_path / "x.plan"
    plan.write_bytes(b"x")
    assert main(["convert", "triton", str(plan), "-o", str(tmp_path / "r")]) == 2  # no sidecar
    om = tmp_path / "m.om"
    om.write_bytes(b"x")
    with pytest.raises(InputError, match="Triton serves"):
        triton_repository(om, tmp_path / "r")
    with pytest.raises(InputError, match="GPU only"):
        triton_repository(_fake_plan(tmp_path, camera=False), tmp_path / "r", kind="cpu")
    assert not (tmp_path / "r").exists() or not any((tmp_path / "r").iterdir())
