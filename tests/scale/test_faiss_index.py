"""FAISS indexes: exactness of flat, recall, parameters, sidecar round trip, CLI."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from reidctl.cli import main
from reidctl.errors import (
    BackendUnavailableError,
    FormatError,
    InputError,
    OutputExistsError,
    ShapeMismatchError,
    UnknownNameError,
)
from reidctl.scale import faiss_index as fi
from tests.scale.helpers import clustered, make_results

faiss = pytest.importorskip("faiss", reason="faiss-cpu is not installed (reidctl[faiss])")
pytestmark = pytest.mark.faiss


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    return (
        rng.standard_normal((3000, 32)).astype(np.float32),
        rng.standard_normal((100, 32)).astype(np.float32),
    )


@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_flat_index_equals_numpy_brute_force(data, metric):
    gallery, queries = data
    index = fi.build_index(gallery, "flat", metric)
    dist, ids = fi.search(index, queries, 20)
    # Brute force with a full float64 sort, independent of exact_search's partitioning.
    g, q = gallery.astype(np.float64), queries.astype(np.float64)
    if metric == "ip":
        score = q @ g.T
        ref_ids = np.argsort(-score, axis=1, kind="stable")[:, :20]
    else:
        score = ((q[:, None, :] - g[None, :, :]) ** 2).sum(-1)
        ref_ids = np.argsort(score, axis=1, kind="stable")[:, :20]
    np.testing.assert_array_equal(ids, ref_ids)
    np.testing.assert_allclose(dist, np.take_along_axis(score, ref_ids, 1), rtol=1e-4, atol=1e-3)
    ex_dist, ex_ids = fi.exact_search(gallery, queries, 20, metric, chunk=33)
    np.testing.assert_array_equal(ex_ids, ref_ids)
    np.testing.assert_allclose(ex_dist, dist, rtol=1e-4, atol=1e-3)


def test_exact_search_breaks_ties_by_row_and_caps_k():
    gallery = np.array([[1, 0], [0, 1], [1, 0], [0.5, 0.5]], np.float32)
    dist, ids = fi.exact_search(gallery, np.array([[1, 0]], np.float32), 10, "ip")
    assert ids.tolist() == [[0, 2, 3, 1]]
    np.testing.assert_allclose(dist, [[1, 1, 0.5, 0]])


def test_recall_at_k_counts_shared_rows_and_ignores_missing():
    found = np.array([[1, 2, 3], [4, 5, -1]])
    truth = np.array([[3, 2, 9], [4, 5, 6]])
    assert fi.recall_at_k(found, truth) == pytest.approx(4 / 6)
    assert fi.recall_at_k(found, truth, k=1) == pytest.approx(1 / 2)
    assert fi.recall_at_k(truth, truth) == 1.0
    with pytest.raises(ShapeMismatchError):
        fi.recall_at_k(found[:1], truth)


def test_ivf_with_every_cell_probed_is_exact_and_approximate_kinds_recall_well():
    gallery = fi.l2_normalize(clustered(4000, 32, 40, seed=1))
    queries = fi.l2_normalize(clustered(200, 32, 40, seed=2))
    _, truth = fi.exact_search(gallery, queries, 10)
    ivf = fi.build_index(gallery, "ivf", nlist=16)
    assert ivf.nlist == 16 and ivf.nprobe == 8  # default max(8, nlist // 32)
    _, ids = fi.search(ivf, queries, 10, nprobe=16)
    assert fi.recall_at_k(ids, truth) == 1.0
    _, ids = fi.search(ivf, queries, 10, nprobe=1)
    assert 0.3 < fi.recall_at_k(ids, truth) < 1.0  # the override really narrows the search
    hnsw = fi.build_index(gallery, "hnsw", m=16, ef_search=256)
    assert fi.recall_at_k(fi.search(hnsw, queries, 10)[1], truth) >= 0.95
    pq = fi.build_index(gallery, "ivfpq", nlist=16, m=8, nbits=6, nprobe=16)
    assert pq.pq.M == 8 and pq.pq.nbits == 6
    assert fi.recall_at_k(fi.search(pq, queries, 10)[1], truth) >= 0.3


def test_params_defaults_and_errors():
    p = fi.IndexParams(kind="ivf").resolved(1_000_000, 512)
    assert (p.nlist, p.nprobe, p.train_size) == (4000, 125, 200_000)
    assert fi.IndexParams(kind="ivf").resolved(100, 8).nlist == 2  # capped at rows / 39
    assert fi.IndexParams(kind="ivfpq").resolved(10_000, 512).m == 64
    assert fi.IndexParams(kind="hnsw").resolved(10, 8).m == 32
    with pytest.raises(UnknownNameError, match="flat, hnsw, ivf, ivfpq"):
        fi.IndexParams(kind="lsh")
    with pytest.raises(UnknownNameError, match="ip, l2"):
        fi.IndexParams(metric="cosine")
    with pytest.raises(InputError, match="exceeds the 10 gallery rows"):
        fi.IndexParams(kind="ivf", nlist=11).resolved(10, 8)
    with pytest.raises(InputError, match="does not divide"):
        fi.IndexParams(kind="ivfpq", m=7).resolved(1000, 512)
    with pytest.raises(InputError, match="at least 256 gallery rows"):
        fi.IndexParams(kind="ivfpq", m=8).resolved(100, 64)
    with pytest.raises(ShapeMismatchError):
        fi.build_index(np.zeros(5, np.float32))
    with pytest.raises(ShapeMismatchError, match="dimension 3"):
        fi.search(fi.build_index(np.eye(4, dtype=np.float32)), np.zeros((1, 3)), 1)


def test_missing_faiss_gives_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)
    with pytest.raises(BackendUnavailableError, match=r"reidctl\[faiss\]"):
        fi.build_index(np.eye(4, dtype=np.float32))


# --------------------------------------------------------------------------- result dirs


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> tuple[Path, np.ndarray]:
    return make_results(tmp_path_factory.mktemp("res") / "results")


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw"])
def test_sidecar_round_trip_and_byte_identical_rebuild(results, tmp_path, kind):
    res, feats = results
    opts = {"nlist": 4, "nprobe": 4} if kind == "ivf" else {}
    gi = fi.build_gallery_index(res, kind, **opts)
    path = fi.save_gallery_index(gi, tmp_path / "g.index")
    loaded = fi.load_gallery_index(path)
    s = loaded.sidecar
    assert s["format"] == fi.INDEX_FORMAT and s["kind"] == kind and s["metric"] == "ip"
    assert s["feature"] == "feature" and s["normalized"] is True and s["dim"] == 16
    assert s["features_sha256"] == fi.sha256_file(res / "features" / "feature.npy")
    assert loaded.rows("manifest_index").tolist() == list(range(12, 52))
    assert loaded.rows("pid").tolist() == [1 + i % 5 for i in range(12, 52)]
    assert loaded.rows("camid").tolist() == [1 + i % 3 for i in range(12, 52)]
    assert loaded.rows("source")[0] == "gallery/gallery_0012.jpg"
    assert loaded.params == fi.IndexParams(**gi.sidecar["params"])
    queries = fi.l2_normalize(feats[:12])
    np.testing.assert_array_equal(
        fi.search(loaded.index, queries, 5)[1], fi.search(gi.index, queries, 5)[1]
    )
    # A rebuild from the same inputs gives the same bytes (flat, ivf; FAISS inserts into an
    # HNSW graph from several threads, so its graph is not promised to repeat).
    if kind != "hnsw":
        again = fi.save_gallery_index(
            fi.build_gallery_index(res, kind, **opts), tmp_path / "h.index"
        )
        assert again.read_bytes() == path.read_bytes()
        sidecars = [fi.index_sidecar_path(p).read_text() for p in (path, again)]
        assert sidecars[0].replace('"h.index"', '"g.index"') == sidecars[1].replace(
            '"h.index"', '"g.index"'
        )
    with pytest.raises(OutputExistsError):
        fi.save_gallery_index(gi, path)


def test_load_refuses_a_replaced_index_or_missing_sidecar(results, tmp_path):
    res, _ = results
    path = fi.save_gallery_index(fi.build_gallery_index(res), tmp_path / "g.index")
    other = fi.build_gallery_index(res, metric="l2")
    faiss.write_index(other.index, str(path))
    with pytest.raises(FormatError, match="does not match its sidecar"):
        fi.load_gallery_index(path)
    fi.index_sidecar_path(path).unlink()
    with pytest.raises(FormatError, match="index sidecar not found"):
        fi.load_gallery_index(path)


def test_result_dir_errors(tmp_path):
    res, _ = make_results(tmp_path / "r")
    with pytest.raises(UnknownNameError, match="valid features: feature"):
        fi.build_gallery_index(res, feature="logits")
    with pytest.raises(FormatError, match="no 'distractor' rows"):
        fi.build_gallery_index(res, split="distractor")
    (res / "run.json").unlink()
    with pytest.raises(FormatError, match="incomplete"):
        fi.build_gallery_index(res)


def test_l2_metric_without_normalisation_matches_raw_features(tmp_path):
    res, feats = make_results(tmp_path / "r", l2_normalize=False, seed=3)
    gi = fi.build_gallery_index(res, metric="l2")
    assert gi.sidecar["normalized"] is False
    topk = fi.search_gallery_index(gi, res, k=7)
    ref_d, ref_i = fi.exact_search(feats[12:52], feats[:12], 7, "l2")
    np.testing.assert_array_equal(topk.indices, ref_i)
    np.testing.assert_allclose(topk.distances, ref_d, rtol=1e-4, atol=1e-4)


# --------------------------------------------------------------------------- CLI


def test_cli_build_and_search(results, tmp_path, capsys):
    res, feats = results
    idx, out = tmp_path / "g.index", tmp_path / "topk.npz"
    assert main(["index", "build", str(res), "-o", str(idx), "--kind", "hnsw", "--m", "8"]) == 0
    assert "hnsw, ip, 40 gallery rows x 16 'feature'" in capsys.readouterr().out
    assert main(["search", str(idx), str(res), "-k", "100", "-o", str(out)]) == 0
    assert "12 queries x top-40" in capsys.readouterr().out
    topk = fi.read_topk(out)
    g, q = fi.l2_normalize(feats[12:52]), fi.l2_normalize(feats[:12])
    ref_d, ref_i = fi.exact_search(g, q, 40)
    np.testing.assert_array_equal(topk.indices, ref_i)  # 40 rows: hnsw search is exhaustive
    np.testing.assert_allclose(topk.distances, ref_d, atol=1e-5)
    assert topk.query_index.tolist() == list(range(12))
    assert topk.gallery_index.tolist() == list(range(12, 52))
    assert topk.query_pids.tolist() == [1 + i % 5 for i in range(12)]
    assert topk.metric == "ip"
    first = out.read_bytes()
    assert main(["search", str(idx), str(res), "-k", "100", "-o", str(out), "--force"]) == 0
    assert out.read_bytes() == first  # deterministic npz

    # existing output, bad k, unknown kind, wrong dimension: exit code 2 with a message
    assert main(["search", str(idx), str(res), "-o", str(out)]) == 2
    assert "--force" in capsys.readouterr().err
    assert main(["search", str(idx), str(res), "-k", "0", "-o", str(tmp_path / "x.npz")]) == 2
    assert main(["index", "build", str(res), "-o", str(tmp_path / "y"), "--kind", "lsh"]) == 2
    other, _ = make_results(tmp_path / "other", dim=8)
    assert main(["search", str(idx), str(other), "-o", str(tmp_path / "z.npz")]) == 2
    assert "dimension 8" in capsys.readouterr().err
