"""INT8 calibration uses every selected tensor, one batch of intermediate outputs at a time,
and gives the ranges of a calibration that holds all outputs at once, in any order."""

from __future__ import annotations

import json
import weakref
from pathlib import Path

import numpy as np
import pytest

from reidctl.artifacts import PrepSet, read_sidecar, write_manifest
from reidctl.convert import int8
from reidctl.io import sha256_file
from tests.convert.test_int8 import _tiny_onnx, make_prep

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def big(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("int8-calib")
    model = _tiny_onnx(base / "tiny.onnx")
    calib = make_prep(base / "calib", {"train": 35}, seed=5)  # 210 tensors
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = base / "pre.onnx"
    quant_pre_process(str(model), str(pre), skip_symbolic_shape=False)
    return {"model": model, "calib": calib, "pre": pre, "base": base}


def _shuffled_copy(src: Path, dst: Path, seed: int) -> Path:
    """The same tensors with the manifest in another order."""
    dst.mkdir()
    for p in src.iterdir():
        (dst / p.name).write_bytes(p.read_bytes())
    prep = PrepSet.open(src)
    order = np.random.default_rng(seed).permutation(len(prep.entries))
    from dataclasses import replace

    write_manifest(
        dst / "manifest.jsonl",
        [replace(prep.entries[j], index=i) for i, j in enumerate(order)],
    )
    return dst


def _one_shot(pre: Path, calib: Path, method: str, samples: int | None, tmp: Path):
    """ONNX Runtime's own calibrator holding every batch's outputs, computed once."""
    from onnxruntime.quantization.calibrate import CalibrationMethod, create_calibrator

    m = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }[method]
    cal = create_calibrator(pre, None, augmented_model_path=str(tmp / "ref-aug.onnx"),
                            calibrate_method=m, extra_options={})  # fmt: skip
    reader = int8.PrepCalibrationReader(calib, "image", samples=samples, batch_size=8)
    cal.collect_data(reader)
    return cal.compute_data()


def _as_pairs(ranges) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    out = {}
    for k, v in ranges.items():
        lo, hi = v.range_value
        out[k] = (np.asarray(lo), np.asarray(hi))
    return out


def _assert_same(a, b) -> None:
    pa, pb = _as_pairs(a), _as_pairs(b)
    assert sorted(pa) == sorted(pb) and pa
    for k in pa:
        assert np.array_equal(pa[k][0], pb[k][0]), k
        assert np.array_equal(pa[k][1], pb[k][1]), k


@pytest.mark.parametrize("samples", [128, 200])
def test_default_and_uneven_sample_counts_succeed(big, tmp_path, samples) -> None:
    out = tmp_path / "q.onnx"
    side = int8.int8_from_onnx(big["model"], big["calib"], out, samples=samples)
    assert side["conversion"]["calibration"]["samples"] == samples
    assert read_sidecar(out)["model_sha256"] == sha256_file(out)


def test_every_tensor_counts(big, tmp_path) -> None:
    """200 samples do not give the model calibrated on their last 72 (what discarding all
    but the last batches gave)."""
    full = tmp_path / "full.onnx"
    int8.int8_from_onnx(big["model"], big["calib"], full, samples=200)
    reader = int8.PrepCalibrationReader(big["calib"], "image", samples=200, batch_size=8)
    assert len(reader) == 25
    last = reader.files[-72:]
    sub = tmp_path / "last72"
    sub.mkdir()
    prep = PrepSet.open(big["calib"])
    from dataclasses import replace

    for p in big["calib"].iterdir():
        (sub / p.name).write_bytes(p.read_bytes())
    write_manifest(sub / "manifest.jsonl",
                   [replace(prep.entries[j], index=i) for i, j in enumerate(last)])  # fmt: skip
    meta = json.loads((sub / "meta.json").read_text())
    meta["counts"] = {"train": len(last)}
    (sub / "meta.json").write_text(json.dumps(meta))
    part = tmp_path / "part.onnx"
    int8.int8_from_onnx(big["model"], sub, part, samples=None)
    assert sha256_file(full) != sha256_file(part)


@pytest.mark.parametrize("method", ["minmax", "entropy", "percentile"])
def test_ranges_equal_one_shot_and_ignore_order(big, tmp_path, method) -> None:
    reader = int8.PrepCalibrationReader(big["calib"], "image", samples=200, batch_size=8)
    ranges = int8.calibrate_ranges(big["pre"], reader, method, tmp_path)
    _assert_same(ranges, _one_shot(big["pre"], big["calib"], method, 200, tmp_path))

    shuffled = _shuffled_copy(big["calib"], tmp_path / "shuffled", seed=9)
    a = int8.calibrate_ranges(
        big["pre"], int8.PrepCalibrationReader(big["calib"], "image", samples=None), method,
        tmp_path,
    )  # fmt: skip
    b = int8.calibrate_ranges(
        big["pre"], int8.PrepCalibrationReader(shuffled, "image", samples=None), method,
        tmp_path,
    )  # fmt: skip
    _assert_same(a, b)


def test_model_does_not_depend_on_set_order(big, tmp_path) -> None:
    shuffled = _shuffled_copy(big["calib"], tmp_path / "shuffled", seed=3)
    a, b = tmp_path / "a.onnx", tmp_path / "b.onnx"
    int8.int8_from_onnx(big["model"], big["calib"], a, samples=None)
    int8.int8_from_onnx(big["model"], shuffled, b, samples=None)
    assert sha256_file(a) == sha256_file(b)


@pytest.mark.parametrize("method", ["minmax", "entropy"])
def test_one_batch_of_outputs_held_at_a_time(big, tmp_path, monkeypatch, method) -> None:
    """Every earlier batch's intermediate outputs are gone (no live reference) by the time
    the batch after next runs; ONNX Runtime's own calibrators keep all of them."""
    import onnxruntime as ort

    live: list[list[weakref.ref]] = []
    peak = {"held": 0, "runs": 0}
    real_run = ort.InferenceSession.run

    def run(self, names, feeds, *a, **k):
        held = sum(any(r() is not None for r in refs) for refs in live)
        peak["held"] = max(peak["held"], held)
        peak["runs"] += 1
        outs = real_run(self, names, feeds, *a, **k)
        live.append([weakref.ref(o) for o in outs if isinstance(o, np.ndarray)])
        return outs

    monkeypatch.setattr(ort.InferenceSession, "run", run)
    reader = int8.PrepCalibrationReader(big["calib"], "image", samples=128, batch_size=8)
    int8.calibrate_ranges(big["pre"], reader, method, tmp_path)
    passes = 1 if method == "minmax" else 2
    assert peak["runs"] == 16 * passes
    assert peak["held"] <= 1

    # the same count on ONNX Runtime's one-shot calibrator shows what it measures
    live.clear()
    peak.update(held=0, runs=0)
    _one_shot(big["pre"], big["calib"], method, 128, tmp_path)
    assert peak["held"] == 15


@pytest.mark.parametrize(("shape", "dtype"), [((3, 128, 64), "float32"), ((3, 16, 8), "float16")])
def test_calibration_set_that_does_not_fit_is_a_typed_error(
    big, tmp_path, capsys, shape, dtype
) -> None:
    from reidctl.cli import main

    prep = make_prep(tmp_path / "bad", {"train": 2}, ids=2)
    import json

    meta = json.loads((prep / "meta.json").read_text())
    meta["shape"], meta["dtype"] = list(shape), dtype
    (prep / "meta.json").write_text(json.dumps(meta))
    for p in prep.glob("*.bin"):  # tensors as meta.json says: only the model disagrees
        np.zeros(shape, dtype).tofile(p)
    out = tmp_path / "q.onnx"
    rc = main(["convert", "int8", str(big["model"]), "--calib", str(prep), "-o", str(out)])
    assert rc == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and str(big["model"]) in err and "meta.json" in err
    assert not out.exists() and not list(tmp_path.glob(".int8-*"))
