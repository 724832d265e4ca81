"""``reidctl infer --images``: inference straight from images equals preprocess + infer."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from reidctl.artifacts import PrepSet
from reidctl.cli import main
from reidctl.errors import BadDataError
from reidctl.evaluate import evaluate_results
from reidctl.preprocess import preprocess_dataset
from reidctl.preprocess.synthetic import make_synthetic_market
from reidctl.runners.image_source import ImageSource, ImageStream, _fork_safe
from reidctl.runners.infer import infer_images
from reidctl.specs import PreprocessSpec

#: run.json keys that differ between two runs of the same work, and the source keys
TIMINGS = {"wall_s", "setup_s", "images_per_s", "mean_batch_latency_ms", "engine", "versions"}
SOURCE = {"prep_dir", "images", "preprocess_check"}


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def assert_same_results(streamed: Path, staged: Path, *, engine: bool = False) -> dict:
    """Every file byte-identical but run.json; run.json equal but timings and the source."""
    a, b = _files(streamed), _files(staged)
    assert set(a) == set(b)
    for name in a:
        if name != "run.json":
            assert a[name] == b[name], name
    ra, rb = json.loads(a["run.json"]), json.loads(b["run.json"])
    skip = TIMINGS | SOURCE
    assert {k: v for k, v in ra.items() if k not in skip} == {
        k: v for k, v in rb.items() if k not in skip
    }
    assert ra["prep_dir"] is None and rb["prep_dir"] and "images" not in rb
    assert ("engine" in ra) == engine
    return ra


@pytest.fixture(scope="module")
def osnet_onnx(osnet_weights: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("onnxruntime")
    from reidctl.convert.onnx import onnx_from_torch

    model = tmp_path_factory.mktemp("osnet") / "osnet.onnx"
    onnx_from_torch("osnet_x0_25", model, weights=osnet_weights, validate_batches=(1,))
    return model


@pytest.fixture(scope="module")
def staged(osnet_onnx: Path, market_mini: Path, tmp_path_factory: pytest.TempPathFactory):
    """``preprocess`` + ``infer`` (the two-stage result directory) at batch 8."""
    work = tmp_path_factory.mktemp("staged")
    prep, res = work / "prep", work / "res"
    pre = ["preprocess", "market1501", "--root", str(market_mini), "-o", str(prep)]
    assert main([*pre, "--model-config", str(osnet_onnx)]) == 0
    assert main(["infer", str(osnet_onnx), str(prep), "-o", str(res), "--bs", "8"]) == 0
    return prep, res


@pytest.mark.shared
@pytest.mark.slow
def test_stream_equals_two_stage_real_osnet(osnet_onnx, market_mini, staged, tmp_path, capsys):
    prep, res = staged
    out = tmp_path / "res"
    args = ["infer", str(osnet_onnx), "--images", str(market_mini), "--layout", "market1501"]
    assert main([*args, "-o", str(out), "--bs", "8"]) == 0
    assert "64 images, ort on cpu, batch 8" in capsys.readouterr().out
    run = assert_same_results(out, res)
    assert run["images"]["layout"] == "market1501" and run["images"]["bad_files"] == []
    assert run["images"]["root"] == str(market_mini.resolve())
    assert run["images"]["preprocess"] == PrepSet.open(prep).meta["preprocess"]
    # the library call, in threads this time (a single decoder), gives the same bytes
    out2 = tmp_path / "res-lib"
    infer_images(osnet_onnx, "market1501", market_mini, out2, batch_size=8, decoders=1)
    assert (out2 / "features" / "feature.npy").read_bytes() == (
        res / "features" / "feature.npy"
    ).read_bytes()
    # eval reads it as it reads the two-stage directory
    m_stream, m_staged = evaluate_results(out), evaluate_results(res)
    assert m_stream.mAP == m_staged.mAP and m_stream.num_valid_query == 30


@pytest.mark.shared
@pytest.mark.slow
def test_corrupt_image_exit_1_then_skip_bad(osnet_onnx, market_mini, tmp_path, capsys):
    data = tmp_path / "market"
    shutil.copytree(market_mini, data)
    victim = sorted((data / "bounding_box_test").glob("*.jpg"))[5]
    victim.write_bytes(victim.read_bytes()[:300])  # cut short: no end-of-image marker
    out = tmp_path / "res"
    args = ["infer", str(osnet_onnx), "--images", str(data), "--layout", "market1501", "--bs", "5"]
    assert main([*args, "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert "1 of 64 images could not be read" in err and victim.name in err and "--skip-bad" in err
    assert not out.exists()

    assert main([*args, "-o", str(out), "--skip-bad"]) == 0
    pre = ["preprocess", "market1501", "--root", str(data), "-o", str(tmp_path / "prep")]
    assert main([*pre, "--model-config", str(osnet_onnx), "--skip-bad"]) == 0
    res = tmp_path / "res2"
    assert (
        main(["infer", str(osnet_onnx), str(tmp_path / "prep"), "-o", str(res), "--bs", "5"]) == 0
    )
    capsys.readouterr()
    run = assert_same_results(out, res)
    assert [b["source"] for b in run["images"]["bad_files"]] == [f"bounding_box_test/{victim.name}"]
    assert run["num_images"] == 63


def _stream_rows(plan, bs, workers, processes):
    with ImageStream(plan, batch_size=bs, workers=workers, processes=processes) as s:
        got = [(list(e), t.copy()) for e, t in s.batches()]
    return got, s.bad


@pytest.mark.parametrize("processes", [True, False])
def test_stream_batches_equal_prep_set_rows(tmp_path, processes):
    data = make_synthetic_market(tmp_path / "d", 4, num_train_ids=0, num_distractors=2, num_junk=1)
    spec = PreprocessSpec(height=64, width=32)
    bad = sorted((data.root / "bounding_box_test").glob("*.jpg"))[3]
    bad.write_bytes(b"\xff\xd8\xff\xe0 cut")
    prep = PrepSet.open(
        preprocess_dataset(
            "market1501", data.root, tmp_path / "prep", spec=spec, workers=1, skip_bad=True
        ).out_dir
    )
    model = tmp_path / "m.onnx"
    model.write_bytes(b"")  # spec given: the model's facts are not read
    plan = ImageSource("market1501", data.root, spec=spec, skip_bad=True).plan(model)
    assert len(plan.entries) == len(prep.entries) + 1
    # processes only where forking is safe (a process that runs threads forks badly)
    expected = processes and _fork_safe()
    assert ImageStream(plan, batch_size=3, workers=2, processes=processes).processes == expected
    batches, stream_bad = _stream_rows(plan, 3, 2, processes)
    assert [b.source for b in stream_bad] == [f"bounding_box_test/{bad.name}"]
    assert all(len(e) == 3 for e, _ in batches[:-1])
    entries = [e for es, _ in batches for e in es]
    assert [e.source for e in entries] == [e.source for e in prep.entries]
    assert plan.kept(stream_bad) == list(prep.entries)
    rows = np.concatenate([t for _, t in batches])
    assert rows.tobytes() == prep.read_batch(range(len(prep))).tobytes()
    # without skip_bad the batches stop at the bad image, which is still reported
    strict = ImageSource("market1501", data.root, spec=spec).plan(model)
    batches, stream_bad = _stream_rows(strict, 3, 2, processes)
    assert len(stream_bad) == 1 and sum(len(e) for e, _ in batches) < len(prep.entries)


def test_cli_image_options_need_images(tmp_path, capsys, tiny_static_foreign):
    data = make_synthetic_market(tmp_path / "d", 2, num_train_ids=0, num_distractors=0, num_junk=0)
    model = tmp_path / "m.onnx"
    model.write_bytes(b"not a model")
    out = ["-o", str(tmp_path / "res")]
    assert main(["infer", str(model), str(tmp_path), *out, "--layout", "market1501"]) == 2
    assert "apply to --images" in capsys.readouterr().err
    assert main(["infer", str(model), *out]) == 2
    assert "--images" in capsys.readouterr().err
    img = ["--images", str(data.root)]
    assert main(["infer", str(model), str(tmp_path), *out, *img, "--layout", "market1501"]) == 2
    assert "not both" in capsys.readouterr().err
    assert main(["infer", str(model), *out, *img]) == 2
    assert "--layout" in capsys.readouterr().err
    # no sidecar, no facts and no flags: the preprocessing is unknown
    foreign = str(tiny_static_foreign)
    assert main(["infer", foreign, *out, *img, "--layout", "market1501"]) == 2
    assert "reidctl adopt" in capsys.readouterr().err
    assert not (tmp_path / "res").exists()


def test_all_bad_images_is_bad_data(tmp_path, tiny_onnx):
    pytest.importorskip("onnxruntime")
    root = tmp_path / "d"
    for split in ("query", "bounding_box_test"):
        (root / split).mkdir(parents=True)
        (root / split / "0001_c1s1_000001_00.jpg").write_bytes(b"")
    with pytest.raises(BadDataError, match="none of the 2 images"):
        infer_images(tiny_onnx, "market1501", root, tmp_path / "res", skip_bad=True)


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.shared
def test_stream_with_ray_engine_equals_two_stage(osnet_onnx, market_mini, staged, tmp_path, capsys):
    pytest.importorskip("ray", reason="ray is not installed (reidctl[ray])")
    _, res = staged
    out = tmp_path / "res"
    args = ["infer", str(osnet_onnx), "--images", str(market_mini), "--layout", "market1501"]
    assert main([*args, "-o", str(tmp_path / "res-cli"), "--bs", "8", "--engine", "ray"]) == 0
    assert "ray: " in capsys.readouterr().out
    from reidctl.scale.ray_engine import infer_ray

    # 4 shards of 16 images over 2 actors, each decoding its own shards
    source = ImageSource("market1501", market_mini)
    infer_ray(osnet_onnx, None, out, "ort", 8, workers=2, shard_size=16, source=source)
    # the actors run 1 thread each (recorded in run.json's options): compare all but run.json
    a, b = _files(out), _files(res)
    assert {k: v for k, v in a.items() if k != "run.json"} == {
        k: v for k, v in b.items() if k != "run.json"
    }
    run = json.loads(a["run.json"])
    assert run["engine"]["workers"] == 2 and run["engine"]["shards"] == 4
    assert run["images"]["num_images"] == 64 and run["prep_dir"] is None
    cli = _files(tmp_path / "res-cli")
    assert cli["features/feature.npy"] == b["features/feature.npy"]


@pytest.mark.shared
@pytest.mark.slow
def test_one_stream_equals_the_default_streams(osnet_onnx, market_mini, staged, tmp_path):
    """``infer``'s default (2 streams on 2+ cores) and ``--streams 1``: the same bytes."""
    from reidctl.platform import usable_cores

    _, res = staged
    default = json.loads((res / "run.json").read_text())["options"]
    assert default == ({"streams": 2} if usable_cores() >= 2 else {})
    out = tmp_path / "res"
    args = ["infer", str(osnet_onnx), "--images", str(market_mini), "--layout", "market1501"]
    assert main([*args, "-o", str(out), "--bs", "8", "--streams", "1"]) == 0
    assert json.loads((out / "run.json").read_text())["options"] == {"streams": 1}
    assert (out / "features" / "feature.npy").read_bytes() == (
        res / "features" / "feature.npy"
    ).read_bytes()
