"""The bench engine: statistics, scheduling, inputs, tables and output files."""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping

import numpy as np
import pytest

from reidctl import bench as engine
from reidctl.artifacts import ManifestEntry, write_manifest
from reidctl.errors import FormatError, InputError
from reidctl.io import write_json_atomic
from reidctl.runners.base import Runner
from reidctl.specs import TensorSpec
from tests.conftest import require


class FakeRunner(Runner):
    """A back end whose call time is ``cost_s * batch`` (reported, not slept)."""

    name = "fake"
    accepted_options = ("threads",)

    def __init__(self, model_file: str, cost_s: float = 1e-3, batch: int | str = "batch", **o):
        super().__init__(model_file, **o)
        self.cost_s, self.batch, self.seen = cost_s, batch, []

    def activate_impl(self) -> None:
        pass

    def input_specs_impl(self) -> tuple[TensorSpec, ...]:
        return (TensorSpec("image", (self.batch, 3, 8, 4), "float32"),)

    def infer_impl(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = feeds["image"]
        self.seen.append(x.copy())
        return {"feature": x.reshape(len(x), -1)[:, :2]}

    def infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = super().infer(feeds)
        self.last_latency_s = self.cost_s * len(feeds["image"])
        return out


def test_latency_stats_figures() -> None:
    s = engine.LatencyStats.from_latencies(8, [0.010, 0.020, 0.030, 0.040])
    assert s.iterations == 4
    assert s.images_per_s == pytest.approx(8 * 4 / 0.1)
    assert s.p50_ms == pytest.approx(25.0)
    assert s.p90_ms == pytest.approx(37.0)
    assert s.p99_ms == pytest.approx(39.7)
    assert s.min_ms == pytest.approx(10.0) and s.mean_ms == pytest.approx(25.0)
    with pytest.raises(InputError):
        engine.LatencyStats.from_latencies(1, [])


@pytest.mark.parametrize(
    ("text", "expected"), [("1,4,8", (1, 4, 8)), (" 8, 1 ,8", (8, 1)), ("32", (32,))]
)
def test_parse_int_list(text: str, expected: tuple[int, ...]) -> None:
    assert engine.parse_int_list(text) == expected


@pytest.mark.parametrize("text", ["", "1,x", "0,4", "-1"])
def test_parse_int_list_rejects(text: str) -> None:
    with pytest.raises(InputError, match="positive integers"):
        engine.parse_int_list(text)


def test_settings_need_a_bound() -> None:
    with pytest.raises(InputError, match="--seconds"):
        engine.BenchSettings(seconds=None, iters=None)
    with pytest.raises(InputError, match="--threads"):
        engine.BenchSettings(threads=0)


def test_interleaved_order_alternates_who_goes_first() -> None:
    assert engine.interleaved_order(2, 4) == [0, 1, 1, 0, 0, 1, 1, 0]
    assert engine.interleaved_order(1, 3) == [0, 0, 0]


def test_measure_interleaves_and_counts_iters() -> None:
    log: list[str] = []

    def call(tag: str, dt: float):
        def f() -> float:
            log.append(tag)
            return dt

        return f

    settings = engine.BenchSettings(iters=2, warmup=2, repeat=3)
    lat = engine.measure([call("a", 0.01), call("b", 0.02)], settings)
    assert lat == [[[0.01] * 2] * 3, [[0.02] * 2] * 3]
    # each turn: warm-up (2 calls in the first repeat, 1 later), then 2 timed calls;
    # the order flips every repeat: a b | b a | a b
    assert "".join(log) == "aaaabbbb" + "bbbaaa" + "aaabbb"


def test_measure_by_seconds_spends_the_budget() -> None:
    settings = engine.BenchSettings(seconds=0.3, warmup=0, repeat=3)
    (lat,) = engine.measure([lambda: 0.01], settings)
    assert len(lat) == 3
    for turn in lat:  # a third of the budget in each repeat
        assert sum(turn) == pytest.approx(0.1, abs=0.011)
    (slow,) = engine.measure([lambda: 1.0], settings)
    assert [len(t) for t in slow] == [1, 1, 1]  # one call per repeat even over budget


def test_synthetic_feeds_are_seeded_and_shaped() -> None:
    specs = (TensorSpec("image", ("batch", 3, 8, 4), "float32"),)
    a, skip = engine.synthetic_feeds(specs, 4, seed=1)
    b, _ = engine.synthetic_feeds(specs, 4, seed=1)
    c, _ = engine.synthetic_feeds(specs, 4, seed=2)
    assert skip is None and a["image"].shape == (4, 3, 8, 4) and a["image"].dtype == np.float32
    assert np.array_equal(a["image"], b["image"]) and not np.array_equal(a["image"], c["image"])
    u8, _ = engine.synthetic_feeds((TensorSpec("image", ("batch", 3, 8, 4), "uint8"),), 2)
    assert u8["image"].dtype == np.uint8 and u8["image"].max() > 100


def test_camera_input_gets_valid_indices_from_the_sidecar() -> None:
    from reidctl.artifacts import ModelSidecar
    from reidctl.specs import PreprocessSpec

    specs = (TensorSpec("image", ("batch", 3, 8, 4)), TensorSpec("camera", ("batch",), "int64"))
    side = ModelSidecar.from_dict(
        {
            "model": "m",
            "preprocess": PreprocessSpec(height=8, width=4).to_dict(),
            "inputs": [s.to_dict() for s in specs],
            "outputs": [{"name": "feature", "shape": ["batch", 4], "dtype": "float32"}],
            "feature": "feature",
            "l2_normalize": True,
            "camera": {"input": "camera", "num_cameras": 3, "index": "camid - first_camera"},
        }
    )
    bounds = engine.index_bounds(side)
    assert bounds == {"camera": 3}
    feeds, _ = engine.synthetic_feeds(specs, 64, seed=0, index_bounds=bounds)
    cam = feeds["camera"]
    assert cam.dtype == np.int64 and cam.shape == (64,)
    assert set(cam.tolist()) == {0, 1, 2}  # every camera, none out of range
    # without camera facts an integer input keeps the 0..255 fill
    assert engine.index_bounds(side.with_fields(drop=("camera",))) == {}
    assert engine.index_bounds(None) == {}


def test_static_batch_is_skipped_and_dynamic_axes_come_from_sidecar() -> None:
    feeds, skip = engine.synthetic_feeds((TensorSpec("image", (8, 3, 8, 4)),), 4)
    assert feeds is None and skip == "static batch 8"
    dyn = (TensorSpec("image", ("batch", 3, "h", "w")),)
    side = (TensorSpec("image", ("batch", 3, 16, 8)),)
    feeds, _ = engine.synthetic_feeds(dyn, 2, sidecar_inputs=side)
    assert feeds["image"].shape == (2, 3, 16, 8)
    with pytest.raises(InputError, match="dynamic axis"):
        engine.synthetic_feeds(dyn, 2)


def _make_prep(root, n: int = 3, shape=(3, 8, 4)):
    entries = []
    for i in range(n):
        name = f"query_{i:04d}_c1s1_000000_00.bin"
        np.full(shape, i, dtype=np.float32).tofile(root / name)
        entries.append(ManifestEntry(i, name, f"query/{name[6:-4]}.jpg", i + 1, 1, "query"))
    write_manifest(root / "manifest.jsonl", entries)
    write_json_atomic(
        root / "meta.json", {"format": "reidctl.prep/1", "dtype": "float32", "shape": list(shape)}
    )
    return root


def test_load_prep_tensors_cycles_in_manifest_order(tmp_path) -> None:
    prep = _make_prep(tmp_path)
    x = engine.load_prep_tensors(prep, 5)
    assert x.shape == (5, 3, 8, 4)
    assert [float(v[0, 0, 0]) for v in x] == [0, 1, 2, 0, 1]
    (prep / "query_0001_c1s1_000000_00.bin").write_bytes(b"\0" * 7)
    with pytest.raises(FormatError, match="holds 7 bytes"):
        engine.load_prep_tensors(prep, 2)


def _fake_result(tmp_path, costs=(1e-3,), backends=("fake",), data=None):
    files = []
    for i, _ in enumerate(costs):
        f = tmp_path / f"m{i}" / "model.onnx"
        f.parent.mkdir()
        f.write_bytes(b"onnx%d" % i)
        files.append(f)
    cost_of = {str(f): c for f, c in zip(files, costs, strict=True)}
    runners: list[FakeRunner] = []

    def factory(backend, model_file, options):
        runners.append(FakeRunner(model_file, cost_s=cost_of[model_file], **options))
        return runners[-1]

    settings = engine.BenchSettings(batch_sizes=(1, 4), iters=4, warmup=1, threads=2, data=data)
    lines: list[str] = []
    result = engine.run_bench(
        files, backends, settings, runner_factory=factory, progress=lines.append
    )
    return result, runners, lines


def test_run_bench_single_model(tmp_path) -> None:
    result, runners, lines = _fake_result(tmp_path, costs=(1e-3,))
    assert runners[0].options == {"threads": 2} and not runners[0].is_active
    assert result.throughput("model.onnx", "fake", 4) == pytest.approx(1000.0)
    assert len(lines) == 2 * 3 and "img/s" in lines[0]  # a line per cell and repeat
    table = engine.format_table(result)
    assert table.splitlines()[0].split() == ["|", "batch", "|", "fake", "|"]
    assert "1000.0 (0%)" in table and "*" not in table
    assert result.to_dict()["models"]["model.onnx"]["sha256"]


def test_run_bench_vs_gives_ratios(tmp_path) -> None:
    result, _, _ = _fake_result(tmp_path, costs=(1e-3, 4e-3))
    assert list(result.models) == ["m0/model.onnx", "m1/model.onnx"]
    assert result.ratios("fake") == {1: pytest.approx(4.0), 4: pytest.approx(4.0)}
    assert "4.00x" in engine.format_table(result)
    assert result.to_dict()["ratios"]["fake"]["4"] == pytest.approx(4.0)


def test_run_bench_with_real_data(tmp_path) -> None:
    (tmp_path / "prep").mkdir()
    prep = _make_prep(tmp_path / "prep")
    _, runners, _ = _fake_result(tmp_path, data=str(prep))
    batch4 = runners[0].seen[-1]
    assert batch4.shape == (4, 3, 8, 4)
    assert [float(v[0, 0, 0]) for v in batch4] == [0, 1, 2, 0]


def test_run_bench_missing_model(tmp_path) -> None:
    with pytest.raises(InputError, match="not found"):
        engine.run_bench([tmp_path / "nope.onnx"], ["ort"], engine.BenchSettings())


def test_write_outputs(tmp_path) -> None:
    result, _, _ = _fake_result(tmp_path, costs=(1e-3, 2e-3))
    paths = engine.write_outputs(result, tmp_path / "out")
    rows = list(csv.DictReader(paths["csv"].open()))
    assert len(rows) == 4 and {r["batch_size"] for r in rows} == {"1", "4"}
    assert float(rows[0]["images_per_s"]) == pytest.approx(1000.0)
    doc = json.loads(paths["json"].read_text())
    assert doc["format"] == "reidctl.bench/2"
    assert doc["machine"]["cpu"] and doc["machine"]["usable_cores"] >= 1
    assert "numpy" in doc["machine"]["versions"]
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    first = paths["png"].read_bytes()
    engine.plot_throughput(result, paths["png"])
    assert paths["png"].read_bytes() == first  # no timestamps in the PNG


def test_machine_info_names_the_cpu() -> None:
    info = engine.machine_info()
    assert isinstance(info["cpu"], str) and info["cpu"]
    assert isinstance(info["gpus"], list)


def test_default_model_file_uses_the_cache(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("REIDCTL_CACHE", str(tmp_path))
    assert engine.cache_dir() == tmp_path
    cached = tmp_path / "aligned_reid" / "model.onnx"
    cached.parent.mkdir()
    cached.write_bytes(b"x")
    (tmp_path / "aligned_reid" / "model.onnx.json").write_text("{}")
    assert engine.default_model_file() == (cached, False)


def test_model_labels_are_distinct() -> None:
    assert engine.model_labels(["a/m.onnx", "b/m.onnx"]) == ["a/m.onnx", "b/m.onnx"]
    assert engine.model_labels(["x/a.onnx", "x/b.onnx"]) == ["a.onnx", "b.onnx"]
    same = engine.model_labels(["m.onnx", "m.onnx"])
    assert len(set(same)) == 2


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    """A 3x16x8 -> 4 conv net exported with a dynamic batch (no sidecar needed)."""
    torch = require("torch")
    path = tmp_path_factory.mktemp("bench") / "tiny.onnx"
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()
    ).eval()
    torch.onnx.export(
        net,
        torch.randn(2, 3, 16, 8),
        str(path),
        input_names=["image"],
        output_names=["feature"],
        dynamic_axes={"image": {0: "batch"}, "feature": {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )
    return path


def test_cli_bench_with_vs_and_out(tiny_onnx, tmp_path, capsys) -> None:
    from reidctl.cli import main

    other = tmp_path / "other.onnx"
    other.write_bytes(tiny_onnx.read_bytes())
    rc = main(
        [
            "bench", str(tiny_onnx), "--bs", "1,2", "--iters", "3", "--warmup", "1",
            "--threads", "1", "--vs", str(other), "--out", str(tmp_path / "out"),
        ]
    )  # fmt: skip
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    header = next(ln for ln in captured.out.splitlines() if ln.startswith("| batch"))
    assert [c.strip() for c in header.strip("|").split("|")] == [
        "batch", "ort tiny.onnx", "ort other.onnx", "ort ratio"
    ]  # fmt: skip
    doc = json.loads((tmp_path / "out" / "bench.json").read_text())
    assert doc["settings"]["threads"] == 1
    assert {r["batch_size"] for r in doc["results"]} == {1, 2}
    assert all(r["iterations"] == 3 * 3 and r["repeats"] == 3 for r in doc["results"])
    assert set(doc["ratios"]["ort"]) == {"1", "2"}


def test_cli_bench_unknown_backend(tiny_onnx, capsys) -> None:
    from reidctl.cli import main

    assert main(["bench", str(tiny_onnx), "--backend", "nope", "--iters", "1"]) == 2
    assert "valid back ends" in capsys.readouterr().err


def test_cli_bench_refuses_an_option_no_selected_backend_takes(tiny_onnx, capsys) -> None:
    from reidctl.cli import main

    args = ["bench", str(tiny_onnx), "--iters", "1", "--warmup", "0", "--bs", "1"]
    assert main([*args, "--backend", "torch", "--threads", "1"]) == 2
    err = capsys.readouterr().err
    assert "threads apply to none of the back ends 'torch'" in err and "Traceback" not in err
    # one back end that takes it is enough; the others run with their own settings
    assert main([*args, "--backend", "ort", "--threads", "1"]) == 0


@pytest.mark.openvino
def test_openvino_and_ort_both_measured(tiny_onnx) -> None:
    pytest.importorskip("openvino")
    settings = engine.BenchSettings(batch_sizes=(4,), iters=2, warmup=1, threads=1)
    result = engine.run_bench([tiny_onnx], ["ort", "openvino"], settings)
    assert result.throughput("tiny.onnx", "ort", 4) > 0
    assert result.throughput("tiny.onnx", "openvino", 4) > 0


def test_cli_bench_out_refuses_earlier_files_before_measuring(tiny_onnx, tmp_path, capsys) -> None:
    from reidctl.cli import main

    out = tmp_path / "out"
    out.mkdir()
    (out / "bench.json").write_text("an earlier run")
    args = [
        "bench",
        str(tiny_onnx),
        "--bs",
        "1",
        "--iters",
        "1",
        "--warmup",
        "0",
        "--out",
        str(out),
    ]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"{out / 'bench.json'} exists; pass --force" in err and "Traceback" not in err
    assert "repeat 1/" not in err  # refused before measuring
    assert (out / "bench.json").read_text() == "an earlier run"
    assert main([*args, "--force"]) == 0
    assert json.loads((out / "bench.json").read_text())["format"] == "reidctl.bench/2"


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--warmup", "-1"], "--warmup must be an integer >= 0, got -1"),
        (["--repeat", "0"], "--repeat must be an integer >= 1"),
        (["--iters", "0"], "--iters must be an integer >= 1"),
        (["--seconds", "0"], "--seconds must be a number > 0"),
        (["--bs", "0"], "'--bs': the value must be comma-separated positive integers"),
    ],
)
def test_cli_bench_messages_name_the_option_and_its_range(tiny_onnx, capsys, option, message):
    from reidctl.cli import main

    assert main(["bench", str(tiny_onnx), *option]) == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert "min_iters" not in err and "rounds" not in err and "Traceback" not in err


def test_bench_stability_compares_two_runs(tiny_onnx, capsys) -> None:
    from reidctl.benchmarks import bench_stability

    argv = ["--model-file", str(tiny_onnx), "--backend", "ort", "--bs", "1,2", "--threads", "1"]
    assert bench_stability.main([*argv, "--seconds", "0.06", "--warmup", "1"]) == 0
    out = capsys.readouterr().out
    assert out.count("load average") >= 2 and "run 2 vs run 1" in out
    rows = [ln for ln in out.splitlines() if ln.startswith("| ort |")]
    assert [ln.split("|")[2].strip() for ln in rows] == ["1", "2"]
    assert "goal:" in out


def test_bench_stability_compare_runs(tmp_path) -> None:
    from reidctl.benchmarks.bench_stability import compare_runs

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a, _, _ = _fake_result(tmp_path / "a", costs=(1e-3,))
    b, _, _ = _fake_result(tmp_path / "b", costs=(1.25e-3,))
    rows = compare_runs([a, b])
    assert [r["batch_size"] for r in rows] == [1, 4]
    assert all(r["diff"] == pytest.approx(1 / 1.25 - 1) and not r["flagged"] for r in rows)
