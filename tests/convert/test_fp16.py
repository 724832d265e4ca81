"""Float16 conversion: which nodes stay float32, keep-io-types, the cosine gate."""

from __future__ import annotations

import contextlib
import io
import warnings

import numpy as np
import onnx
import pytest

from reidctl.cli import main
from reidctl.convert.fp16 import convert_to_float16, fp16_from_onnx, norm_division_nodes
from tests.runners.helpers import H, W, export_tiny

pytest.importorskip("onnxconverter_common")


def _export(module, path, shape=(2, 3, H, W), names=("feature",)):
    import torch

    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module.eval(),
            (torch.randn(*shape),),
            str(path),
            input_names=["image"],
            output_names=list(names),
            dynamic_axes={n: {0: "batch"} for n in ["image", *names]},
            opset_version=17,
            dynamo=False,
        )
    return path


def _normalising_module():
    """Three L2 normalisations and a transformer-style block (LayerNorm, Softmax)."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    class Norms(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.conv = nn.Conv2d(3, 8, 3, padding=1)
            self.ln = nn.LayerNorm(8)
            self.fc = nn.Linear(8, 8)

        def forward(self, x):
            y = self.conv(x).mean(dim=(2, 3))  # [B, 8]
            y = self.ln(y)
            y = self.fc(y) * torch.softmax(y, dim=1)
            a = F.normalize(y, dim=1)  # ReduceL2 -> Clip -> Expand -> Div
            b = y / torch.sqrt((y * y).sum(dim=1, keepdim=True))  # Mul -> ReduceSum -> Sqrt
            c = y / y.norm(dim=1, keepdim=True)  # ReduceL2 -> Div
            return a + b + c

    return Norms()


def test_norm_divisions_and_overflowing_ops_stay_float32(tmp_path):
    model = onnx.load(str(_export(_normalising_module(), tmp_path / "norms.onnx")))
    found = norm_division_nodes(model)
    by_name = {n.name: n for n in model.graph.node}
    divs = [n for n in found if by_name[n].op_type == "Div"]
    assert len(divs) == 3  # the three normalisations, not other Divs
    assert {by_name[n].op_type for n in found} >= {"ReduceL2", "Sqrt", "ReduceSum", "Mul"}
    converted, facts = convert_to_float16(model)
    assert set(facts["fp32_norm_nodes"]) == set(found)
    assert {"LayerNormalization", "Softmax", "ReduceL2"} <= set(facts["fp32_ops_in_graph"])
    # every float input of a blocked node is float32 (the converter casts around it)
    inferred = onnx.shape_inference.infer_shapes(converted).graph
    types = {v.name: v.type.tensor_type.elem_type for v in inferred.value_info}
    types.update({v.name: v.type.tensor_type.elem_type for v in inferred.input})
    types.update({i.name: i.data_type for i in inferred.initializer})
    floats = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)
    checked = 0
    for node in inferred.node:
        if node.op_type in ("LayerNormalization", "Softmax") or node.name in found:
            for name in node.input:
                if name and types.get(name) in floats:
                    assert types[name] == onnx.TensorProto.FLOAT, (node.name, name)
                    checked += 1
    assert checked >= 10
    # and a non-blocked node (the Conv) is float16
    conv = next(n for n in inferred.node if n.op_type == "Conv")
    w = next(i for i in inferred.initializer if i.name == conv.input[1])
    assert w.data_type == onnx.TensorProto.FLOAT16


def test_fp16_model_runs_and_keeps_float32_io(tmp_path):
    src = _export(_normalising_module(), tmp_path / "norms.onnx")
    out = tmp_path / "norms.fp16.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        side = fp16_from_onnx(src, out)
    assert side["inputs"][0]["dtype"] == "float32" and side["conversion"]["keep_io_types"]
    val = side["conversion"]["validation"]
    assert val["results"][0]["mean_cosine"] >= 0.999 and val["batches"] == [1, 3]
    # no-keep-io-types: float16 inputs and outputs, recorded in the sidecar
    out2 = tmp_path / "io16.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        side2 = fp16_from_onnx(src, out2, keep_io_types=False)
    assert side2["inputs"][0]["dtype"] == "float16"
    g = onnx.load(str(out2)).graph
    assert g.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16


def test_cosine_gate_refuses_and_writes_nothing(tmp_path, capsys):
    src = export_tiny(tmp_path / "tiny.onnx")
    out = tmp_path / "tiny.fp16.onnx"
    code = main(["convert", "fp16", str(src), "-o", str(out), "--min-cosine", "1.0"])
    assert code == 1
    assert "mean cosine" in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / "tiny.fp16.onnx.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.onnx", "tiny.onnx.json"]


def test_cli_reports_that_ort_cpu_computes_in_float32(tmp_path, capsys):
    src = export_tiny(tmp_path / "tiny.onnx")
    out = tmp_path / "tiny.fp16.onnx"
    assert main(["convert", "fp16", str(src), "-o", str(out)]) == 0
    captured = capsys.readouterr()
    assert "computed every node of the float16 model in float32" in captured.err
    assert f"wrote {out}" in captured.out
    assert np.isfinite(float(captured.out.split("mean cosine against FP32 ")[1].split()[0]))
