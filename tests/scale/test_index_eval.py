"""eval_with_index against the dense-matrix evaluation of reidctl.evaluate."""

from __future__ import annotations

import numpy as np
import pytest

from reidctl.errors import FormatError
from reidctl.scale import faiss_index as fi
from reidctl.scale.index_eval import eval_with_index
from tests.scale.helpers import make_results

pytest.importorskip("faiss", reason="faiss-cpu is not installed (reidctl[faiss])")
pytestmark = pytest.mark.faiss


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    res, feats = make_results(root / "results", n_query=15, n_gallery=60, seed=5)
    idx = fi.save_gallery_index(fi.build_gallery_index(res), root / "g.index")
    return res, feats, idx


def dense_reference(feats: np.ndarray):
    from reidctl.evaluate import evaluate_rank

    q, g = fi.l2_normalize(feats[:15]), fi.l2_normalize(feats[15:75])
    rows = np.arange(len(feats))
    pids, cams = 1 + rows % 5, 1 + rows % 3
    return evaluate_rank(1 - q @ g.T, pids[:15], pids[15:75], cams[:15], cams[15:75], max_rank=50)


def test_full_depth_flat_index_matches_dense_evaluation(setup):
    res, feats, idx = setup
    ref = dense_reference(feats)
    m = eval_with_index(res, idx, k=60)
    assert m["mAP"] == pytest.approx(ref.mAP, abs=1e-9)
    assert m["rank1"] == pytest.approx(ref.rank(1))
    assert m["num_valid_query"] == ref.num_valid and m["num_gallery"] == 60
    assert "within the top k" in m["index"]["note"] and m["index"]["k"] == 60


def test_shallow_lists_lower_map_and_exact_check(setup, tmp_path):
    res, feats, _ = setup
    ref = dense_reference(feats)
    hnsw = fi.save_gallery_index(fi.build_gallery_index(res, "hnsw", m=4), tmp_path / "h.index")
    m = eval_with_index(res, hnsw, k=3, exact_check=True)
    assert m["mAP"] <= ref.mAP + 1e-12
    assert len(m["cmc"]) == 3
    assert m["index"]["recall_at_k"] == pytest.approx(1.0)  # 60 rows: hnsw is exhaustive here
    assert m["index"]["exact"]["mAP"] == pytest.approx(m["mAP"])
    # the exact check refuses gallery features that changed after the index was built
    np.save(res / "features" / "feature.npy", feats * 2)
    try:
        with pytest.raises(FormatError, match="changed since"):
            eval_with_index(res, hnsw, k=3, exact_check=True)
    finally:
        np.save(res / "features" / "feature.npy", feats)
