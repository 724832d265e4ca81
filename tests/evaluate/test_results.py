"""Result directories, vendor dumps, centroids and the `reidctl eval` command."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

from reidctl.cli import main
from reidctl.errors import (
    BadDataError,
    FormatError,
    InputError,
    ShapeMismatchError,
    UnknownNameError,
)
from reidctl.evaluate import EvalSettings, evaluate_features, evaluate_results
from reidctl.evaluate.centroids import build_camera_centroids, build_centroids
from reidctl.evaluate.distance import compute_distance, l2_normalize
from reidctl.evaluate.pipeline import evaluate_features_detailed
from reidctl.evaluate.rank import evaluate_rank
from reidctl.evaluate.results import evaluate_data, evaluate_dump, load_results

from .conftest import make_entries, write_prep, write_results


@pytest.fixture(scope="module")
def dirs(small_set, tmp_path_factory):
    """A dataset root with images, a preprocessed set and a complete result directory."""
    base = tmp_path_factory.mktemp("eval")
    root = base / "data"
    for i, e in enumerate(small_set["entries"]):
        img = np.full((128, 64, 3), (i * 37) % 255, np.uint8)
        (root / e.source).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / e.source), img)
    prep = write_prep(base / "prep", small_set["entries"], root)
    outputs = {k: small_set[k] for k in ("feature", "local_feat")}
    res = write_results(base / "results", small_set["entries"], outputs, prep_dir=prep)
    return {"base": base, "root": root, "prep": prep, "results": res}


def split_feats(s, key="feature"):
    nq = len(s["pids_q"])
    return s[key][:nq], s[key][nq:]


def test_results_equal_features(small_set, dirs):
    q, g = split_feats(small_set)
    m = evaluate_results(dirs["results"])
    ref = evaluate_features(
        q, g, small_set["pids_q"], small_set["pids_g"], small_set["cams_q"], small_set["cams_g"]
    )
    direct = evaluate_rank(
        compute_distance(l2_normalize(q), l2_normalize(g)),
        small_set["pids_q"],
        small_set["pids_g"],
        small_set["cams_q"],
        small_set["cams_g"],
    )
    assert m.mAP == ref.mAP == pytest.approx(direct.mAP)
    assert m.rank1 == direct.rank1 and 0.3 < m.rank1 < 1.0
    assert m.num_query == 40 and m.num_gallery == 100 and m.num_valid_query == direct.num_valid
    assert m.settings["feature"] == "feature" and m.settings["normalize"] is True
    assert evaluate_results(dirs["results"], rerank=True).mAP != m.mAP


def test_cli_writes_json_plot_and_grid(dirs, capsys):
    out = dirs["base"] / "cli"
    args = [
        "eval",
        str(dirs["results"]),
        "--json",
        str(out / "metrics.json"),
        "--plot",
        str(out / "cmc.png"),
        "--visualize",
        "3",
        str(out / "grid.png"),
    ]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "rank-1" in text and "mINP" in text
    m = json.loads((out / "metrics.json").read_text())
    for key in ("rank1", "rank5", "rank10", "mAP", "mINP", "num_query", "num_valid_query"):
        assert key in m
    assert 0 <= m["rank1"] <= m["rank5"] <= m["rank10"] <= 1 and len(m["cmc"]) == 50
    assert m["settings"]["distance"] == "euclidean" and m["settings"]["rerank"] is None
    first = (out / "metrics.json").read_bytes()
    assert main(args) == 2  # the files exist: refused without --force
    assert "pass --force" in capsys.readouterr().err
    assert main([*args, "--force"]) == 0
    assert (out / "metrics.json").read_bytes() == first  # byte-identical re-run
    assert cv2.imread(str(out / "cmc.png")) is not None
    grid = cv2.imread(str(out / "grid.png"))
    assert grid.shape[0] == 3 * 136 + 2 * 6 and grid.shape[1] == 11 * 72 + 12
    # frame colours follow the ranking: tile r of a row is green iff it is a match
    ev, _, _ = evaluate_data(load_results(dirs["results"]), EvalSettings())
    for row, q in enumerate(np.flatnonzero(ev.result.valid)[:3]):
        y = row * (136 + 6) + 1
        first = ev.result.first_rank[q]
        for tile in range(min(first, 10)):
            px = grid[y, 72 + 12 + tile * 72 + 1].tolist()
            assert px == ([40, 170, 40] if tile == first - 1 else [40, 40, 220])


def test_cli_rerank_local_centroids(dirs, capsys):
    res = str(dirs["results"])
    assert main(["eval", res, "--rerank", "--k1", "5", "--k2", "2", "--lambda", "0.2"]) == 0
    assert "re-ranking k1=5 k2=2 lambda=0.2" in capsys.readouterr().out
    assert main(["eval", res, "--local"]) == 0
    assert "local 'local_feat' only" in capsys.readouterr().out
    assert main(["eval", res, "--local", "--local-weight", "0.5", "--rerank"]) == 0
    assert main(["eval", res, "--centroids", "--per-camera", "--ap", "interpolated"]) == 0
    assert "centroids (per-camera)" in capsys.readouterr().out
    assert main(["eval", res, "--protocol", "cuhk03", "--distance", "cosine"]) == 0


def test_incomplete_and_bad_result_dirs(small_set, dirs, tmp_path, capsys):
    e = small_set["entries"]
    inc = write_results(tmp_path / "inc", e, {"feature": small_set["feature"]}, complete=False)
    with pytest.raises(FormatError, match=r"run\.json not found"):
        evaluate_results(inc)
    assert main(["eval", str(inc)]) == 2
    assert "not a complete result directory" in capsys.readouterr().err
    short = write_results(tmp_path / "short", e, {"feature": small_set["feature"][:-1]})
    with pytest.raises(ShapeMismatchError, match="lists 140 entries"):
        evaluate_results(short)
    bad = small_set["feature"].copy()
    bad[3, 0] = np.nan
    bad[50, 2] = np.inf
    nan = write_results(tmp_path / "nan", e, {"feature": bad})
    with pytest.raises(BadDataError, match=f"2 rows hold NaN or inf values: {e[3].stem}"):
        evaluate_results(nan)
    assert main(["eval", str(nan)]) == 1
    with pytest.raises(UnknownNameError, match="valid outputs: feature, local_feat"):
        evaluate_results(dirs["results"], feature="embedding")
    assert main(["eval", str(dirs["results"]), "--feature", "nope"]) == 2
    assert "valid outputs: feature, local_feat" in capsys.readouterr().err


def test_no_valid_query(tmp_path):
    # every query's identity appears in the gallery only under the query's own camera
    e = make_entries([1, 2], [1, 1], [1, 2, 0], [1, 1, 2])
    res = write_results(tmp_path / "r", e, {"feature": np.eye(5, 4, dtype=np.float32)})
    with pytest.raises(BadDataError, match="none of the 2 queries has a valid match"):
        evaluate_results(res)
    assert main(["eval", str(res)]) == 1


def _write_dump(d, entries, feats, k, kind):
    d.mkdir(parents=True, exist_ok=True)
    for e, f in zip(entries, feats, strict=True):
        if kind == "bin":
            f.astype("<f4").tofile(d / f"{e.stem}_{k}.bin")
        else:
            np.savetxt(d / f"{e.stem}_{k}.txt", f[None])
        # another output of the same input, which must not be picked up
        np.zeros(3, "<f4").tofile(d / f"{e.stem}_{k + 1}.bin")


@pytest.mark.parametrize("kind", ["bin", "txt"])
def test_vendor_dump_equals_result_dir(small_set, dirs, tmp_path, kind, capsys):
    e = small_set["entries"]
    dump = tmp_path / "dump"
    _write_dump(dump, e, small_set["feature"], 2, kind)
    m = evaluate_dump(dump, dirs["prep"], 2, dim=16)
    ref = evaluate_results(dirs["results"])
    assert m.mAP == pytest.approx(ref.mAP, abs=1e-6) and m.rank1 == ref.rank1
    cmd = ["eval", str(dump), "--prep", str(dirs["prep"]), "--output-index", "2", "--dim", "16"]
    assert main(cmd) == 0
    with pytest.raises(ShapeMismatchError, match="expected --dim 3"):
        evaluate_dump(dump, dirs["prep"], 2, dim=3)
    # a missing file is an error naming it, never a zero vector
    (dump / f"{e[7].stem}_2.{kind}").unlink()
    with pytest.raises(
        FormatError, match=f"1 of 140 dump files of output 2 missing .*{e[7].stem}_2"
    ):
        evaluate_dump(dump, dirs["prep"], 2, dim=16)
    assert main(cmd) == 2
    assert e[7].stem in capsys.readouterr().err


def test_centroids_golden():
    feat = np.array([[0, 0], [2, 0], [10, 10], [4, 4], [7, 7], [6, 0], [1.5, 0]], np.float32)
    pids, cams = np.array([1, 1, -1, 0, 2, 0, 3]), np.array([1, 2, 1, 1, 3, 2, 2])
    cg = build_centroids(feat, pids, cams)
    # distractors (pid 0) are one more label, junk (pid -1) is left out
    np.testing.assert_allclose(cg.feat, [[5, 2], [1, 0], [7, 7], [1.5, 0]])
    assert cg.pids.tolist() == [0, 1, 2, 3] and cg.camids.tolist() == [-1] * 4
    assert [m.tolist() for m in cg.members] == [[3, 5], [0, 1], [4], [6]]
    # the raw features are averaged, then normalised: (3, 4) and (1, 0) -> (2, 2) / |(2, 2)|
    two = np.array([[3, 4], [1, 0]], np.float32)
    n = build_centroids(two, [1, 1], [1, 2], normalize=True)
    np.testing.assert_allclose(n.feat, [[0.5**0.5, 0.5**0.5]], rtol=1e-6)

    # queries: id 1 from cameras 2 and 3, id 2 from camera 3, id 3 from camera 1
    q_pids, q_cams = np.array([1, 1, 2, 3]), np.array([2, 3, 3, 1])
    per = build_camera_centroids(feat, pids, cams, q_pids, q_cams)
    # id 1: without camera 2 -> {1}; without camera 3 -> {1, 2}; id 2 has only camera-3
    # gallery images (no centroid); id 3 -> {2}; distractors and junk have no query
    assert per.pids.tolist() == [1, 1, 3]
    assert [c.tolist() for c in per.camsets] == [[1], [1, 2], [2]]
    np.testing.assert_allclose(per.feat, [[0, 0], [1, 0], [1.5, 0]])

    s = EvalSettings(normalize=False, centroids=True)
    m = evaluate_features(np.array([[0.8, 0]], np.float32), feat, [1], pids, [2], cams, s)
    assert m.rank1 == 1.0 and m.num_gallery == 4  # centroid (1, 0) is nearest, never removed
    ps = EvalSettings(normalize=False, centroids=True, per_camera=True)
    # query 0 (id 1, camera 2) at (2.4, 0): its {1, 2} centroid is removed; id 3's {2}
    # centroid (0.9 away) stays although it holds camera 2, so (0, 0) comes at rank 2
    ev = evaluate_features_detailed(
        np.array([[2.4, 0], [0.9, 0], [7, 7], [1.4, 0]], np.float32),
        feat, q_pids, pids, q_cams, cams, ps,
    )  # fmt: skip
    assert ev.metrics.num_gallery == 3 and ev.metrics.num_valid_query == 3
    assert ev.result.first_rank.tolist() == [2, 1, 0, 1]  # id 2 has no valid centroid
    # camera 3 keeps both id-1 centroids: (1, 0) at rank 1, then id 3, then (0, 0) at rank 3
    assert ev.result.ap[1] == pytest.approx((1 + 2 / 3) / 2)


def test_eval_command_does_not_import_torch():
    code = (
        "import sys, reidctl.cli, reidctl.commands.eval, reidctl.evaluate.results, "
        "reidctl.evaluate.report; assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_cli_usage_errors(dirs, tmp_path, capsys):
    res = str(dirs["results"])
    assert main(["eval", res, "--output-index", "2"]) == 2
    assert "add --prep" in capsys.readouterr().err
    assert main(["eval", res, "--per-camera"]) == 2
    assert "--per-camera needs --centroids" in capsys.readouterr().err
    assert main(["eval", res, "--distance", "manhattan"]) == 2
    assert main(["eval", str(tmp_path / "nowhere")]) == 2
    assert "result directory not found" in capsys.readouterr().err


def test_visualize_needs_images(small_set, tmp_path, capsys):
    # no prep_dir in run.json, so no dataset root: --images is required
    res = write_results(tmp_path / "r", small_set["entries"], {"feature": small_set["feature"]})
    assert main(["eval", str(res), "--visualize", "2", str(tmp_path / "g.png")]) == 2
    assert "--images ROOT" in capsys.readouterr().err
    assert not (tmp_path / "g.png").exists()


def test_synthetic_market_like_is_deterministic():
    from reidctl.evaluate.synthetic import market_like

    a, b = (
        market_like(40, 200, 16, num_ids=20, seed=3),
        market_like(40, 200, 16, num_ids=20, seed=3),
    )
    np.testing.assert_array_equal(a.g_feat, b.g_feat)
    assert a.q_feat.shape == (40, 16) and (a.g_pids == 0).sum() == round(200 * 2793 / 15913)
    np.testing.assert_allclose(np.linalg.norm(a.q_feat, axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"per_camera": True}, "--per-camera needs --centroids"),
        ({"centroids": True, "local": True}, "--centroids cannot be combined"),
        ({"centroids": True, "per_camera": True, "rerank": True}, "--rerank"),
        ({"local_weight": 1.0}, "--local-weight needs --local"),
        ({"max_rank": 0}, "--max-rank"),
        ({"distance": "manhattan"}, "manhattan"),
    ],
)
def test_invalid_settings_are_refused_when_built(kwargs, match):
    with pytest.raises(InputError, match=match):
        EvalSettings(**kwargs)
    with pytest.raises(InputError, match=match):  # replace() builds them again
        dataclasses.replace(EvalSettings(), **kwargs)


def test_evaluation_reads_its_metrics_through(dirs):
    ev = evaluate_results(dirs["results"])
    assert ev.mAP == ev.metrics.mAP and ev.to_dict() == ev.metrics.to_dict()
    assert ev.data is not None and len(ev.q_rows) + len(ev.g_rows) == len(ev.data.entries)
    with pytest.raises(AttributeError):
        _ = ev.not_a_metric
