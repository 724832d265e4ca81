"""``reidctl preprocess``: exit codes, summary, preprocessing sources."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from reidctl.artifacts import read_manifest, read_prep_meta
from reidctl.cli import main
from reidctl.errors import InputError
from reidctl.models.registry import get_spec
from reidctl.preprocess.config import parse_size, parse_triple, resolve_dtype, resolve_preprocess
from reidctl.specs import PreprocessSpec
from tests.preprocess.conftest import write_images


def test_cli_market_summary_and_exit_codes(synth_market, tmp_path: Path, capsys):
    out = tmp_path / "prep"
    args = ["preprocess", "market1501", "--root", str(synth_market.root), "-o", str(out)]
    assert main([*args, "--workers", "1", "--flip", "--relative-info"]) == 0
    printed = capsys.readouterr().out
    assert f"query {synth_market.num_query}" in printed and str(out) in printed
    assert "images/s" in printed
    meta = read_prep_meta(out)
    assert meta["flip"] is True and meta["info"]["relative"] is True
    assert main(args) == 2  # not empty
    assert "not empty" in capsys.readouterr().err
    assert main([*args, "--resume", "--flip", "--relative-info"]) == 0
    assert "already complete" in capsys.readouterr().out
    assert main(["preprocess", "market", "--root", str(tmp_path), "-o", str(tmp_path / "x")]) == 2
    assert "valid layouts" in capsys.readouterr().err
    assert main([*args[:-1], str(tmp_path / "y"), "--dtype", "int4"]) == 2


def test_cli_bad_images_exit_1_then_skip_bad(tmp_path: Path, capsys):
    write_images(tmp_path / "data" / "query", ["1_c1_a.jpg"])
    write_images(tmp_path / "data" / "gallery", ["1_c2_a.jpg"])
    (tmp_path / "data" / "gallery" / "2_c3_broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 cut")
    args = ["preprocess", "folder", "--root", str(tmp_path / "data"), "-o", str(tmp_path / "p")]
    assert main(args) == 1
    assert "2_c3_broken.jpg" in capsys.readouterr().err
    assert main([*args, "--resume", "--skip-bad"]) == 0
    assert "skipped 1 unreadable" in capsys.readouterr().out
    assert len(read_manifest(tmp_path / "p")) == 2


def test_cli_bad_name_is_exit_2(tmp_path: Path, capsys):
    write_images(tmp_path / "query", ["0001_c1s1_000001_00.jpg", "IMG_2024.jpg"])
    (tmp_path / "bounding_box_test").mkdir()
    args = ["preprocess", "market1501", "--root", str(tmp_path), "-o", str(tmp_path / "p")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "IMG_2024.jpg" in err and "PPPP_cCsS_FFFFFF_NN.jpg" in err


def _sidecar(path: Path, **preprocess) -> Path:
    spec = PreprocessSpec(height=64, width=32, **preprocess)
    path.write_text(
        json.dumps({"format": "reidctl.model/1", "model": "x", "preprocess": spec.to_dict()})
    )
    return path


def test_cli_model_config_sets_spec_and_uint8_for_folded_models(synth_market, tmp_path: Path):
    sidecar = _sidecar(tmp_path / "model.onnx.json", normalize_in_graph=True)
    out = tmp_path / "p"
    args = ["preprocess", "market1501", "--root", str(synth_market.root), "-o", str(out)]
    assert main([*args, "--model-config", str(sidecar), "--workers", "1"]) == 0
    meta = read_prep_meta(out)
    assert meta["dtype"] == "uint8" and meta["shape"] == [3, 64, 32]
    assert meta["preprocess"]["normalize_in_graph"] is True
    entry = read_manifest(out)[0]
    assert (out / entry.bin).stat().st_size == 3 * 64 * 32
    bad = [*args[:-1], str(tmp_path / "q"), "--model-config", str(sidecar)]
    assert main([*bad, "--dtype", "float32"]) == 2
    assert main([*bad, "--size", "128x64"]) == 2


def test_resolve_preprocess_sources(tmp_path: Path):
    assert resolve_preprocess() == PreprocessSpec()
    spec = resolve_preprocess(
        size="384x192", mean="0.5,0.5,0.5", std="0.5 0.5 0.5", interpolation="bicubic", color="bgr"
    )
    assert (spec.height, spec.width, spec.mean, spec.interpolation, spec.color) == (
        384,
        192,
        (0.5, 0.5, 0.5),
        "bicubic",
        "bgr",
    )
    assert resolve_preprocess(model="osnet_x0_25") == get_spec("osnet_x0_25").preprocess
    sidecar = _sidecar(tmp_path / "m.onnx.json", color="bgr")
    (tmp_path / "m.onnx").write_bytes(b"")
    assert resolve_preprocess(tmp_path / "m.onnx").color == "bgr"  # finds the sidecar
    with pytest.raises(InputError, match="not both"):
        resolve_preprocess(sidecar, "osnet_x0_25")
    with pytest.raises(InputError, match="valid models"):
        resolve_preprocess(model="osnet_x9")
    with pytest.raises(InputError, match="sidecar not found"):
        resolve_preprocess(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text('{"format": "reidctl.model/1", "model": "x"}')
    with pytest.raises(InputError, match="no 'preprocess'"):
        resolve_preprocess(tmp_path / "bad.json")
    assert resolve_dtype(PreprocessSpec(), None) == "float32"
    assert resolve_dtype(PreprocessSpec(normalize_in_graph=True), None) == "uint8"


@pytest.mark.parametrize("text", ["256", "256x", "ax128", "0x128", "256x128x3"])
def test_parse_size_rejects(text: str):
    with pytest.raises(InputError, match=r"HEIGHTxWIDTH|positive"):
        parse_size(text)


def test_parse_size_and_triple():
    assert parse_size("256X128") == (256, 128)
    assert parse_triple("1, 2,3", "mean") == (1.0, 2.0, 3.0)
    with pytest.raises(InputError, match="3 comma-separated"):
        parse_triple("1,2", "mean")
