"""``reidctl demo``: the whole chain end to end, and its output-directory rules."""

from __future__ import annotations

import json

import pytest

from reidctl.demo import DEMO_MARKER, DemoSettings, prepare_out_dir, run_demo
from reidctl.errors import InputError, OutputExistsError, UnknownNameError


def test_out_dir_rules(tmp_path) -> None:
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(OutputExistsError, match="not a reidctl demo directory"):
        prepare_out_dir(foreign, force=False)
    # a previous demo's own entries are replaced, anything else is kept
    (foreign / DEMO_MARKER).write_text("{}")
    (foreign / "results").mkdir()
    prepare_out_dir(foreign, force=False)
    assert (foreign / "notes.txt").read_text() == "keep me"
    assert not (foreign / "results").exists() and not (foreign / DEMO_MARKER).exists()
    afile = tmp_path / "file"
    afile.write_text("x")
    with pytest.raises(InputError, match="not a directory"):
        prepare_out_dir(afile, force=True)


def test_bad_names_fail_before_any_work(tmp_path) -> None:
    with pytest.raises(UnknownNameError, match="osnet_x0_25"):
        run_demo(DemoSettings(out=tmp_path / "d", model="nope"))
    with pytest.raises(InputError, match="--weights"):
        run_demo(DemoSettings(out=tmp_path / "d", weights=tmp_path / "missing.pth"))
    assert not (tmp_path / "d").exists()


@pytest.mark.slow
def test_demo_end_to_end(tmp_path) -> None:
    out = tmp_path / "demo"
    lines: list[str] = []
    result = run_demo(
        DemoSettings(out=out, quick=True, threads=2, backends=("ort",)), progress=lines.append
    )
    for name in ("report.md", "cmc.png", "ranked.png", "throughput.png", "metrics.json"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    for name in ("cmc.png", "ranked.png", "throughput.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    report = (out / "report.md").read_text()
    assert "Random weights" in report and "![CMC](cmc.png)" in report
    assert "| batch |" in report and "INT8" in report
    m = result.metrics
    for key in ("rank1", "rank5", "mAP", "mINP"):
        assert 0.0 <= m[key] <= 1.0
    assert m["rank1"] <= m["rank5"] <= m["rank10"]
    guard = result.int8["guard"]
    assert -1.0 <= guard["mean_cosine"] <= 1.0 and guard["num_images"] > 0
    doc = json.loads((out / DEMO_MARKER).read_text())
    assert doc["random_weights"] is True and doc["synthetic_data"] is True
    assert doc["stages"][0]["name"] == "synthetic data"
    # a line when each stage starts and one when it ends, with its time
    assert sum(" done in " in ln for ln in lines) == len(doc["stages"])
    # the bench measured INT8 against FP32 at every batch size
    assert set(doc["bench"]["ratios"]["ort"]) == {"1", "8"}
