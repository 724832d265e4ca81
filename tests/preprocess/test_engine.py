"""The preprocessed set: real data, determinism, output-dir rules, resume, bad files."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from reidctl.artifacts import read_manifest, read_prep_meta
from reidctl.errors import BadDataError, InputError, OutputExistsError
from reidctl.preprocess import engine
from reidctl.preprocess.engine import STATE_NAME, plan_entries, preprocess_dataset
from reidctl.preprocess.layouts import Record
from reidctl.specs import IMAGENET_MEAN, IMAGENET_STD, PreprocessSpec
from tests.preprocess.conftest import write_images, write_jpeg

MARKET_NAME = re.compile(r"(-1|\d{4})_c(\d)s\d_\d{6}_\d{2}\.jpg")


def _files(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


# --------------------------------------------------------------------------- real data


@pytest.fixture(scope="module")
def mini_prep(market_mini: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("mini") / "prep"
    preprocess_dataset("market1501", market_mini, out, workers=2)
    return out


@pytest.mark.shared
def test_market_mini_tensors_manifest_info(market_mini: Path, mini_prep: Path):
    entries = read_manifest(mini_prep)
    assert [e.split for e in entries] == ["query"] * 32 + ["gallery"] * 32
    for e in entries:
        assert (mini_prep / e.bin).stat().st_size == 393_216
        pid, cam = MARKET_NAME.fullmatch(Path(e.source).name).groups()
        assert (e.pid, e.camid) == (int(pid), int(cam))
        assert (market_mini / e.source).is_file()
        assert e.bin == f"{e.split}_{Path(e.source).stem}.bin"
    assert [e.source for e in entries[:32]] == sorted(e.source for e in entries[:32])
    lines = (mini_prep / "prep.info").read_text().splitlines()
    assert len(lines) == 64
    for line, e in zip(lines, entries, strict=True):
        assert line == f"{e.index} {mini_prep / e.bin} 128 256"
    meta = read_prep_meta(mini_prep)
    assert meta["counts"] == {"query": 32, "gallery": 32}
    assert meta["shape"] == [3, 256, 128] and meta["dtype"] == "float32"
    assert meta["root"] == str(market_mini.resolve()) and meta["layout"] == "market1501"
    assert PreprocessSpec.from_dict(meta["preprocess"]) == PreprocessSpec()
    assert not (mini_prep / STATE_NAME).exists()


@pytest.mark.shared
def test_market_mini_tensor_equals_independent_normalisation(market_mini: Path, mini_prep: Path):
    e = read_manifest(mini_prep)[37]
    bgr = cv2.imread(str(market_mini / e.source), cv2.IMREAD_COLOR)
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    resized = cv2.resize(rgb, (128, 256), interpolation=cv2.INTER_LINEAR).astype(np.float64)
    expected = ((resized / 255.0 - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1)
    got = np.fromfile(mini_prep / e.bin, dtype="<f4").reshape(3, 256, 128)
    assert np.abs(got - expected).max() <= 1e-6


# --------------------------------------------------------------------------- synthetic


def test_rerun_is_byte_identical_and_workers_agree(synth_market, tmp_path: Path):
    a, b = tmp_path / "a", tmp_path / "b"
    preprocess_dataset("market1501", synth_market.root, a, workers=1, relative_info=True)
    preprocess_dataset("market1501", synth_market.root, b, workers=2, relative_info=True)
    assert _files(a) == _files(b)
    preprocess_dataset(
        "market1501", synth_market.root, a, workers=2, relative_info=True, force=True
    )
    assert _files(a) == _files(b)
    first = (a / "prep.info").read_text().splitlines()[0]
    assert first == f"0 {read_manifest(a)[0].bin} 128 256"


def test_junk_dropped_distractors_in_gallery(synth_market, tmp_path: Path):
    s = preprocess_dataset(
        "market1501", synth_market.root, tmp_path / "p", workers=1, splits="query,gallery,train"
    )
    entries = read_manifest(tmp_path / "p")
    assert all(e.pid != -1 for e in entries)
    assert sum(e.pid == 0 for e in entries if e.split == "gallery") == synth_market.num_distractors
    assert all(e.pid > 0 for e in entries if e.split == "query")
    assert s.counts == {
        "query": synth_market.num_query,
        "gallery": synth_market.num_gallery - synth_market.num_junk,
        "train": synth_market.num_train,
    }
    assert s.meta["dropped"]["gallery"]["junk"] == synth_market.num_junk
    assert len(list((tmp_path / "p").glob("*.bin"))) == len(entries)


def test_dtypes_flip_and_spec_in_meta(synth_market, tmp_path: Path):
    spec = PreprocessSpec(
        height=64,
        width=32,
        mean=(0.5, 0.5, 0.5),
        std=(0.25, 0.25, 0.25),
        color="bgr",
        interpolation="area",
    )
    s = preprocess_dataset(
        "market1501",
        synth_market.root,
        tmp_path / "u8",
        spec=spec,
        dtype="uint8",
        flip=True,
        workers=1,
    )
    assert s.meta["preprocess"] == spec.to_dict() and s.meta["flip"] is True
    e = read_manifest(tmp_path / "u8")[0]
    got = np.fromfile(tmp_path / "u8" / e.bin, np.uint8).reshape(3, 64, 32)
    img = cv2.imread(str(synth_market.root / e.source))
    expected = cv2.resize(img, (32, 64), interpolation=cv2.INTER_AREA)[:, ::-1].transpose(2, 0, 1)
    np.testing.assert_array_equal(got, expected)
    preprocess_dataset(
        "market1501", synth_market.root, tmp_path / "f16", spec=spec, dtype="float16", workers=1
    )
    assert (tmp_path / "f16" / e.bin).stat().st_size == 3 * 64 * 32 * 2


def test_refuses_non_empty_output_without_force(synth_market, tmp_path: Path):
    out = tmp_path / "p"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match=r"--resume.*--force"):
        preprocess_dataset("market1501", synth_market.root, out, workers=1)
    preprocess_dataset("market1501", synth_market.root, out, workers=1, force=True)
    assert (out / "notes.txt").read_text() == "mine"  # --force only replaces its own files
    with pytest.raises(OutputExistsError, match="holds files preprocess does not write"):
        (out / "meta.json").unlink()
        preprocess_dataset("market1501", synth_market.root, out, workers=1, resume=True)
    with pytest.raises(InputError, match="either --resume or --force"):
        preprocess_dataset("market1501", synth_market.root, out, resume=True, force=True)


def test_resume_after_crash(synth_market, tmp_path: Path, monkeypatch):
    clean = tmp_path / "clean"
    preprocess_dataset("market1501", synth_market.root, clean, workers=1, relative_info=True)
    out = tmp_path / "crashed"
    calls = {"n": 0}
    real_decode = engine.decode_image

    def crashing_decode(data, source, *limits):
        calls["n"] += 1
        if calls["n"] > 10:
            raise KeyboardInterrupt  # the process is killed mid-run
        return real_decode(data, source, *limits)

    monkeypatch.setattr(engine, "decode_image", crashing_decode)
    with pytest.raises(KeyboardInterrupt):
        preprocess_dataset("market1501", synth_market.root, out, workers=1, relative_info=True)
    monkeypatch.undo()
    assert not (out / "meta.json").exists() and (out / STATE_NAME).exists()
    assert len(list(out.glob("*.bin"))) == 10
    (out / ".gallery_0003_c1s1_000111_01.bin.tmp").write_bytes(b"half a tensor")

    with pytest.raises(OutputExistsError):
        preprocess_dataset("market1501", synth_market.root, out, workers=1)
    with pytest.raises(InputError, match=r"other settings.*dtype"):
        preprocess_dataset(
            "market1501", synth_market.root, out, workers=1, resume=True, dtype="float16"
        )
    s = preprocess_dataset(
        "market1501", synth_market.root, out, workers=2, resume=True, relative_info=True
    )
    assert s.skipped == 10 and s.written == len(read_manifest(clean)) - 10
    assert _files(out) == _files(clean)


def test_resume_after_losing_meta_and_tensors(synth_market, tmp_path: Path):
    out = tmp_path / "p"
    preprocess_dataset("market1501", synth_market.root, out, workers=1)
    before = _files(out)
    bins = sorted(out.glob("*.bin"))
    (out / "meta.json").unlink()
    for p in bins[:3]:
        p.unlink()
    bins[5].write_bytes(bins[5].read_bytes()[:1000])  # a half-written tensor
    (out / f".{bins[7].name}.tmp").write_bytes(b"junk")
    s = preprocess_dataset("market1501", synth_market.root, out, workers=1, resume=True)
    assert s.written == 4
    assert _files(out) == before


def _dataset_with_bad_files(root: Path) -> list[str]:
    write_images(root / "query", ["1_c1_a.jpg", "2_c1_a.jpg"])
    write_images(root / "gallery", ["1_c2_b.jpg", "2_c2_b.jpg", "3_c2_b.jpg"], seed=10)
    good = (root / "gallery" / "3_c2_b.jpg").read_bytes()
    (root / "gallery" / "3_c2_b.jpg").write_bytes(good[: len(good) // 2])
    (root / "gallery" / "4_c3_x.jpg").write_bytes(b"this is not a JPEG")
    (root / "query" / "5_c1_empty.jpg").write_bytes(b"")
    return ["gallery/3_c2_b.jpg", "gallery/4_c3_x.jpg", "query/5_c1_empty.jpg"]


def test_bad_files_fail_after_the_rest_then_skip_bad(tmp_path: Path):
    bad = _dataset_with_bad_files(tmp_path / "data")
    out = tmp_path / "p"
    with pytest.raises(BadDataError) as info:
        preprocess_dataset("folder", tmp_path / "data", out, workers=1)
    for source in bad:
        assert str(tmp_path / "data" / source) in str(info.value)
    assert "truncated JPEG" in str(info.value) and "empty file" in str(info.value)
    assert len(list(out.glob("*.bin"))) == 4 and not (out / "meta.json").exists()

    s = preprocess_dataset("folder", tmp_path / "data", out, workers=1, resume=True, skip_bad=True)
    assert s.skipped == 4 and s.written == 0
    meta = json.loads((out / "meta.json").read_text())
    assert [b["source"] for b in meta["bad_files"]] == bad
    assert meta["counts"] == {"query": 2, "gallery": 2}
    entries = read_manifest(out)
    assert [e.index for e in entries] == [0, 1, 2, 3]
    assert [line.split()[0] for line in (out / "prep.info").read_text().splitlines()] == [
        "0",
        "1",
        "2",
        "3",
    ]


def test_unicode_paths_and_empty_dataset(tmp_path: Path):
    root = tmp_path / "données"
    write_jpeg(root / "query" / "1_c1_é.jpg", 0)
    write_jpeg(root / "gallery" / "1_c2_ü.jpg", 1)
    s = preprocess_dataset("folder", root, tmp_path / "p", workers=1)
    assert s.counts == {"query": 1, "gallery": 1}
    (root / "query" / "1_c1_é.jpg").unlink()
    (root / "gallery" / "1_c2_ü.jpg").unlink()
    with pytest.raises(InputError, match="no images found"):
        preprocess_dataset("folder", root, tmp_path / "q", workers=1)


def test_plan_entries_refuses_colliding_names():
    records = [
        Record("query", "query/1_c1_a.jpg", 1, 1),
        Record("query", "query/1_c1_a.png", 1, 1),
    ]
    with pytest.raises(InputError, match=r"both be stored as query_1_c1_a\.bin"):
        plan_entries(records)
    ok = plan_entries(
        [Record("query", "q/1_c1_a.jpg", 1, 1), Record("gallery", "g/1_c1_a.jpg", 1, 2)]
    )
    assert [e.bin for e in ok] == ["query_1_c1_a.bin", "gallery_1_c1_a.bin"]


def test_copied_set_keeps_relative_info(synth_market, tmp_path: Path):
    out = tmp_path / "p"
    preprocess_dataset("market1501", synth_market.root, out, workers=1, relative_info=True)
    moved = Path(shutil.move(str(out), str(tmp_path / "moved")))
    first = (moved / "prep.info").read_text().splitlines()[0].split()
    assert (moved / first[1]).is_file() and first[2:] == ["128", "256"]
