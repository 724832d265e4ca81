"""Repeats: interleaving, per-repeat statistics, the spread flag, the load warning, the
output fields, the plot, and the command's refusals."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterator, Mapping

import numpy as np
import pytest

from reidctl import bench as engine
from reidctl.errors import InputError, OutputExistsError
from reidctl.runners.base import Runner
from reidctl.specs import TensorSpec

LOG: list[tuple[str, str, int]] = []  # (backend, model file, batch) of every call, in order


class ScriptedRunner(Runner):
    """A back end whose call times come from a script (seconds, in call order; warm-up calls
    included), reported, not slept; every call is logged in :data:`LOG`."""

    name = "scripted"
    accepted_options = ("threads",)

    def __init__(self, model_file: str, script: Iterator[float], backend: str = "x", **o):
        super().__init__(model_file, **o)
        self.script, self.backend = script, backend

    def activate_impl(self) -> None:
        pass

    def input_specs_impl(self) -> tuple[TensorSpec, ...]:
        return (TensorSpec("image", ("batch", 3, 4, 2), "float32"),)

    def infer_impl(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = feeds["image"]
        return {"feature": x.reshape(len(x), -1)[:, :2]}

    def infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = super().infer(feeds)
        LOG.append(
            (self.backend, os.path.basename(os.path.dirname(self.model_file)), len(out["feature"]))
        )
        self.last_latency_s = next(self.script)
        return out


def _models(tmp_path, n: int = 1):
    files = []
    for i in range(n):
        f = tmp_path / f"m{i}" / "model.onnx"
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(b"onnx%d" % i)
        files.append(f)
    return files


def _run(files, backends, settings, script=None, **kw):
    """run_bench with scripted runners; ``script(backend, model_dir)`` -> iterator."""
    LOG.clear()

    def factory(backend, model_file, options):
        it = script(backend, model_file) if script else iter(lambda: 1e-3, None)
        return ScriptedRunner(model_file, it, backend=backend, **options)

    return engine.run_bench(files, backends, settings, runner_factory=factory, **kw)


# ----------------------------------------------------------------------------- order


def test_interleaved_order_reverses_every_other_repeat() -> None:
    assert engine.interleaved_order(3, 3) == [0, 1, 2, 2, 1, 0, 0, 1, 2]
    assert engine.interleaved_order(2, 4) == [0, 1, 1, 0, 0, 1, 1, 0]
    assert engine.interleaved_order(1, 3) == [0, 0, 0]


def test_cells_are_interleaved_across_models_backends_and_batch_sizes(tmp_path) -> None:
    files = _models(tmp_path, 2)
    settings = engine.BenchSettings(batch_sizes=(1, 2), iters=1, warmup=0, repeat=3)
    result = _run(files, ["b1", "b2"], settings)
    turns = [(b, m, bs) for b, m, bs in LOG]
    cells = [(b, m, bs) for b in ("b1", "b2") for bs in (1, 2) for m in ("m0", "m1")]
    # models adjacent within a back end and batch size; the order flips every repeat
    assert turns == cells + cells[::-1] + cells
    assert len(result.records) == 8
    assert all(r.stats.repeats == 3 and r.stats.iterations == 3 for r in result.records)


def test_every_repeat_follows_its_own_settle_call(tmp_path) -> None:
    (f,) = _models(tmp_path)
    settings = engine.BenchSettings(batch_sizes=(1, 2), iters=2, warmup=3, repeat=2)
    _run([f], ["b"], settings)
    sizes = [bs for _, _, bs in LOG]
    # first repeat: 3 warm-up + 2 timed per cell; second (reversed): 1 untimed + 2 timed
    assert sizes == [1] * 5 + [2] * 5 + [2] * 3 + [1] * 3


# ----------------------------------------------------------------------------- figures


def test_median_min_max_and_percentiles_match_numpy(tmp_path) -> None:
    (f,) = _models(tmp_path)
    bs, iters, warmup = 4, 3, 2
    rng = np.random.default_rng(7)
    timed = rng.uniform(0.005, 0.05, size=(4, iters))  # 4 repeats x 3 calls
    script: list[float] = []
    for r, row in enumerate(timed):
        script += [9.0] * (warmup if r == 0 else 1)  # warm-up calls: huge, must not count
        script += row.tolist()
    settings = engine.BenchSettings(batch_sizes=(bs,), iters=iters, warmup=warmup, repeat=4)
    result = _run([f], ["b"], settings, script=lambda b, m: iter(script))
    s = result.stats("model.onnx", "b", bs)
    rates = bs * iters / timed.sum(axis=1)
    assert s.images_per_s_per_repeat == pytest.approx(tuple(rates))
    assert s.images_per_s == pytest.approx(np.median(rates))
    assert s.images_per_s_min == pytest.approx(rates.min())
    assert s.images_per_s_max == pytest.approx(rates.max())
    assert s.spread == pytest.approx((rates.max() - rates.min()) / np.median(rates))
    flat = timed.ravel()
    assert [s.p50_ms, s.p90_ms, s.p99_ms] == pytest.approx(np.percentile(flat, [50, 90, 99]) * 1e3)
    assert s.mean_ms == pytest.approx(flat.mean() * 1e3)
    assert s.min_ms == pytest.approx(flat.min() * 1e3)
    assert s.iterations == 12 and s.total_s == pytest.approx(flat.sum())


def test_single_repeat_has_no_spread() -> None:
    s = engine.LatencyStats.from_latencies(2, [0.01, 0.03])
    assert s.repeats == 1 and s.spread is None and not s.unstable
    assert s.images_per_s == s.images_per_s_min == s.images_per_s_max == pytest.approx(100.0)
    with pytest.raises(InputError, match="every repeat"):
        engine.LatencyStats.from_repeats(1, [[0.01], []])


@pytest.mark.parametrize(
    ("per_repeat_s", "spread", "unstable"),
    [
        ([0.100, 0.104, 0.096], 0.08, False),  # rates 10.0, 9.6, 10.4: 8 % of 10
        ([0.100, 0.125, 0.080], 0.45, True),  # rates 10, 8, 12.5
    ],
)
def test_spread_flag(tmp_path, per_repeat_s, spread, unstable) -> None:
    (f,) = _models(tmp_path)
    settings = engine.BenchSettings(batch_sizes=(1,), iters=1, warmup=0, repeat=3)
    result = _run([f], ["b"], settings, script=lambda b, m: iter(per_repeat_s))
    s = result.stats("model.onnx", "b", 1)
    assert s.spread == pytest.approx(spread, abs=0.005) and s.unstable is unstable
    assert (result.unstable() != []) is unstable
    table = engine.format_table(result)
    assert (f"({spread * 100:.0f}%)*" in table) is unstable
    assert ("*" in engine.format_latency_table(result).split("\n", 2)[2]) is unstable
    assert ("1 of 1 cells" in engine.table_legend(result)) is unstable


def test_ratio_is_of_the_medians(tmp_path) -> None:
    files = _models(tmp_path, 2)
    scripts = {"m0": [0.01, 0.01, 0.04], "m1": [0.02, 0.02, 0.02]}
    settings = engine.BenchSettings(batch_sizes=(1,), iters=1, warmup=0, repeat=3)
    result = _run(
        files,
        ["b"],
        settings,
        script=lambda b, m: iter(scripts[os.path.basename(os.path.dirname(m))]),
    )
    assert result.ratios("b") == {1: pytest.approx(100.0 / 50.0)}


# ----------------------------------------------------------------------------- load


def _loads(monkeypatch, *values):
    it = iter(values)
    monkeypatch.setattr(os, "getloadavg", lambda: next(it))
    monkeypatch.setattr(os, "cpu_count", lambda: 2)


def test_load_above_the_cores_warns_and_is_recorded(tmp_path, monkeypatch) -> None:
    (f,) = _models(tmp_path)
    _loads(monkeypatch, (3.5, 3.0, 2.5), (1.0, 2.0, 2.2))
    settings = engine.BenchSettings(batch_sizes=(1,), iters=1, warmup=0, repeat=3)
    with pytest.warns(UserWarning, match=r"load average 3.50 at the start .* exceeds the 2 cores"):
        result = _run([f], ["b"], settings)
    assert result.load_average == {
        "cores": 2, "start": [3.5, 3.0, 2.5], "end": [1.0, 2.0, 2.2], "busy": True
    }  # fmt: skip
    assert len(result.notes) == 1 and "start" in result.notes[0]
    assert result.to_dict()["load_average"]["start"] == [3.5, 3.0, 2.5]
    assert (
        engine.format_load(result)
    ) == "load average 3.50 at the start, 1.00 at the end (1 minute, 2 cores)"


def test_load_at_the_end_warns_too(tmp_path, monkeypatch) -> None:
    (f,) = _models(tmp_path)
    _loads(monkeypatch, (0.5, 0.5, 0.5), (2.01, 1.0, 1.0))
    settings = engine.BenchSettings(batch_sizes=(1,), iters=1, warmup=0, repeat=3)
    with pytest.warns(UserWarning, match="at the end of the run exceeds the 2 cores"):
        result = _run([f], ["b"], settings)
    assert result.load_average["busy"] is True


def test_quiet_machine_no_warning(tmp_path, monkeypatch, recwarn) -> None:
    (f,) = _models(tmp_path)
    _loads(monkeypatch, (1.9, 1.0, 1.0), (2.0, 1.0, 1.0))  # equal to the cores: not above
    settings = engine.BenchSettings(batch_sizes=(1,), iters=1, warmup=0, repeat=3)
    result = _run([f], ["b"], settings)
    assert not [w for w in recwarn if "load average" in str(w.message)]
    assert result.load_average["busy"] is False and result.notes == []


def test_no_load_average_on_this_os(tmp_path, monkeypatch) -> None:
    (f,) = _models(tmp_path)

    def missing():
        raise OSError("no load average")

    monkeypatch.setattr(os, "getloadavg", missing)
    settings = engine.BenchSettings(batch_sizes=(1,), iters=1, warmup=0, repeat=3)
    result = _run([f], ["b"], settings)
    assert result.load_average["start"] is None and result.load_average["busy"] is False
    assert engine.format_load(result) == "load average unknown"


# ----------------------------------------------------------------------------- files


def test_json_and_csv_fields(tmp_path, monkeypatch) -> None:
    (f,) = _models(tmp_path)
    _loads(monkeypatch, (0.5, 0.4, 0.3), (0.7, 0.5, 0.3))
    settings = engine.BenchSettings(batch_sizes=(1, 2), iters=1, warmup=0, repeat=3)
    script = [0.010, 0.020, 0.012, 0.014, 0.010, 0.011]  # order: 1 2 | 2 1 | 1 2
    result = _run([f], ["b"], settings, script=lambda b, m: iter(script))
    paths = engine.write_outputs(result, tmp_path / "out")
    doc = json.loads(paths["json"].read_text())
    assert doc["format"] == "reidctl.bench/2" and doc["settings"]["repeat"] == 3
    assert "rounds" not in doc["settings"] and "min_iters" not in doc["settings"]
    assert doc["load_average"] == {
        "cores": 2, "start": [0.5, 0.4, 0.3], "end": [0.7, 0.5, 0.3], "busy": False
    }  # fmt: skip
    bs1 = next(r for r in doc["results"] if r["batch_size"] == 1)
    rates = [1 / 0.010, 1 / 0.014, 1 / 0.010]  # repeat 1, 2, 3 of batch 1
    assert bs1["images_per_s_per_repeat"] == pytest.approx(rates)
    assert bs1["images_per_s"] == pytest.approx(np.median(rates))
    assert bs1["images_per_s_min"] == pytest.approx(min(rates))
    assert bs1["images_per_s_max"] == pytest.approx(max(rates))
    assert bs1["spread"] == pytest.approx((max(rates) - min(rates)) / np.median(rates))
    assert bs1["unstable"] is True and bs1["repeats"] == 3
    rows = list(csv.DictReader(paths["csv"].open()))
    assert list(rows[0]) == list(engine.CSV_FIELDS)
    for key in ("images_per_s_min", "images_per_s_max", "spread", "unstable", "repeats"):
        assert key in engine.CSV_FIELDS
    row1 = next(r for r in rows if r["batch_size"] == "1")
    assert float(row1["images_per_s"]) == pytest.approx(np.median(rates))
    assert float(row1["spread"]) == pytest.approx(bs1["spread"])
    assert row1["unstable"] == "true" and row1["repeats"] == "3"
    assert "images_per_s_per_repeat" not in row1


def test_plot_starts_at_zero_and_draws_the_spread(tmp_path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.container import ErrorbarContainer

    (f,) = _models(tmp_path)
    settings = engine.BenchSettings(batch_sizes=(1, 2), iters=1, warmup=0, repeat=3)
    script = [0.010, 0.020, 0.012, 0.014, 0.010, 0.011]
    result = _run([f], ["b"], settings, script=lambda b, m: iter(script))
    fig, ax = plt.subplots()
    try:
        engine.draw_throughput(result, ax)
        assert ax.get_ylim()[0] == 0.0
        (bars,) = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
        line, _caps, (segments,) = bars.lines
        s1 = result.stats("model.onnx", "b", 1)
        assert line.get_ydata()[0] == pytest.approx(s1.images_per_s)
        lo, hi = sorted(segments.get_segments()[0][:, 1])  # the bar of batch 1
        assert (lo, hi) == pytest.approx((s1.images_per_s_min, s1.images_per_s_max))
    finally:
        plt.close(fig)
    png = engine.plot_throughput(result, tmp_path / "p.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_write_outputs_refuses_earlier_files_without_force(tmp_path) -> None:
    (f,) = _models(tmp_path)
    settings = engine.BenchSettings(batch_sizes=(1,), iters=1, warmup=0, repeat=1)
    result = _run([f], ["b"], settings)
    out = tmp_path / "out"
    engine.write_outputs(result, out)
    with pytest.raises(OutputExistsError, match="--force"):
        engine.write_outputs(result, out)
    engine.write_outputs(result, out, force=True)


# ----------------------------------------------------------------------------- settings


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"warmup": -1}, "--warmup must be an integer >= 0, got -1"),
        ({"repeat": 0}, "--repeat must be an integer >= 1"),
        ({"iters": 0}, "--iters must be an integer >= 1"),
        ({"seconds": 0.0}, "--seconds must be a number > 0"),
        ({"seconds": None}, "--seconds S (a number > 0) or --iters N (>= 1)"),
        ({"batch_sizes": (0, 4)}, "--bs must be comma-separated integers >= 1"),
        ({"threads": 0}, "--threads must be an integer >= 1"),
    ],
)
def test_settings_messages_name_the_option_and_its_range(kwargs, message) -> None:
    with pytest.raises(InputError) as e:
        engine.BenchSettings(**kwargs)
    assert message in str(e.value)
    assert "min_iters" not in str(e.value) and "rounds" not in str(e.value)
