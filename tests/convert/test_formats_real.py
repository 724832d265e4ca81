"""OpenVINO IR and float16 ONNX of osnet_x0_25 with its real Market-1501 weights, checked on
real market1501-mini tensors against the FP32 ONNX on onnxruntime."""

from __future__ import annotations

import json

import numpy as np
import pytest

from reidctl.artifacts import read_sidecar

pytestmark = [pytest.mark.slow, pytest.mark.shared]


@pytest.fixture(scope="module")
def osnet(tmp_path_factory, market_mini, osnet_weights):
    from reidctl.convert.onnx import onnx_from_torch
    from reidctl.models.registry import get_spec
    from reidctl.preprocess import preprocess_dataset

    d = tmp_path_factory.mktemp("real")
    model = d / "osnet.onnx"
    onnx_from_torch("osnet_x0_25", model, weights=osnet_weights, validate_batches=(1,))
    prep = d / "prep"
    spec = get_spec("osnet_x0_25").preprocess
    preprocess_dataset("market1501", market_mini, prep, spec=spec, splits=("query", "gallery"))
    return model, prep


def _independent_check(onnx_model, other_model, prep, backend, **options):
    """Features of both models over every tensor of the set, compared here (not by reidctl)."""
    import onnxruntime as ort

    from reidctl.artifacts import read_manifest, read_prep_meta
    from reidctl.runners import get_runner

    meta = read_prep_meta(prep)
    x = np.stack(
        [
            np.fromfile(prep / e.bin, dtype=meta["dtype"]).reshape(meta["shape"])
            for e in read_manifest(prep)
        ]
    )
    ref = ort.InferenceSession(str(onnx_model), providers=["CPUExecutionProvider"]).run(
        None, {"image": x}
    )[0]
    with get_runner(backend)(str(other_model), **options) as r:
        got = r.infer_rows({"image": x})["feature"]
    ref, got = ref.astype(np.float64), got.astype(np.float64)
    cos = (ref * got).sum(1) / np.linalg.norm(ref, axis=1) / np.linalg.norm(got, axis=1)
    rel = np.abs(ref - got).max() / np.abs(ref).max()
    return len(x), float(cos.mean()), float(cos.min()), float(rel)


@pytest.mark.openvino
@pytest.mark.parametrize("fp16", [False, True], ids=["fp32", "fp16-weights"])
def test_openvino_ir_matches_the_onnx_on_real_crops(osnet, tmp_path, fp16, capsys):
    pytest.importorskip("openvino")
    from reidctl.cli import main

    model, prep = osnet
    xml = tmp_path / "osnet.xml"
    args = ["convert", "openvino", str(model), "-o", str(xml), "--data", str(prep)]
    assert main([*args, *(["--fp16"] if fp16 else [])]) == 0
    assert xml.is_file() and xml.with_suffix(".bin").is_file()
    side = read_sidecar(xml)
    assert side["model"] == "osnet_x0_25" and side["feature"] == "feature"
    assert side["weights"] == read_sidecar(model)["weights"]  # facts carried forward
    assert side["conversion"]["compress_to_fp16"] is fp16
    val = side["conversion"]["validation"]
    assert val["rows"] == 32 and val["data"] == str(prep.resolve())
    rows, mean_cos, min_cos, rel = _independent_check(model, xml, prep, "openvino")
    print(json.dumps({"ir": "fp16" if fp16 else "fp32", "rows": rows, "mean_cos": mean_cos,
                      "min_cos": min_cos, "rel_diff": rel}))  # fmt: skip
    if fp16:
        assert min_cos >= 0.999 and rel <= 2e-2
        # FP16 weights halve the weights file
        assert xml.with_suffix(".bin").stat().st_size < 0.6 * model.stat().st_size
    else:
        assert min_cos >= 0.99999 and rel <= 1e-4


def test_fp16_onnx_matches_fp32_on_real_crops(osnet, tmp_path):
    import onnx

    from reidctl.convert.fp16 import Float16NotRunWarning, fp16_from_onnx

    model, prep = osnet
    out = tmp_path / "osnet.fp16.onnx"
    with pytest.warns(Float16NotRunWarning, match="float32"):
        side = fp16_from_onnx(model, out, data=prep)
    g = onnx.load(str(out)).graph
    assert g.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # keep_io_types
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in g.initializer)
    assert out.stat().st_size < 0.6 * model.stat().st_size
    val = side["conversion"]["validation"]
    # onnxruntime's CPU provider here runs no node in float16: it casts to float32
    assert val["kernels"]["float16_compute_nodes"] == 0
    rows, mean_cos, min_cos, rel = _independent_check(model, out, prep, "ort")
    print(json.dumps({"fp16_onnx": True, "rows": rows, "mean_cos": mean_cos,
                      "min_cos": min_cos, "rel_diff": rel}))  # fmt: skip
    assert rows == 64  # query + gallery of market1501-mini
    assert mean_cos >= 0.999 and val["results"][0]["mean_cosine"] >= 0.999
