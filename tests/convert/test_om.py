"""ATC command building from a real exported ONNX; running a stand-in `atc`."""

from __future__ import annotations

import json
import os
import stat

import onnx
import pytest

from reidctl.cli import main
from reidctl.convert.om import atc_command, om_from_onnx, out_nodes_from_onnx
from reidctl.errors import BackendUnavailableError, BadDataError, InputError
from tests.runners.helpers import export_tiny


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("om")
    return export_tiny(d / "tiny.onnx"), export_tiny(d / "static.onnx", static_batch=4)


def test_out_nodes_name_the_producers_of_the_graph_outputs(tiny):
    graph = onnx.load(str(tiny[0])).graph
    nodes = out_nodes_from_onnx(tiny[0])
    assert len(nodes) == 2
    for spec, out in zip(nodes, graph.output, strict=True):
        name, index = spec.rsplit(":", 1)
        producer = next(n for n in graph.node if n.name == name)
        assert producer.output[int(index)] == out.name  # "feature", then "local"


def test_atc_command_dynamic_and_static(tiny):
    nodes = out_nodes_from_onnx(tiny[0])
    argv = atc_command(
        tiny[0],
        "out/m",
        soc="Ascend310P3",
        input_name="image",
        chw=(3, 16, 8),
        batch_sizes=[32, 1, 8],
        out_nodes=nodes,
    )
    assert argv[:2] == ["atc", "--framework=5"]
    assert f"--model={tiny[0]}" in argv and "--output=out/m" in argv
    assert "--soc_version=Ascend310P3" in argv and "--input_format=NCHW" in argv
    assert "--input_shape=image:-1,3,16,8" in argv
    assert "--dynamic_batch_size=1,8,32" in argv
    assert argv[-1] == "--out_nodes=" + ";".join(nodes)
    static = atc_command(
        tiny[0],
        "m",
        soc="Ascend310P3",
        input_name="image",
        chw=(3, 16, 8),
        batch_sizes=[16],
        out_nodes=nodes,
        static=True,
    )
    assert "--input_shape=image:16,3,16,8" in static
    assert not any(a.startswith("--dynamic_batch_size") for a in static)
    with pytest.raises(InputError, match="one batch size"):
        atc_command(
            tiny[0],
            "m",
            soc="x",
            input_name="image",
            chw=(3, 16, 8),
            batch_sizes=[1, 4],
            out_nodes=nodes,
            static=True,
        )


def test_dry_run_prints_and_writes_nothing(tiny, tmp_path, capsys):
    out = tmp_path / "m"
    assert (
        main(["convert", "om", str(tiny[0]), "-o", str(out), "--soc", "Ascend310P3", "--dry-run"])
        == 0
    )
    line = capsys.readouterr().out.strip()
    assert line.startswith("atc --framework=5") and "--dynamic_batch_size=1,4,8,16,32" in line
    assert not list(tmp_path.iterdir())


def test_static_onnx_needs_static_flag(tiny, tmp_path):
    with pytest.raises(InputError, match="--static --bs 4"):
        om_from_onnx(tiny[1], tmp_path / "m", soc="Ascend310P3", dry_run=True)
    side = om_from_onnx(
        tiny[1], tmp_path / "m", soc="Ascend310P3", batch_sizes=[4], static=True, dry_run=True
    )
    assert side["static_batch"] == 4 and side["inputs"][0]["shape"][0] == 4


def test_without_atc_the_hint_is_given(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(BackendUnavailableError, match="CANN toolkit"):
        om_from_onnx(tiny[0], tmp_path / "m", soc="Ascend310P3")


FAKE_ATC = """#!/bin/sh
# stand-in for CANN's atc: records its argv, writes <output>.om unless told to fail
printf '%s\\n' "$@" > "{log}"
[ -n "$FAIL_ATC" ] && {{ echo "E10001: invalid soc" >&2; exit 3; }}
for a in "$@"; do case "$a" in --output=*) out="${{a#--output=}}";; esac; done
printf 'OM' > "$out.om"
"""


@pytest.fixture
def fake_atc(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "atc.argv"
    atc = bin_dir / "atc"
    atc.write_text(FAKE_ATC.format(log=log))
    atc.chmod(atc.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return log


def test_runs_atc_with_an_argv_list_and_writes_the_sidecar(tiny, tmp_path, fake_atc):
    out = tmp_path / "models" / "osnet.om"
    side = om_from_onnx(tiny[0], out, soc="Ascend310P3", batch_sizes=[1, 4])
    assert out.read_bytes() == b"OM"
    argv = fake_atc.read_text().splitlines()
    assert "--input_shape=image:-1,3,16,8" in argv and "--dynamic_batch_size=1,4" in argv
    written = json.loads((tmp_path / "models/osnet.om.json").read_text())
    assert written["conversion"]["kind"] == "atc" and written["feature"] == "feature"
    assert written["preprocess"]["height"] == 16 and written["source"]["sha256"]
    assert written["model_file"] == "osnet.om" and written["model_sha256"] == side["model_sha256"]
    assert sorted(p.name for p in out.parent.iterdir()) == ["osnet.om", "osnet.om.json"]


def test_atc_failure_is_reported_and_leaves_nothing(tiny, tmp_path, fake_atc, monkeypatch):
    monkeypatch.setenv("FAIL_ATC", "1")
    with pytest.raises(BadDataError, match="E10001"):
        om_from_onnx(tiny[0], tmp_path / "m", soc="Ascend310P3")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["atc.argv", "bin"]
