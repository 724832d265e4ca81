"""Each CNN family exports from a random-weight checkpoint in its own project's file format:
ONNX Runtime equals reidctl's PyTorch model at batch 1, 3 and 32 within the spec's tolerance,
with a dynamic ``batch`` axis on every input and output."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from reidctl.convert.onnx import onnx_from_torch
from reidctl.models.loading import create_model
from reidctl.models.registry import get_spec, list_models
from tests.models.test_cnn_families import random_state
from tests.models.test_fastreid import fastreid_file
from tests.models.test_fastreid import random_state as fastreid_state

FAMILIES = ("reidctl.models.fastreid", "reidctl.models.mobilenetv2", "reidctl.models.lightmbn")


def _fastreid(name: str, layout: str) -> Callable[[Path], Path]:
    def write(folder: Path) -> Path:
        path = folder / "model_final.pth"
        dim = 256 if "mgn" in name else 2048
        fastreid_file(path, fastreid_state(name, seed=11, p=3.3), layout, feat_dim=dim)
        return path

    return write


def _torchreid(name: str) -> Callable[[Path], Path]:
    def write(folder: Path) -> Path:
        from reidctl.models import mobilenetv2

        sd = random_state(mobilenetv2.build(name, 13), seed=12)
        path = folder / "model.pth.tar-60"
        torch.save({"state_dict": sd, "epoch": 60, "rank1": 0.8, "optimizer": {}}, path)
        return path

    return write


def _lightmbn(folder: Path) -> Path:
    from reidctl.models import lightmbn

    path = folder / "model-best.pth"
    torch.save(random_state(lightmbn.build("lmbn_n"), seed=13), path)
    return path


WRITERS: dict[str, Callable[[Path], Path]] = {
    "fastreid_bot_r50": _fastreid("fastreid_bot_r50", "old"),
    "fastreid_bot_r50_ibn": _fastreid("fastreid_bot_r50_ibn", "new"),
    "fastreid_agw_r50": _fastreid("fastreid_agw_r50", "old"),
    "fastreid_sbs_r50_ibn": _fastreid("fastreid_sbs_r50_ibn", "new"),
    "fastreid_mgn_r50_ibn": _fastreid("fastreid_mgn_r50_ibn", "old"),
    "mobilenetv2_x1_0": _torchreid("mobilenetv2_x1_0"),
    "mobilenetv2_x1_4": _torchreid("mobilenetv2_x1_4"),
    "lmbn_n": _lightmbn,
}


@pytest.mark.parametrize("name", list_models())
def test_every_cnn_family_model_has_a_checkpoint_export_test(name: str) -> None:
    if get_spec(name).builder.split(":")[0] in FAMILIES:
        assert name in WRITERS, f"{name} has no checkpoint-format export test"


def _axis0(value_info: onnx.ValueInfoProto) -> str | int:
    d = value_info.type.tensor_type.shape.dim[0]
    return d.dim_param if d.dim_param else d.dim_value


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(WRITERS))
def test_family_checkpoint_exports_and_matches_torch(name: str, tmp_path: Path) -> None:
    weights = WRITERS[name](tmp_path)
    out = tmp_path / f"{name}.onnx"
    sidecar = onnx_from_torch(name, out, weights=weights)  # batches 1, 3, 32
    spec = get_spec(name)
    results = sidecar["validation"]["results"]
    assert {r["batch"] for r in results} == {1, 3, 32}
    assert all(r["rel_diff"] <= spec.tolerance for r in results)

    proto = onnx.load(str(out))
    assert [i.name for i in proto.graph.input] == ["image"]
    assert [o.name for o in proto.graph.output] == [spec.feature]
    assert all(_axis0(v) == "batch" for v in [*proto.graph.input, *proto.graph.output])

    # an independent run: the file against reidctl's model loaded from the same checkpoint
    loaded = create_model(name, weights=weights)
    pre = sidecar["preprocess"]
    x = np.random.default_rng(7).standard_normal((3, 3, pre["height"], pre["width"]), np.float32)
    (got,) = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(
        None, {"image": x}
    )
    with torch.inference_mode():
        (ref,) = loaded.module(torch.from_numpy(x))
    assert got.shape == tuple(ref.shape) == (3, spec.outputs[0].shape[1])
    assert np.max(np.abs(got - ref.numpy())) <= spec.tolerance * np.max(np.abs(ref.numpy()))

    if name.startswith("fastreid_"):
        assert pre["interpolation"] == "bicubic"
        if name in ("fastreid_bot_r50", "fastreid_agw_r50", "fastreid_mgn_r50_ibn"):
            # old layout: the checkpoint's pixel_mean / pixel_std, on the 0..1 scale
            assert pre["mean"] == pytest.approx([110 / 255, 120 / 255, 130 / 255], abs=1e-6)
            assert pre["std"] == pytest.approx([50 / 255, 60 / 255, 70 / 255], abs=1e-6)
        else:
            assert pre["mean"] == pytest.approx([0.485, 0.456, 0.406])
