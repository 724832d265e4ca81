"""Vendor dump directories as ais_bench, the Ascend ``benchmark`` tool and ``reidctl infer
--dump`` write them, evaluated to exactly the metrics of the result directory.

The layouts follow the tools' documentation: ais_bench puts ``{stem}_{k}.bin`` (k from 0)
in a sub-folder named ``YYYY_MM_DD-HH_MM_SS`` of ``--output`` with a ``sumary.json``
(older releases) or ``<folder>_summary.json`` beside it (newer ones); ``benchmark``
writes ``result/dumpOutput_device0/{stem}_{k}.bin`` (k from 1) and
``result/perf_vision_batchsize_1_device_0.txt``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from reidctl.artifacts import read_manifest, write_manifest
from reidctl.cli import main
from reidctl.errors import InputError, ShapeMismatchError
from reidctl.evaluate import evaluate_dump, evaluate_results
from reidctl.evaluate.dumps import find_dump_layout
from tests.runners.helpers import export_tiny, make_prep

STAMP = "2023_01_01-12_00_00"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny two-output model (``feature`` [8], ``local`` [2, 4]) run with ``--dump bin``
    over 40 tensors: 20 queries from camera 1, 20 gallery items from cameras 2 and 3."""
    pytest.importorskip("onnxruntime")
    from reidctl.artifacts.prep import ManifestEntry
    from reidctl.runners.infer import run_inference

    d = tmp_path_factory.mktemp("dumps")
    model = export_tiny(d / "tiny.onnx")
    prep, _ = make_prep(d / "prep", n=40)
    entries = []
    for e in read_manifest(prep):
        cam = 1 if e.split == "query" else 2 + e.index % 2
        entries.append(ManifestEntry(e.index, e.bin, e.source, e.index % 5 + 1, cam, e.split))
    write_manifest(prep / "manifest.jsonl", entries)
    results = d / "results"
    run_inference(model, prep, results, dump="bin", threads=1)
    return {"model": model, "prep": prep, "results": results, "entries": entries}


def _metrics(args: list[str], tmp: Path, capsys) -> tuple[dict, str]:
    out = tmp / f"m{len(list(tmp.glob('m*.json')))}.json"
    capsys.readouterr()
    assert main(["eval", *args, "--json", str(out)]) == 0
    m = json.loads(out.read_text())
    m.pop("settings")
    return m, capsys.readouterr().out


def _copy_dump(run, dest: Path, base: int) -> Path:
    """The run's dump renumbered from ``base`` into ``dest``."""
    dest.mkdir(parents=True)
    for e in run["entries"]:
        for k in (1, 2):
            shutil.copy(
                run["results"] / "dump" / f"{e.stem}_{k}.bin", dest / f"{e.stem}_{k - 1 + base}.bin"
            )
    return dest


def test_reidctl_dump_needs_no_dim(run, tmp_path, capsys):
    ref, _ = _metrics([str(run["results"])], tmp_path, capsys)
    dump = run["results"] / "dump"
    assert find_dump_layout(dump).tool == "reidctl" and find_dump_layout(dump).index_base == 1
    got, out = _metrics(
        [str(dump), "--prep", str(run["prep"]), "--output-index", "1"], tmp_path, capsys
    )
    assert got == ref  # every metric and the whole CMC curve, exactly
    assert "reidctl layout" in out and "outputs numbered from 1" in out
    # local distance from the dump: the stripe output by index and shape, or by sidecar
    ref_l, _ = _metrics(
        [str(run["results"]), "--local", "--local-feature", "local", "--local-weight", "1"],
        tmp_path,
        capsys,
    )
    args = [str(dump), "--prep", str(run["prep"]), "--local", "--local-weight", "1"]
    got_l, _ = _metrics(
        [*args, "--output-index", "1", "--local-index", "2", "--local-shape", "2x4"],
        tmp_path,
        capsys,
    )
    assert got_l == ref_l and got_l["mAP"] != ref["mAP"]
    got_m, out = _metrics(
        [*args, "--model", str(run["model"]), "--local-feature", "local"], tmp_path, capsys
    )
    assert got_m == ref_l
    assert "output 1: feature [8]  <- global feature" in out
    assert "output 2: local [2, 4]  <- local" in out


def test_model_sidecar_numbers_the_outputs(run, tmp_path, capsys):
    ref, _ = _metrics([str(run["results"])], tmp_path, capsys)
    dump = str(run["results"] / "dump")
    base = [dump, "--prep", str(run["prep"]), "--model", str(run["model"])]
    assert _metrics(base, tmp_path, capsys)[0] == ref  # the sidecar's retrieval feature
    assert _metrics([*base, "--output", "feature"], tmp_path, capsys)[0] == ref
    assert main(["eval", *base, "--output", "local"]) == 2  # [2, 4] is not a vector
    assert "not a vector" in capsys.readouterr().err
    assert main(["eval", *base, "--output", "logits"]) == 2
    assert "feature, local" in capsys.readouterr().err
    assert main(["eval", dump, "--prep", str(run["prep"]), "--output", "feature"]) == 2
    assert "needs --model" in capsys.readouterr().err
    assert main(["eval", dump, "--prep", str(run["prep"]), "--local", "--local-index", "2"]) == 2
    assert "--local-shape" in capsys.readouterr().err


@pytest.mark.parametrize("summary", ["inside", "beside"])
def test_ais_bench_layout(run, tmp_path, capsys, summary):
    ref, _ = _metrics([str(run["results"])], tmp_path, capsys)
    out_dir = tmp_path / "ais_out"
    dated = _copy_dump(run, out_dir / STAMP, base=0)
    perf = {"NPU_compute_time": {"mean": 1.2}, "H2D_latency": {"mean": 0.1}, "throughput": 800.0}
    target = dated / "sumary.json" if summary == "inside" else out_dir / f"{STAMP}_summary.json"
    target.write_text(json.dumps(perf))
    for path in (out_dir, dated):
        layout = find_dump_layout(path)
        assert (layout.tool, layout.root, layout.index_base) == ("ais_bench", dated, 0)
    args = [str(out_dir), "--prep", str(run["prep"])]
    got, out = _metrics([*args, "--output-index", "0"], tmp_path, capsys)
    assert got == ref and "ais_bench layout" in out
    got, out = _metrics([*args, "--model", str(run["model"])], tmp_path, capsys)
    assert got == ref and "output 0: feature [8]  <- global feature" in out
    # two runs in one --output folder: the user picks one
    (out_dir / "2023_01_02-08_00_00").mkdir()
    with pytest.raises(InputError, match="2 dated ais_bench output folders"):
        find_dump_layout(out_dir)
    assert main(["eval", *args, "--output-index", "0"]) == 2


def test_benchmark_layout(run, tmp_path, capsys):
    ref, _ = _metrics([str(run["results"])], tmp_path, capsys)
    result = tmp_path / "result"
    device = _copy_dump(run, result / "dumpOutput_device0", base=1)
    (result / "perf_vision_batchsize_1_device_0.txt").write_text(
        "ave_throughputRate: 800samples/s\n"
    )
    for path in (result, device):
        layout = find_dump_layout(path)
        assert (layout.tool, layout.root, layout.index_base) == ("benchmark", device, 1)
    got, out = _metrics(
        [str(result), "--prep", str(run["prep"]), "--output-index", "1"], tmp_path, capsys
    )
    assert got == ref and "benchmark layout" in out
    got, _ = _metrics(
        [str(device), "--prep", str(run["prep"]), "--model", str(run["model"])], tmp_path, capsys
    )
    assert got == ref


def test_file_sizes_must_agree(run, tmp_path, capsys):
    dump = _copy_dump(run, tmp_path / "dump", base=1)
    stem = run["entries"][7].stem
    bad = dump / f"{stem}_1.bin"
    bad.write_bytes(bad.read_bytes()[:-4])  # one value short
    args = [str(dump), "--prep", str(run["prep"]), "--output-index", "1"]
    assert main(["eval", *args]) == 2
    err = capsys.readouterr().err
    assert f"{stem}_1.bin holds 7 float32 values" in err and "Traceback" not in err
    with pytest.raises(ShapeMismatchError, match=f"{stem}_1.bin"):
        evaluate_dump(dump, run["prep"], 1)
    bad.write_bytes(b"\0" * 30)  # not a whole number of float32 values
    assert main(["eval", *args]) == 2
    assert f"{stem}_1.bin holds 30 bytes" in capsys.readouterr().err
    assert main(["eval", *args, "--dim", "16"]) == 2  # with the sizes agreeing, --dim still checks


def test_float16_dump(run, tmp_path, capsys):
    src = run["results"] / "dump"
    dump = tmp_path / "f16"
    dump.mkdir()
    for e in run["entries"]:
        for k in (1, 2):
            v = np.fromfile(src / f"{e.stem}_{k}.bin", "<f4").astype("<f2")
            v.tofile(dump / f"{e.stem}_{k}.bin")
    ref = evaluate_results(run["results"])
    m = evaluate_dump(dump, run["prep"], 1, dtype="float16")
    assert m.data.feat.shape == (40, 8)
    assert m.mAP == pytest.approx(ref.mAP, abs=0.02)
    # read as float32 the files would hold 4 values; the sidecar's shape catches that
    args = [str(dump), "--prep", str(run["prep"]), "--model", str(run["model"])]
    assert main(["eval", *args]) == 2
    assert "holds 4 float32 values, but output 1 has shape [8]" in capsys.readouterr().err
    assert main(["eval", *args, "--dump-dtype", "float16"]) == 0
