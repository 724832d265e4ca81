"""Must-show: the real OSNet x0.25 over the real Market-1501 crops agrees on every back end."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from reidctl.runners.compare import row_cosine
from reidctl.runners.infer import run_inference

pytestmark = [pytest.mark.shared, pytest.mark.slow]


@pytest.fixture(scope="module")
def osnet_runs(market_mini, osnet_weights, tmp_path_factory):
    from reidctl.convert.onnx import onnx_from_torch
    from reidctl.preprocess import preprocess_dataset

    work = tmp_path_factory.mktemp("osnet")
    model = work / "osnet.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        onnx_from_torch("osnet_x0_25", model, weights=osnet_weights, validate_batches=(4,))
    prep = work / "prep"
    preprocess_dataset("market1501", market_mini, prep, workers=1)
    backends = ["ort", "torch"]
    try:
        import openvino  # noqa: F401

        backends.append("openvino")
    except ImportError:
        pass
    runs = {}
    for b in backends:
        run_inference(model, prep, work / b, backend=b, batch_size=32)
        runs[b] = work / b
    return runs


def _agree(osnet_runs, a: str, b: str) -> None:
    fa, fb = (np.load(osnet_runs[x] / "features/feature.npy") for x in (a, b))
    # the default splits: 32 query + 32 gallery crops
    assert fa.shape == fb.shape == (64, 512)
    cos = row_cosine(fa, fb)
    assert cos.min() >= 0.9999, f"{a} vs {b}: min row cosine {cos.min():.6f}"


def test_osnet_features_agree_ort_vs_torch(osnet_runs):
    """Always runs: onnxruntime and PyTorch are hard dependencies."""
    _agree(osnet_runs, "ort", "torch")


@pytest.mark.openvino
@pytest.mark.parametrize("other", ["ort", "torch"])
def test_osnet_features_agree_openvino(osnet_runs, other):
    if "openvino" not in osnet_runs:
        pytest.skip("openvino is not installed (optional back end: pip install openvino)")
    _agree(osnet_runs, "openvino", other)


def test_osnet_runs_record_backend_and_real_weights(osnet_runs):
    for backend, path in osnet_runs.items():
        run = json.loads((path / "run.json").read_text())
        model = json.loads((path / "model.json").read_text())
        assert run["backend"] == backend and run["num_images"] == 64
        assert model["model"] == "osnet_x0_25" and model["weights"]["sha256"].startswith("c0ff0917")
