"""TensorRT conversion: profile choice, trtexec command, error paths without TensorRT."""

from __future__ import annotations

import importlib.util
import shlex

import pytest

from reidctl.cli import main
from reidctl.convert.trt import engine_from_onnx, profile_from_batches, trtexec_command
from reidctl.errors import BackendUnavailableError, InputError, OutputExistsError
from tests.runners.helpers import export_tiny


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("trt")
    return export_tiny(d / "tiny.onnx"), export_tiny(d / "static.onnx", static_batch=4)


def test_profile_min_opt_max():
    assert profile_from_batches([8, 1, 32, 4]) == (1, 32, 32)
    assert profile_from_batches([16]) == (16, 16, 16)
    with pytest.raises(InputError):
        profile_from_batches([0, 4])


def test_trtexec_command_dynamic_and_static():
    argv = trtexec_command(
        "m.onnx",
        "m.engine",
        "image",
        (3, 256, 128),
        [1, 8, 32],
        fp16=True,
        workspace_mib=1024,
        timing_cache="t.cache",
    )
    assert argv == [
        "trtexec",
        "--onnx=m.onnx",
        "--saveEngine=m.engine",
        "--minShapes=image:1x3x256x128",
        "--optShapes=image:32x3x256x128",
        "--maxShapes=image:32x3x256x128",
        "--fp16",
        "--memPoolSize=workspace:1024M",
        "--timingCacheFile=t.cache",
    ]
    static = trtexec_command("m.onnx", "m.engine", "image", (3, 256, 128), None)
    assert not any("Shapes" in a for a in static) and "--fp16" not in static


def test_cli_prints_trtexec_from_the_onnx_graph(tiny, capsys):
    dynamic, static = tiny
    assert (
        main(["convert", "trt", str(dynamic), "-o", "x.engine", "--bs", "4,1", "--print-trtexec"])
        == 0
    )
    argv = shlex.split(capsys.readouterr().out)
    assert "--minShapes=image:1x3x16x8" in argv and "--maxShapes=image:4x3x16x8" in argv
    assert main(["convert", "trt", str(static), "-o", "x.engine", "--print-trtexec"]) == 0
    assert "Shapes" not in capsys.readouterr().out


def test_convert_group_lists_subcommands(capsys):
    assert main(["convert", "--help"]) == 0
    out = capsys.readouterr().out
    assert "trt" in out and "om" in out


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="tensorrt installed")
def test_build_without_tensorrt_gives_the_install_hint(tiny, tmp_path):
    with pytest.raises(BackendUnavailableError, match="TensorRT >= 10"):
        engine_from_onnx(tiny[0], tmp_path / "m.engine", batch_sizes=[1, 4])
    assert not (tmp_path / "m.engine").exists()
    assert main(["convert", "trt", str(tiny[0]), "-o", str(tmp_path / "m.engine")]) == 2


def test_existing_engine_needs_force(tiny, tmp_path):
    (tmp_path / "m.engine").write_bytes(b"old")
    with pytest.raises(OutputExistsError):
        engine_from_onnx(tiny[0], tmp_path / "m.engine")
    assert (tmp_path / "m.engine").read_bytes() == b"old"
