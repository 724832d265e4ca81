"""convert trt / om: --opt-bs, passthrough arguments, --soc, --outputs, two-input models."""

from __future__ import annotations

import shlex
import warnings
from typing import ClassVar

import onnx
import pytest

from reidctl.cli import main
from reidctl.convert.graph import cut_outputs
from reidctl.convert.om import SOC_VERSIONS, atc_command, check_soc, om_from_onnx
from reidctl.convert.trt import (
    BUILDER_FLAGS,
    builder_flag_names,
    profile_from_batches,
    trtexec_command,
    trtexec_for_onnx,
)
from reidctl.errors import InputError, UnknownNameError
from tests.runners.helpers import H, W, export_camera_model, export_tiny

# ------------------------------------------------------------------------------- trt


def test_opt_bs_sets_the_profile_opt():
    assert profile_from_batches([1, 2, 4, 8], opt_batch=4) == (1, 4, 8)
    assert profile_from_batches([1, 2, 4, 8]) == (1, 8, 8)
    with pytest.raises(InputError, match="outside"):
        profile_from_batches([1, 8], opt_batch=16)


def test_builder_flags_and_trtexec_args_reach_the_argv():
    argv = trtexec_command(
        "m.onnx",
        "m.engine",
        "image",
        (3, 256, 128),
        [1, 2, 4, 8],
        opt_batch=4,
        fp16=True,
        builder_flags=["fp16", "OBEY_PRECISION_CONSTRAINTS", "sparse_weights"],
        extra_args="--verbose --builderOptimizationLevel=5 '--tacticSources=-CUBLAS'",
    )
    assert "--optShapes=image:4x3x256x128" in argv and "--maxShapes=image:8x3x256x128" in argv
    assert argv.count("--fp16") == 1  # --fp16 and FP16 are one flag
    assert "--precisionConstraints=obey" in argv and "--sparsity=enable" in argv
    assert argv[-3:] == ["--verbose", "--builderOptimizationLevel=5", "--tacticSources=-CUBLAS"]
    assert builder_flag_names(["BuilderFlag.INT8", "int8"]) == ["INT8"]
    assert set(BUILDER_FLAGS) >= {"FP16", "BF16", "INT8", "REFIT", "VERSION_COMPATIBLE"}
    with pytest.raises(InputError, match="valid"):
        builder_flag_names(["FP61"])
    with pytest.raises(InputError, match="--saveEngine"):
        trtexec_command("m.onnx", "m.engine", "image", (3, 8, 8), [1], extra_args="--saveEngine=x")


def test_trtexec_args_without_a_trtexec_build_are_refused(tmp_path):
    model = export_tiny(tmp_path / "tiny.onnx")
    code = main(
        ["convert", "trt", str(model), "-o", str(tmp_path / "m.engine"), "--trtexec-args", "-v"]
    )
    assert code == 2 and not (tmp_path / "m.engine").exists()


def test_two_input_model_lists_both_inputs_in_every_shape(tmp_path, capsys):
    model = export_camera_model(tmp_path / "cam.onnx")
    assert (
        main(
            ["convert", "trt", str(model), "-o", "cam.engine", "--bs", "1,2,4,8", "--opt-bs", "4",
             "--builder-flag", "FP16", "--trtexec-args", "--verbose", "--print-trtexec"]
        )
        == 0
    )  # fmt: skip
    argv = shlex.split(capsys.readouterr().out)
    assert f"--minShapes=image:1x3x{H}x{W},camera:1" in argv
    assert f"--optShapes=image:4x3x{H}x{W},camera:4" in argv
    assert f"--maxShapes=image:8x3x{H}x{W},camera:8" in argv
    assert "--fp16" in argv and argv[-1] == "--verbose"


# ------------------------------------------------------------------------------- om


def test_atc_args_pass_through_and_own_options_are_refused(tmp_path):
    model = export_tiny(tmp_path / "tiny.onnx")
    side = om_from_onnx(
        model,
        tmp_path / "m",
        soc="Ascend310B1",
        dry_run=True,
        atc_args="--precision_mode=allow_fp32_to_fp16 --insert_op_conf=aipp.cfg --log=info",
    )
    argv = side["conversion"]["argv"]
    assert argv[-3:] == [
        "--precision_mode=allow_fp32_to_fp16",
        "--insert_op_conf=aipp.cfg",
        "--log=info",
    ]
    assert "--soc_version=Ascend310B1" in argv
    with pytest.raises(InputError, match="--out_nodes"):
        om_from_onnx(model, tmp_path / "m", soc="Ascend310P3", dry_run=True,
                     atc_args="--out_nodes=x:0")  # fmt: skip
    # an --input_format given through replaces reidctl's
    argv = atc_command(
        model, "m", soc="Ascend310P3", input_name="image", chw=(3, H, W), batch_sizes=[1],
        out_nodes=["n:0"], extra_args=["--input_format=ND"],
    )  # fmt: skip
    assert [a for a in argv if a.startswith("--input_format")] == ["--input_format=ND"]


def test_soc_typo_is_refused_with_the_list(tmp_path, capsys):
    model = export_tiny(tmp_path / "tiny.onnx")
    assert check_soc("Ascend910B3") == "Ascend910B3"
    with pytest.raises(InputError, match="did you mean Ascend310P3"):
        check_soc("Ascend310p3")
    code = main(["convert", "om", str(model), "-o", str(tmp_path / "m"), "--soc", "Ascend301P3",
                 "--dry-run"])  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    assert "Ascend301P3" in err
    assert all(s in err for s in ("Ascend310B1", "Ascend910B", "Ascend310P3"))
    assert "Ascend310P1" in SOC_VERSIONS


def test_soc_names_of_an_installed_cann_are_accepted(tmp_path, monkeypatch):
    cfg = tmp_path / "compiler" / "data" / "platform_config"
    cfg.mkdir(parents=True)
    (cfg / "Ascend910_9999.ini").write_text("[version]\n")
    monkeypatch.setenv("ASCEND_TOOLKIT_HOME", str(tmp_path))
    assert check_soc("Ascend910_9999") == "Ascend910_9999"


def test_two_input_model_atc_shapes(tmp_path, capsys):
    model = export_camera_model(tmp_path / "cam.onnx")
    assert main(["convert", "om", str(model), "-o", str(tmp_path / "cam"), "--soc", "Ascend310P3",
                 "--bs", "1,4,8", "--dry-run"]) == 0  # fmt: skip
    argv = shlex.split(capsys.readouterr().out)
    assert f"--input_shape=image:-1,3,{H},{W};camera:-1" in argv
    assert "--dynamic_batch_size=1,4,8" in argv and "--input_format=ND" in argv
    side = om_from_onnx(
        model, tmp_path / "cam16", soc="Ascend310P3", static=True, batch_sizes=[16], dry_run=True
    )
    assert f"--input_shape=image:16,3,{H},{W};camera:16" in side["conversion"]["argv"]


# ------------------------------------------------------------------------------- --outputs


def test_outputs_must_keep_the_feature(tmp_path):
    model = export_tiny(tmp_path / "tiny.onnx")
    with pytest.raises(InputError, match="retrieval feature"):
        om_from_onnx(model, tmp_path / "m", soc="Ascend310P3", dry_run=True, outputs=["local"])
    with pytest.raises(UnknownNameError):
        trtexec_for_onnx(model, tmp_path / "m.engine", outputs=["logits"])


@pytest.fixture(scope="module")
def aligned_with_classifier(tmp_path_factory):
    """aligned_reid with a 751-way classifier at random init, exported (three outputs)."""
    import torch

    from reidctl.convert.onnx import onnx_from_torch
    from reidctl.models.loading import create_model

    d = tmp_path_factory.mktemp("aligned")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded = create_model("aligned_reid", num_classes=751)
    ckpt = d / "aligned.pth"
    torch.save(loaded.module.state_dict(), ckpt)
    model = d / "aligned.onnx"
    onnx_from_torch("aligned_reid", model, weights=ckpt, validate_batches=(1,))
    return model


@pytest.mark.slow
def test_outputs_drop_the_classifier(aligned_with_classifier, tmp_path, capsys):
    model = aligned_with_classifier
    full = onnx.load(str(model))
    assert [o.name for o in full.graph.output] == ["global_feat", "local_feat", "logits"]
    cut = onnx.load(str(cut_outputs(model, ["global_feat", "local_feat"], tmp_path / "c.onnx")))
    assert [o.name for o in cut.graph.output] == ["global_feat", "local_feat"]
    assert cut.graph.output[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    big = [list(i.dims) for i in full.graph.initializer if 751 in i.dims]
    assert big and not [i for i in cut.graph.initializer if 751 in i.dims]
    assert (tmp_path / "c.onnx").stat().st_size < model.stat().st_size - 751 * 2048 * 4 * 0.99

    # ATC: --out_nodes name the producers of the two kept outputs, in the cut graph it reads
    keep = "global_feat,local_feat"
    assert main(["convert", "om", str(model), "-o", str(tmp_path / "al"), "--soc", "Ascend310P3",
                 "--outputs", keep, "--dry-run"]) == 0  # fmt: skip
    argv = shlex.split(capsys.readouterr().out)
    cut_file = tmp_path / "al.cut.onnx"
    assert f"--model={cut_file}" in argv
    out_nodes = next(a for a in argv if a.startswith("--out_nodes=")).split("=", 1)[1].split(";")
    g = onnx.load(str(cut_file)).graph
    assert [o.name for o in g.output] == ["global_feat", "local_feat"]
    producers = {n.name: n for n in g.node}
    assert [producers[s.rsplit(":", 1)[0]].output[int(s.rsplit(":", 1)[1])] for s in out_nodes] == [
        "global_feat", "local_feat"
    ]  # fmt: skip

    # trtexec: reads the cut graph, written beside the engine
    assert main(["convert", "trt", str(model), "-o", str(tmp_path / "al.engine"), "--outputs",
                 keep, "--print-trtexec", "--force"]) == 0  # fmt: skip
    argv = shlex.split(capsys.readouterr().out)
    assert f"--onnx={tmp_path / 'al.cut.onnx'}" in argv
    assert [o.name for o in onnx.load(str(tmp_path / "al.cut.onnx")).graph.output] == [
        "global_feat", "local_feat"
    ]  # fmt: skip


def test_sidecar_without_feature_facts_still_cuts(tmp_path):
    """A derived-facts ONNX (no sidecar) keeps outputs by name too."""
    model = export_tiny(tmp_path / "bare.onnx", sidecar=False)
    side = om_from_onnx(model, tmp_path / "m", soc="Ascend310P3", dry_run=True,
                        outputs=["feature"])  # fmt: skip
    assert side["conversion"]["outputs"] == ["feature"]
    assert [o["name"] for o in side["outputs"]] == ["feature"]
    assert len(side["conversion"]["out_nodes"]) == 1


class _FakeTrt:
    """A stand-in for the TensorRT 10 Python API recording what the builder is told."""

    __version__ = "10.9.0"

    class Logger:
        WARNING = 2

        def __init__(self, level):
            self.level = level

    class MemoryPoolType:
        WORKSPACE = "workspace"

    class BuilderFlag:
        FP16 = "FP16"
        OBEY_PRECISION_CONSTRAINTS = "OBEY_PRECISION_CONSTRAINTS"

    calls: ClassVar[dict] = {}

    class _Profile:
        def set_shape(self, name, lo, opt, hi):
            _FakeTrt.calls.setdefault("shapes", {})[name] = (lo, opt, hi)

    class _Config:
        def set_memory_pool_limit(self, pool, size):
            _FakeTrt.calls["workspace"] = size

        def set_flag(self, flag):
            _FakeTrt.calls.setdefault("flags", []).append(flag)

        def add_optimization_profile(self, profile):
            _FakeTrt.calls["profiles"] = _FakeTrt.calls.get("profiles", 0) + 1

        def create_timing_cache(self, data):
            return data

        def set_timing_cache(self, cache, ignore_mismatch):
            pass

    class OnnxParser:
        def __init__(self, network, logger):
            pass

        def parse_from_file(self, path):
            import onnx

            _FakeTrt.calls["parsed_outputs"] = [o.name for o in onnx.load(path).graph.output]
            return True

    class Builder:
        def __init__(self, logger):
            pass

        def create_network(self, flags):
            return object()

        def create_builder_config(self):
            return _FakeTrt._Config()

        def create_optimization_profile(self):
            return _FakeTrt._Profile()

        def build_serialized_network(self, network, config):
            return b"serialized engine"


def test_python_api_build_gets_every_input_opt_flags_and_the_cut_graph(tmp_path, monkeypatch):
    import sys

    from reidctl.artifacts import read_sidecar
    from reidctl.convert.trt import engine_from_onnx

    _FakeTrt.calls = {}
    monkeypatch.setitem(sys.modules, "tensorrt", _FakeTrt)
    model = export_camera_model(tmp_path / "cam.onnx")
    side = engine_from_onnx(
        model, tmp_path / "cam.engine", batch_sizes=[1, 2, 4, 8], opt_batch=2, fp16=True,
        builder_flags=["OBEY_PRECISION_CONSTRAINTS"], workspace_mib=64,
    )  # fmt: skip
    calls = _FakeTrt.calls
    assert calls["shapes"] == {
        "image": ([1, 3, H, W], [2, 3, H, W], [8, 3, H, W]),
        "camera": ([1], [2], [8]),
    }
    assert calls["flags"] == ["FP16", "OBEY_PRECISION_CONSTRAINTS"]
    assert calls["workspace"] == 64 << 20 and calls["profiles"] == 1
    assert (tmp_path / "cam.engine").read_bytes() == b"serialized engine"
    assert side["conversion"]["profile"] == {"min": 1, "opt": 2, "max": 8}
    assert read_sidecar(tmp_path / "cam.engine")["inputs"][1]["name"] == "camera"
    # --outputs: TensorRT parses the cut graph; the sidecar lists the kept outputs
    tiny = export_tiny(tmp_path / "tiny.onnx")
    side = engine_from_onnx(tiny, tmp_path / "t.engine", outputs=["feature"])
    assert calls["parsed_outputs"] == ["feature"]
    assert [o["name"] for o in side["outputs"]] == ["feature"]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_camera_facts_travel_to_engine_and_om_sidecars(tmp_path, monkeypatch):
    """infer over an engine or OM model needs the camera block (number of cameras, rule)."""
    import sys

    from reidctl.artifacts import read_sidecar
    from reidctl.convert.trt import engine_from_onnx

    _FakeTrt.calls = {}
    monkeypatch.setitem(sys.modules, "tensorrt", _FakeTrt)
    model = export_camera_model(tmp_path / "cam.onnx", sidecar=True)
    camera = read_sidecar(model)["camera"]
    assert camera["num_cameras"] == 6
    engine_from_onnx(model, tmp_path / "cam.engine", batch_sizes=[1, 8])
    engine = read_sidecar(tmp_path / "cam.engine")
    assert engine["camera"] == camera
    assert [(t["name"], t["dtype"]) for t in engine["inputs"]] == [
        ("image", "float32"),
        ("camera", "int64"),
    ]
    assert _FakeTrt.calls["shapes"]["camera"] == ([1], [8], [8])  # opt: the max
    om = om_from_onnx(model, tmp_path / "cam", soc="Ascend310P3", batch_sizes=[1, 8], dry_run=True)
    assert om["camera"] == camera and [t["name"] for t in om["inputs"]] == ["image", "camera"]
    assert f"--input_shape=image:-1,3,{H},{W};camera:-1" in om["conversion"]["argv"]
