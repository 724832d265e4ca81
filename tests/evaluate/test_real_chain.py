"""Real data: OSNet x0.25 (Market-1501 weights) on the 96-image market1501-mini set.

torchreid's own code gives rank-1 0.8667, rank-5 1.0, mAP 0.9247 with 30 valid queries of
32 (../shared/README.md). Two checks: the whole reidctl chain (export -> preprocess -> ort
-> eval), and the evaluation alone on features computed in torch with a plain OpenCV
preprocessing, so a failure points at the right stage.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from reidctl.evaluate import EvalSettings, evaluate_dump, evaluate_features, evaluate_results
from tests.conftest import require

RANK1, RANK5, MAP, TOL = 0.8667, 1.0, 0.9247, 0.005

pytestmark = [pytest.mark.shared, pytest.mark.slow]


def _check(m) -> None:
    assert m.num_query == 32 and m.num_valid_query == 30
    assert m.rank1 == pytest.approx(RANK1, abs=TOL)
    assert m.rank5 == pytest.approx(RANK5, abs=TOL)
    assert m.mAP == pytest.approx(MAP, abs=TOL)


def test_whole_chain_ort(market_mini: Path, osnet_weights: Path, tmp_path: Path):
    # reidctl's own stages are imported, never skipped: an import error must fail here
    require("onnxruntime")
    from reidctl.convert.onnx import onnx_from_torch
    from reidctl.preprocess import preprocess_dataset
    from reidctl.preprocess.config import spec_from_sidecar
    from reidctl.runners.infer import run_inference

    model = tmp_path / "osnet.onnx"
    onnx_from_torch("osnet_x0_25", model, weights=osnet_weights, validate_batches=(1,))
    prep = tmp_path / "prep"
    preprocess_dataset(
        "market1501", market_mini, prep, spec=spec_from_sidecar(model), splits=("query", "gallery")
    )
    results = tmp_path / "results"
    run_inference(model, prep, results, backend="ort", dump="bin")
    m = evaluate_results(results)
    _check(m)
    # the vendor-layout dump of the same run: 512 float32 values per file, no --dim needed
    d = evaluate_dump(results / "dump", prep, 1)
    assert d.data.feat.shape == (64, 512) and d.metrics.cmc == m.metrics.cmc
    assert d.mAP == m.mAP and d.mINP == m.mINP
    # cosine on normalised features ranks exactly like the default Euclidean distance
    assert evaluate_results(results, distance="cosine").mAP == pytest.approx(m.mAP, abs=1e-6)


def _load(path: Path) -> np.ndarray:
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    img = cv2.resize(img, (128, 256), interpolation=cv2.INTER_LINEAR).astype(np.float32) / 255
    img = (img - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    return img.transpose(2, 0, 1).astype(np.float32)


def _labels(name: str) -> tuple[int, int]:
    pid, rest = name.split("_", 1)
    return int(pid), int(rest[1])


def test_evaluation_alone_on_torch_features(market_mini: Path, osnet_weights: Path):
    torch = require("torch")
    from reidctl.models.loading import create_model

    loaded = create_model("osnet_x0_25", weights=osnet_weights)
    sets = {}
    for split, folder in (("query", "query"), ("gallery", "bounding_box_test")):
        files = sorted((market_mini / folder).glob("*.jpg"))
        x = torch.from_numpy(np.stack([_load(f) for f in files]))
        with torch.no_grad():
            out = loaded.module(x)
        feat = (out[0] if isinstance(out, tuple | list) else out).numpy()
        labels = np.array([_labels(f.name) for f in files])
        sets[split] = (feat, labels[:, 0], labels[:, 1])
    (qf, qp, qc), (gf, gp, gc) = sets["query"], sets["gallery"]
    _check(evaluate_features(qf, gf, qp, gp, qc, gc))
    rr = evaluate_features(qf, gf, qp, gp, qc, gc, EvalSettings(rerank=True, k1=5, k2=2))
    assert rr.num_valid_query == 30 and 0.5 < rr.mAP <= 1.0
