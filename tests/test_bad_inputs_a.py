"""Bad inputs, one CLI invocation each: the exit code, the offending file named in the
message, no Python traceback, and nothing half-written where the output would go."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from reidctl.artifacts import PrepSet, write_manifest
from reidctl.cli import main

pytest.importorskip("onnxruntime")

from tests.convert.test_int8 import _tiny_onnx, make_prep
from tests.preprocess.conftest import write_images
from tests.preprocess.test_bombs import jpeg_claiming, png_claiming
from tests.runners.test_output_rows import _model as rows_model


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> dict[str, Path]:
    b = tmp_path_factory.mktemp("bad-a")
    return {
        "model": _tiny_onnx(b / "tiny.onnx"),
        "prep": make_prep(b / "prep", {"query": 1, "gallery": 2}, seed=2),
        "calib": make_prep(b / "calib", {"train": 22}, seed=1),  # 132 tensors
    }


def _copy(src: Path, dst: Path) -> Path:
    dst.mkdir(parents=True)
    for p in src.iterdir():
        (dst / p.name).write_bytes(p.read_bytes())
    return dst


def _edit_meta(prep: Path, fn: Callable[[dict], None]) -> Path:
    meta = json.loads((prep / "meta.json").read_text())
    fn(meta)
    (prep / "meta.json").write_text(json.dumps(meta))
    return prep


def _pre(**changes):
    return lambda m: m["preprocess"].update(changes)


def _refit(shape, dtype):
    def fn(meta):
        meta["shape"], meta["dtype"] = list(shape), dtype

    return fn


def _dataset(tmp: Path, extra: Callable[[Path], Path] | None = None) -> tuple[Path, Path | None]:
    root = tmp / "data"
    write_images(root / "gallery", [f"{i % 4 + 1}_c{i % 3 + 1}_{i:03d}.jpg" for i in range(6)])
    return root, (extra(root / "gallery") if extra else None)


# each case: (tmp, base) -> (argv, exit code, texts the message must hold, path not created)
def case_calib_too_large(t, b):
    prep = _edit_meta(_copy(b["calib"], t / "c"), _refit((3, 128, 64), "float32"))
    for p in prep.glob("*.bin"):
        np.zeros((3, 128, 64), np.float32).tofile(p)
    out = t / "q.onnx"
    return ["convert", "int8", b["model"], "--calib", prep, "-o", out], 2, [b["model"]], out


def case_calib_float16(t, b):
    prep = _edit_meta(_copy(b["calib"], t / "c"), _refit((3, 16, 8), "float16"))
    for p in prep.glob("*.bin"):
        np.zeros((3, 16, 8), np.float16).tofile(p)
    out = t / "q.onnx"
    return ["convert", "int8", b["model"], "--calib", prep, "-o", out], 2, ["float16"], out


def case_infer_bgr(t, b):
    prep = _edit_meta(_copy(b["prep"], t / "p"), _pre(color="bgr"))
    out = t / "res"
    return ["infer", b["model"], prep, "-o", out], 2, [prep / "meta.json", "color"], out


def case_infer_mean(t, b):
    prep = _edit_meta(_copy(b["prep"], t / "p"), _pre(mean=[0.5, 0.5, 0.5]))
    out = t / "res"
    return ["infer", b["model"], prep, "-o", out], 2, [prep / "meta.json", "mean"], out


def case_bench_std(t, b):
    prep = _edit_meta(_copy(b["prep"], t / "p"), _pre(std=[0.5, 0.5, 0.5]))
    argv = ["bench", b["model"], "--bs", "2", "--iters", "1", "--data", prep, "--out", t / "o"]
    return argv, 2, [prep / "meta.json", "std"], t / "o"


def case_int8_calib_bgr(t, b):
    prep = _edit_meta(_copy(b["calib"], t / "c"), _pre(color="bgr"))
    out = t / "q.onnx"
    return ["convert", "int8", b["model"], "--calib", prep, "-o", out], 2, [prep], out


def case_int8_eval_mean(t, b):
    prep = _edit_meta(_copy(b["prep"], t / "e"), _pre(mean=[0.1, 0.1, 0.1]))
    out = t / "q.onnx"
    argv = ["convert", "int8", b["model"], "--calib", b["calib"], "-o", out, "--eval", prep]
    return argv, 2, [prep], out


def _rows_case(kind):
    def case(t, b):
        from tests.runners.helpers import make_prep as rows_prep

        model = rows_model(t / f"{kind}.onnx", kind)
        prep, _ = rows_prep(t / "p", n=6)
        out = t / "res"
        return ["infer", model, prep, "-o", out, "--bs", "4"], 2, [model, "'bad'"], out

    return case


def case_bomb_jpeg(t, b):
    root, bomb = _dataset(t, lambda d: jpeg_claiming(d / "2_c1_bomb.jpg", 60000, 60000))
    out = t / "p"
    argv = ["preprocess", "folder", "--root", root, "-o", out, "--splits", "gallery"]
    return argv, 1, [bomb.name, "60000x60000"], out / "meta.json"


def case_bomb_png(t, b):
    root, bomb = _dataset(t, lambda d: png_claiming(d / "2_c1_bomb.png", 60000, 60000))
    out = t / "p"
    argv = ["preprocess", "folder", "--root", root, "-o", out, "--splits", "gallery"]
    return argv, 1, [bomb.name, "60000x60000"], out / "meta.json"


def _spec_case(*flags):
    def case(t, b):
        root, _ = _dataset(t)
        out = t / "p"
        argv = ["preprocess", "folder", "--root", root, "-o", out, *flags]
        return argv, 2, [flags[0] if flags[0] != "--size" else "4096"], out

    return case


def case_manifest_short(t, b):
    prep = _copy(b["prep"], t / "p")
    _edit_meta(prep, lambda m: m.update(num_tensors=18, counts={}))
    entries = PrepSet.open(b["prep"]).entries
    write_manifest(prep / "manifest.jsonl", entries[:-1])
    out = t / "res"
    return ["infer", b["model"], prep, "-o", out], 2, [prep / "manifest.jsonl", "17"], out


def case_manifest_escapes(t, b):
    from dataclasses import replace

    prep = _copy(b["prep"], t / "p")
    entries = list(PrepSet.open(b["prep"]).entries)
    entries[3] = replace(entries[3], bin="../../outside.bin")
    write_manifest(prep / "manifest.jsonl", entries)
    out = t / "res"
    return ["infer", b["model"], prep, "-o", out], 2, [prep / "manifest.jsonl", "../../"], out


CASES = {
    "int8 calib 128x64": case_calib_too_large,
    "int8 calib float16": case_calib_float16,
    "infer bgr set": case_infer_bgr,
    "infer other mean": case_infer_mean,
    "bench --data other std": case_bench_std,
    "int8 --calib bgr": case_int8_calib_bgr,
    "int8 --eval other mean": case_int8_eval_mean,
    "output reduced over batch": _rows_case("batch_mean"),
    "scalar output": _rows_case("scalar"),
    "doubled batch output": _rows_case("doubled"),
    "jpeg bomb": case_bomb_jpeg,
    "png bomb": case_bomb_png,
    "--mean nan": _spec_case("--mean", "nan,0.5,0.5"),
    "--mean inf": _spec_case("--mean", "inf,0.5,0.5"),
    "--std nan": _spec_case("--std", "0.2,nan,0.2"),
    "--mean 2,2,2": _spec_case("--mean", "2,2,2"),
    "--std 0": _spec_case("--std", "0,0.2,0.2"),
    "--size 100000x100000": _spec_case("--size", "100000x100000"),
    "manifest shorter than meta": case_manifest_short,
    "manifest bin leaves the set": case_manifest_escapes,
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input(base, tmp_path, capsys, name) -> None:
    argv, code, texts, absent = CASES[name](tmp_path, base)
    rc = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert rc == code, err
    assert "Traceback" not in err
    for text in texts:
        assert str(text) in err, (text, err)
    assert not absent.exists()
    assert not list(tmp_path.glob(".int8-*")) and not list(tmp_path.glob("*.tmp"))


def test_int8_default_and_uneven_samples(base, tmp_path, capsys) -> None:
    for samples in ("128", "130"):
        out = tmp_path / f"q{samples}.onnx"
        argv = ["convert", "int8", base["model"], "--calib", base["calib"], "-o", out,
                "--samples", samples]  # fmt: skip
        assert main([str(a) for a in argv]) == 0, capsys.readouterr().err
        assert json.loads(Path(f"{out}.json").read_text())["conversion"]["calibration"][
            "samples"
        ] == int(samples)


def test_bomb_resume_skip_bad(tmp_path, capsys) -> None:
    root, _ = _dataset(tmp_path, lambda d: jpeg_claiming(d / "2_c1_bomb.jpg", 60000, 60000))
    argv = ["preprocess", "folder", "--root", str(root), "-o", str(tmp_path / "p"), "--splits",
            "gallery"]  # fmt: skip
    assert main(argv) == 1
    assert main([*argv, "--resume", "--skip-bad"]) == 0
    out = capsys.readouterr().out
    assert "skipped 1 unreadable" in out
    assert len(PrepSet.open(tmp_path / "p")) == 6


def test_output_dir_with_spaces_writes_relative_info(tmp_path, capsys) -> None:
    root, _ = _dataset(tmp_path)
    out = tmp_path / "my prep"
    argv = ["preprocess", "folder", "--root", str(root), "-o", str(out), "--splits", "gallery"]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "whitespace" in err and str(out) in err
    lines = (out / "prep.info").read_text().splitlines()
    assert lines and all(len(line.split(" ")) == 4 for line in lines)
    assert json.loads((out / "meta.json").read_text())["info"]["relative"] is True


@pytest.mark.parametrize("command", ["preprocess", "infer", "int8"])
def test_no_progress_frames_when_stderr_is_not_a_terminal(base, tmp_path, capsys, command):
    if command == "preprocess":
        root, _ = _dataset(tmp_path)
        argv = ["preprocess", "folder", "--root", root, "-o", tmp_path / "p", "--splits",
                "gallery", "--workers", "1"]  # fmt: skip
    elif command == "infer":
        argv = ["infer", base["model"], base["prep"], "-o", tmp_path / "r", "--bs", "2"]
    else:
        argv = ["convert", "int8", base["model"], "--calib", base["calib"], "-o",
                tmp_path / "q.onnx", "--samples", "16"]  # fmt: skip
    assert main([str(a) for a in argv]) == 0
    err = capsys.readouterr().err
    assert "\r" not in err and "it/s" not in err and "img/s" not in err
