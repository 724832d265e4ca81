"""An output without one row per input row (a reduction over the batch axis, a scalar, a
doubled batch) is an error naming the output, never one row copied to every image."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from reidctl.cli import main
from reidctl.errors import ShapeMismatchError
from tests.runners.helpers import make_prep

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper  # noqa: E402

H, W = 16, 8


def _model(path: Path, kind: str, batch: int | str = "batch") -> Path:
    """``image [batch, 3, H, W]`` -> ``good`` (per-row mean, [batch, 3]) and ``bad``."""
    nodes = [
        helper.make_node("ReduceMean", ["image", "ax23"], ["good"], keepdims=0),
    ]
    inits = [helper.make_tensor("ax23", TensorProto.INT64, [2], [2, 3])]
    if kind == "batch_mean":  # [1, 3]: a reduction over the batch axis
        nodes.append(helper.make_node("ReduceMean", ["good", "ax0"], ["bad"], keepdims=1))
        inits.append(helper.make_tensor("ax0", TensorProto.INT64, [1], [0]))
        bad = helper.make_tensor_value_info("bad", TensorProto.FLOAT, [1, 3])
    elif kind == "scalar":  # []: everything reduced
        nodes.append(helper.make_node("ReduceMean", ["good"], ["bad"], keepdims=0))
        bad = helper.make_tensor_value_info("bad", TensorProto.FLOAT, [])
    else:  # "doubled": [2 * batch, 3]
        nodes.append(helper.make_node("Concat", ["good", "good"], ["bad"], axis=0))
        bad = helper.make_tensor_value_info("bad", TensorProto.FLOAT, ["b2", 3])
    graph = helper.make_graph(
        nodes,
        "rows",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [batch, 3, H, W])],
        [helper.make_tensor_value_info("good", TensorProto.FLOAT, [batch, 3]), bad],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize("kind", ["batch_mean", "scalar", "doubled"])
@pytest.mark.parametrize("bs", [4, 5])  # 10 rows: even batches, and a short last one
def test_infer_names_the_output(tmp_path, capsys, kind, bs) -> None:
    model = _model(tmp_path / f"{kind}.onnx", kind)
    prep, _ = make_prep(tmp_path / "p", n=10)
    out = tmp_path / "res"
    rc = main(["infer", str(model), str(prep), "-o", str(out), "--bs", str(bs)])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "output 'bad'" in err and str(model) in err and "Traceback" not in err
    assert not out.exists()


@pytest.mark.parametrize("kind", ["batch_mean", "scalar", "doubled"])
def test_padded_static_batch_path_checks_too(tmp_path, kind) -> None:
    from reidctl.runners import get_runner

    model = _model(tmp_path / "static.onnx", kind, batch=4)
    x = np.random.default_rng(0).standard_normal((6, 3, H, W)).astype(np.float32)
    with get_runner("ort")(str(model)) as runner, pytest.raises(ShapeMismatchError, match="'bad'"):
        runner.infer_rows({"image": x})  # 4 + (2 rows padded to 4)


def test_per_row_outputs_still_run(tmp_path) -> None:
    from reidctl.runners import get_runner

    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["image", "ax23"], ["good"], keepdims=0)],
        "ok",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [4, 3, H, W])],
        [helper.make_tensor_value_info("good", TensorProto.FLOAT, [4, 3])],
        [helper.make_tensor("ax23", TensorProto.INT64, [2], [2, 3])],
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    m.ir_version = 9
    onnx.save(m, str(tmp_path / "ok.onnx"))
    x = np.random.default_rng(0).standard_normal((6, 3, H, W)).astype(np.float32)
    with get_runner("ort")(str(tmp_path / "ok.onnx")) as runner:
        out = runner.infer_rows({"image": x})["good"]
    np.testing.assert_allclose(out, x.mean(axis=(2, 3)), rtol=1e-5)
