"""Every artefact reads back what this version writes, and refuses a format it cannot read."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from reidctl.artifacts import (
    ManifestEntry,
    Metrics,
    ModelSidecar,
    PrepSet,
    ResultDir,
    RunRecord,
    finalize_prep_set,
    sidecar_path,
    write_tensor,
)
from reidctl.cli import main
from reidctl.errors import FormatError
from reidctl.specs import ModelFacts, PreprocessSpec, TensorSpec

H, W = 8, 4


def _sidecar() -> ModelSidecar:
    facts = ModelFacts(
        model="tiny",
        preprocess=PreprocessSpec(height=H, width=W),
        inputs=(TensorSpec("image", ("batch", 3, H, W)),),
        outputs=(TensorSpec("feature", ("batch", 5)), TensorSpec("local", ("batch", 2, 3))),
        feature="feature",
        l2_normalize=True,
    )
    return ModelSidecar(facts, {"weights": None, "opset": 17, "static_batch": None})


def _prep(out: Path, n: int = 6) -> tuple[PrepSet, np.ndarray]:
    out.mkdir(parents=True, exist_ok=True)
    data = np.random.default_rng(0).standard_normal((n, 3, H, W)).astype("<f4")
    entries = []
    for i in range(n):
        split = "query" if i < n // 2 else "gallery"
        stem = f"{split}_{i + 1:04d}_c{1 + i % 2}s1_000000_00"
        e = ManifestEntry(
            i, f"{stem}.bin", f"{split}/{stem}.jpg", 1 + i % (n // 2), 1 + i % 2, split
        )
        write_tensor(out, e, data[i].tobytes())
        entries.append(e)
    meta = {
        "layout": "synthetic",
        "root": str(out),
        "splits": ["query", "gallery"],
        "preprocess": PreprocessSpec(height=H, width=W).to_dict(),
        "dtype": "float32",
        "shape": [3, H, W],
        "counts": {"query": n // 2, "gallery": n - n // 2},
    }
    return finalize_prep_set(out, entries, meta, ""), data


def _run(n: int) -> RunRecord:
    return RunRecord(
        backend="ort",
        device="cpu",
        options={"threads": 1},
        model_file="/m.onnx",
        model_sha256="0" * 64,
        prep_dir="/prep",
        batch_size=2,
        num_images=n,
        wall_s=0.5,
        setup_s=0.1,
        latencies_s=[0.1, 0.2],
        outputs=["feature", "local"],
        feature="feature",
    )


def _results(tmp_path: Path) -> tuple[ResultDir, dict[str, np.ndarray]]:
    prep, _ = _prep(tmp_path / "prep")
    rng = np.random.default_rng(1)
    outputs = {
        "feature": rng.standard_normal((len(prep), 5)).astype(np.float32),
        "local": rng.standard_normal((len(prep), 2, 3)).astype(np.float32),
    }
    rd = ResultDir.write(tmp_path / "res", prep.entries, outputs, _sidecar(), _run(len(prep)))
    return rd, outputs


# --------------------------------------------------------------------------- round trips


def test_model_sidecar_round_trip(tmp_path: Path) -> None:
    side = _sidecar()
    path = side.save(tmp_path / "m.onnx")
    assert path == tmp_path / "m.onnx.json"
    assert ModelSidecar.load(tmp_path / "m.onnx") == side
    on_disk = json.loads(path.read_text())
    assert on_disk["format"] == "reidctl.model/1" and on_disk["tool"]["name"] == "reidctl"
    assert ModelSidecar.from_dict(on_disk) == side
    assert side.with_feature("local").feature == "local"
    assert side.with_batch_dim(8).inputs[0].shape == (8, 3, H, W)


def test_prep_set_round_trip(tmp_path: Path) -> None:
    written, data = _prep(tmp_path / "prep")
    read = PrepSet.open(tmp_path / "prep")
    assert read == written
    assert read.meta["format"] == "reidctl.prep/1"
    assert read.shape == (3, H, W) and read.dtype == np.float32
    np.testing.assert_array_equal(read.read_batch([4, 0, 4]), data[[4, 0, 4]])


def test_result_dir_round_trip(tmp_path: Path) -> None:
    written, outputs = _results(tmp_path)
    read = ResultDir.open(tmp_path / "res")
    assert read == written
    assert read.run == _run(len(read.manifest)).to_dict()
    assert read.run["format"] == "reidctl.results/1"
    assert read.model == _sidecar()
    for name, arr in outputs.items():
        np.testing.assert_array_equal(read.features(name), arr)
    np.testing.assert_array_equal(read.features(), outputs["feature"])  # model.json's feature


def test_metrics_round_trip(tmp_path: Path) -> None:
    m = Metrics(0.5, 0.75, 1.0, 0.6, 0.4, [0.5, 0.75, 1.0], 4, 4, 10, {"distance": "cosine"})
    m.save(tmp_path / "metrics.json")
    assert Metrics.load(tmp_path / "metrics.json") == m
    assert json.loads((tmp_path / "metrics.json").read_text())["format"] == "reidctl.metrics/1"


# --------------------------------------------------------------------------- format tags

BAD_TAGS = {
    "missing": (None, "has no format tag"),
    "unknown": ("someone.else/1", "not 'reidctl."),
    "newer": ("NEWER", "newer than this reidctl reads"),
}


def _retag(path: Path, tag: str | None, kind: str) -> None:
    d = json.loads(path.read_text())
    d.pop("format", None)
    if tag is not None:
        d["format"] = f"{kind}/2" if tag == "NEWER" else tag
    path.write_text(json.dumps(d))


@pytest.mark.parametrize("case", sorted(BAD_TAGS))
def test_bad_tags_are_refused_with_file_and_fix(tmp_path: Path, case: str) -> None:
    tag, why = BAD_TAGS[case]
    rd, _ = _results(tmp_path)
    side = _sidecar().save(tmp_path / "m.onnx")
    Metrics(1.0, 1.0, 1.0, 1.0, 1.0, [1.0], 1, 1, 1).save(tmp_path / "metrics.json")
    checks = [
        (side, "reidctl.model", lambda: ModelSidecar.load(tmp_path / "m.onnx"), "reidctl export"),
        (
            tmp_path / "prep" / "meta.json",
            "reidctl.prep",
            lambda: PrepSet.open(tmp_path / "prep"),
            "reidctl preprocess",
        ),
        (rd.path / "run.json", "reidctl.results", lambda: ResultDir.open(rd.path), "reidctl infer"),
        (
            rd.path / "model.json",
            "reidctl.model",
            lambda: ResultDir.open(rd.path),
            "reidctl export",
        ),
        (
            tmp_path / "metrics.json",
            "reidctl.metrics",
            lambda: Metrics.load(tmp_path / "metrics.json"),
            "reidctl eval",
        ),
    ]
    for path, kind, read, fix in checks:
        original = path.read_text()
        _retag(path, tag, kind)
        with pytest.raises(FormatError) as err:
            read()
        msg = str(err.value)
        assert str(path) in msg and why in msg and fix in msg, msg
        assert err.value.exit_code == 2
        path.write_text(original)
        read()  # the untouched file reads again


@pytest.mark.parametrize("case", sorted(BAD_TAGS))
def test_cli_refuses_bad_tags_with_exit_2(tmp_path: Path, capsys, case: str) -> None:
    tag, why = BAD_TAGS[case]
    rd, _ = _results(tmp_path)
    model = tmp_path / "m.onnx"
    model.write_bytes(b"not read: the artefacts are checked first")
    side = _sidecar().save(model)
    infer = ["infer", str(model), str(tmp_path / "prep"), "-o", str(tmp_path / "o")]
    for path, kind, argv in (
        (tmp_path / "prep" / "meta.json", "reidctl.prep", infer),
        (side, "reidctl.model", infer),
        (rd.path / "run.json", "reidctl.results", ["eval", str(rd.path)]),
        (rd.path / "model.json", "reidctl.model", ["eval", str(rd.path)]),
    ):
        original = path.read_text()
        _retag(path, tag, kind)
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert str(path) in err and why in err and "Traceback" not in err, err
        path.write_text(original)
    assert not (tmp_path / "o").exists()


def test_bench_refuses_a_malformed_sidecar(tmp_path: Path, capsys) -> None:
    model = tmp_path / "m.onnx"
    model.write_bytes(b"never loaded")
    sidecar_path(model).write_text("{not json")
    assert main(["bench", str(model), "--iters", "1", "--bs", "1"]) == 2
    assert f"{sidecar_path(model)} is not valid JSON" in capsys.readouterr().err
    sidecar_path(model).write_text(json.dumps({"format": "reidctl.model/1", "model": "x"}))
    assert main(["bench", str(model), "--iters", "1", "--bs", "1"]) == 2
    assert "lacks the field" in capsys.readouterr().err


def test_result_write_removes_stale_partials_of_this_output_only(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        old = time.time() - 3600

        def leftover(name: str, age: float | None = None) -> Path:
            p = tmp_path / name
            (p / "features").mkdir(parents=True)
            (p / "features" / "feature.npy").write_bytes(b"half written")
            if age is not None:
                os.utime(p, (age, age))
            return p

        stale = [
            leftover(f".res.{dead.pid}.k3j2h1.partial"),  # owner killed while writing
            leftover(f".res.{dead.pid}.a1b2c3.old"),
            leftover(".res.zz9x8w.partial", age=old),  # no pid: older than this run
        ]
        kept = [
            leftover(f".res.{live.pid}.q1w2e3.partial"),  # another run, still writing
            leftover(f".other.{dead.pid}.r4t5y6.partial"),  # another output
            leftover(f".res.v2.{dead.pid}.u7i8o9.partial"),  # an output named res.v2
        ]
        _results(tmp_path)
        assert (tmp_path / "res" / "run.json").is_file()
        for p in stale:
            assert not p.exists(), p
        for p in kept:
            assert p.is_dir(), p
        hidden = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".res."))
        assert hidden == sorted(p.name for p in kept if p.name.startswith(".res."))
    finally:
        live.kill()
        live.wait()
