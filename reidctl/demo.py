"""The whole chain in one call (``reidctl demo``): export -> preprocess -> infer -> eval ->
bench (-> INT8), ending in a report directory::

    reidctl-demo/
      report.md            # tables (accuracy, throughput), the pictures below, what ran
      cmc.png              # CMC curve
      ranked.png           # ranked lists of a few queries
      throughput.png       # images/s against batch size per back end
      demo.json            # every figure, the settings and the stage timings (written last)
      data/                # the synthetic Market-1501-style set (without --data)
      model/model.onnx     # + model.onnx.json, model.int8.onnx (+ .json)
      prep-test/ prep-train/ results/ bench/

By default the data are synthetic and ``osnet_x0_25`` has random weights: the chain runs
and every artefact is real, but the accuracy figures only become meaningful with
``weights`` (and real ``data``). The report says so plainly.
"""

from __future__ import annotations

import shutil
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from reidctl.artifacts import PrepSet
from reidctl.errors import InputError, OutputExistsError
from reidctl.io import write_json_atomic, write_text_atomic

DEMO_FORMAT = "reidctl.demo/1"
DEMO_MARKER = "demo.json"
DEFAULT_MODEL = "osnet_x0_25"


@dataclass(frozen=True)
class DemoSettings:
    """What the demo runs.

    ``data``: a dataset root in ``layout`` (default: a synthetic Market-1501-style set made
    under ``out/data``); ``weights``: a checkpoint for ``model`` (default: random weights);
    ``int8``: also quantise, guard and benchmark INT8; ``quick``: fewer batch sizes and a
    shorter measurement (for tests); ``threads``: back-end threads (default: the back
    ends' own choice); ``backends``: default ``ort`` plus ``openvino`` when installed.
    """

    out: Path = Path("reidctl-demo")
    model: str = DEFAULT_MODEL
    weights: Path | None = None
    data: Path | None = None
    layout: str = "market1501"
    int8: bool = True
    quick: bool = False
    threads: int | None = None
    backends: tuple[str, ...] | None = None
    seed: int = 0

    @property
    def batch_sizes(self) -> tuple[int, ...]:
        return (1, 8) if self.quick else (1, 8, 32)

    @property
    def bench_seconds(self) -> float:
        return 0.3 if self.quick else 1.5


@dataclass
class StageTiming:
    name: str
    seconds: float
    detail: str = ""


@dataclass
class DemoResult:
    """Paths and figures of a finished demo (also saved as ``demo.json``)."""

    out: Path
    report: Path
    metrics: dict[str, Any]
    bench: dict[str, Any]
    int8: dict[str, Any] | None
    stages: list[StageTiming] = field(default_factory=list)
    random_weights: bool = True
    synthetic_data: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": DEMO_FORMAT,
            "out": str(self.out),
            "report": self.report.name,
            "metrics": self.metrics,
            "bench": self.bench,
            "int8": self.int8,
            "stages": [asdict(s) for s in self.stages],
            "random_weights": self.random_weights,
            "synthetic_data": self.synthetic_data,
        }


def default_backends() -> tuple[str, ...]:
    """``ort``, plus ``openvino`` when its runner reports itself available."""
    from reidctl.runners import get_runner

    names = ["ort"]
    try:
        if get_runner("openvino").availability()[0]:
            names.append("openvino")
    except InputError:
        pass
    return tuple(names)


def prepare_out_dir(out: Path, force: bool) -> Path:
    """Use ``out`` if absent or empty, or a previous demo's directory (it has ``demo.json``,
    or ``force``): the demo's own entries are replaced, nothing else is touched."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not (out / DEMO_MARKER).is_file() and not force:
        raise OutputExistsError(
            f"{out} exists and is not a reidctl demo directory; choose another --out or pass "
            "--force to write into it"
        )
    out.mkdir(parents=True, exist_ok=True)
    for name in ("data", "model", "prep-test", "prep-train", "results", "bench", DEMO_MARKER):
        p = out / name
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()
    return out


class _Stages:
    """Runs named stages, timing each and reporting a line when it starts and ends."""

    def __init__(self, report: Callable[[str], None]) -> None:
        self.report = report
        self.timings: list[StageTiming] = []
        self.t0 = time.perf_counter()

    def run(self, name: str, fn: Callable[[], Any], detail: Callable[[Any], str] | None = None):
        self.report(f"[{len(self.timings) + 1}] {name} ...")
        t = time.perf_counter()
        value = fn()
        dt = time.perf_counter() - t
        text = detail(value) if detail else ""
        self.timings.append(StageTiming(name, round(dt, 2), text))
        self.report(
            f"[{len(self.timings)}] {name} done in {dt:.1f} s" + (f": {text}" if text else "")
        )
        return value


def run_demo(
    settings: DemoSettings,
    *,
    force: bool = False,
    progress: Callable[[str], None] | None = None,
) -> DemoResult:
    """Run every stage and write the report directory; returns its figures.

    ``progress`` receives a line as each stage starts and ends (with its time in seconds).
    Library errors of any stage propagate unchanged (typed, with their exit code).
    """
    from reidctl.bench import BenchSettings, run_bench, write_outputs
    from reidctl.convert.onnx import onnx_from_torch
    from reidctl.models.registry import get_spec
    from reidctl.preprocess import preprocess_dataset
    from reidctl.runners.infer import run_inference

    spec = get_spec(settings.model)  # unknown names fail before any work
    if settings.weights is not None and not Path(settings.weights).is_file():
        raise InputError(f"--weights {settings.weights} not found")
    if settings.data is not None and not Path(settings.data).is_dir():
        raise InputError(f"--data {settings.data} is not a directory")
    out = prepare_out_dir(Path(settings.out), force)
    stages = _Stages(progress or (lambda _line: None))
    backends = settings.backends or default_backends()

    # 1. data
    if settings.data is None:
        from reidctl.preprocess.synthetic import make_synthetic_market

        root = stages.run(
            "synthetic data",
            lambda: make_synthetic_market(out / "data", seed=settings.seed).root,
            lambda r: f"Market-1501 layout in {r}",
        )
    else:
        root = Path(settings.data)

    # 2. export
    model_file = out / "model" / "model.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random weights are stated in the report instead
        stages.run(
            f"export {settings.model}",
            lambda: onnx_from_torch(
                settings.model, model_file, weights=settings.weights, force=True
            ),
            lambda s: f"{model_file} (weights: {'random' if s['weights'] is None else 'loaded'})",
        )

    # 3. preprocess
    prep_test, prep_train = out / "prep-test", out / "prep-train"
    stages.run(
        "preprocess query + gallery",
        lambda: preprocess_dataset(
            settings.layout, root, prep_test, spec=spec.preprocess, splits=("query", "gallery")
        ),
        lambda _s: f"{_count(prep_test)} tensors in {prep_test}",
    )
    if settings.int8:
        stages.run(
            "preprocess train (INT8 calibration)",
            lambda: preprocess_dataset(
                settings.layout, root, prep_train, spec=spec.preprocess, splits=("train",)
            ),
            lambda _s: f"{_count(prep_train)} tensors in {prep_train}",
        )

    # 4. infer
    results = out / "results"
    run_opts = {} if settings.threads is None else {"threads": settings.threads}
    stages.run(
        "infer (ort)",
        lambda: run_inference(model_file, prep_test, results, backend="ort", **run_opts),
        lambda r: f"{r.get('images_per_s', 0):.0f} images/s" if isinstance(r, dict) else "",
    )

    # 5. eval + pictures
    metrics = stages.run("evaluate", lambda: _evaluate(results, out), lambda m: _metrics_line(m))

    # 6. (INT8) and bench
    int8_info = None
    int8_file = out / "model" / "model.int8.onnx"
    if settings.int8:
        from reidctl.convert.int8 import int8_from_onnx

        side = stages.run(
            "INT8 quantisation + accuracy guard",
            lambda: int8_from_onnx(
                model_file,
                prep_train,
                int8_file,
                samples=64,
                # percentile ranges ignore the rare extreme activations that minmax keeps (on
                # osnet_x0_25 / market1501-mini that halves the mAP drop); random weights
                # give constant activations its histograms cannot bin, and no accuracy to keep
                method="minmax" if settings.weights is None else "percentile",
                eval_dir=prep_test,
                threads=settings.threads,
                force=True,
            ),
            lambda s: _guard_line(s["conversion"]["accuracy_guard"]),
        )
        int8_info = {
            "file": str(int8_file),
            "exclude": side["conversion"]["exclude"],
            "method": side["conversion"]["method"],
            "guard": side["conversion"]["accuracy_guard"],
        }
    bench_settings = BenchSettings(
        batch_sizes=settings.batch_sizes,
        seconds=settings.bench_seconds,
        warmup=2,
        threads=settings.threads,
        seed=settings.seed,
        repeat=2,
    )
    files = [int8_file, model_file] if settings.int8 else [model_file]
    bench = stages.run(
        f"bench ({', '.join(backends)}; batch {','.join(map(str, settings.batch_sizes))})",
        lambda: run_bench(files, backends, bench_settings),
        lambda r: ", ".join(
            f"{b} bs{bs} {r.throughput(lab, b, bs):.0f} img/s"
            for lab in list(r.models)[-1:]
            for b in r.backends
            for bs in r.settings.batch_sizes[-1:]
            if r.throughput(lab, b, bs)
        ),
    )
    write_outputs(bench, out / "bench")
    shutil.copyfile(out / "bench" / "bench.png", out / "throughput.png")

    result = DemoResult(
        out=out,
        report=out / "report.md",
        metrics=metrics,
        bench=bench.to_dict(),
        int8=int8_info,
        stages=stages.timings,
        random_weights=settings.weights is None,
        synthetic_data=settings.data is None,
    )
    write_text_atomic(result.report, render_report(result, settings, bench))
    write_json_atomic(out / DEMO_MARKER, result.to_dict())
    return result


def _count(prep: Path) -> int:
    return len(PrepSet.open(prep).entries)


def _evaluate(results: Path, out: Path) -> dict[str, Any]:
    """Metrics (``reidctl eval``'s defaults) plus the CMC plot and the ranked-list picture."""
    from reidctl.evaluate.report import plot_cmc, visualize
    from reidctl.evaluate.results import evaluate_results

    ev = evaluate_results(results)
    ev.metrics.save(out / "metrics.json")
    plot_cmc(ev.metrics, out / "cmc.png")
    visualize(ev, ev.data, ev.q_rows, ev.g_rows, 4, out / "ranked.png", top=8)
    return ev.metrics.to_dict()


def _metrics_line(m: dict[str, Any]) -> str:
    return f"rank-1 {m['rank1']:.4f}, mAP {m['mAP']:.4f}, mINP {m.get('mINP', float('nan')):.4f}"


def _guard_line(g: dict[str, Any]) -> str:
    return (
        f"Δrank-1 {g['delta_rank1_points']:+.2f} pt, ΔmAP {g['delta_map_points']:+.2f} pt, "
        f"cosine FP32 vs INT8 {g['mean_cosine']:.4f}"
    )


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---:" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def render_report(result: DemoResult, settings: DemoSettings, bench: Any) -> str:
    """The Markdown report: what ran, accuracy, throughput, pictures, stage timings."""
    from reidctl.bench import format_table

    m = result.metrics
    machine = result.bench.get("machine", {})
    lines = [f"# reidctl demo: {settings.model}", ""]
    if result.random_weights:
        lines += [
            f"> **Random weights.** No `--weights` was given, so {settings.model} runs with "
            "random initialisation: the chain and every artefact are real, but the accuracy "
            "figures below say nothing about the model. Pass `--weights` for real numbers.",
            "",
        ]
    data = (
        "the built-in synthetic Market-1501-style set"
        if result.synthetic_data
        else (f"`{settings.data}` ({settings.layout} layout)")
    )
    lines += [
        f"Data: {data}. Machine: {machine.get('cpu', '?')}, {machine.get('usable_cores', '?')} "
        f"cores{', GPU ' + ', '.join(machine['gpus']) if machine.get('gpus') else ''}.",
        "",
        "## Accuracy (FP32, onnxruntime)",
        "",
        _table(
            ["rank-1", "rank-5", "rank-10", "mAP", "mINP", "valid queries"],
            [
                [
                    f"{m['rank1']:.4f}",
                    f"{m.get('rank5', float('nan')):.4f}",
                    f"{m.get('rank10', float('nan')):.4f}",
                    f"{m['mAP']:.4f}",
                    f"{m.get('mINP', float('nan')):.4f}",
                    f"{m.get('num_valid_query', '?')} of {m.get('num_query', '?')}",
                ]
            ],
        ),
        "",
    ]
    if result.int8:
        g = result.int8["guard"]
        excl = ", ".join(result.int8["exclude"]) or "nothing"
        lines += [
            "## INT8 (ONNX Runtime static quantisation, QDQ)",
            "",
            f"Calibrated ({result.int8['method']}) on the train split; kept in float: {excl}.",
            "",
            _table(
                ["", "rank-1", "mAP"],
                [
                    ["FP32", f"{g['fp32']['rank1']:.4f}", f"{g['fp32']['mAP']:.4f}"],
                    ["INT8", f"{g['int8']['rank1']:.4f}", f"{g['int8']['mAP']:.4f}"],
                    [
                        "Δ (points)",
                        f"{g['delta_rank1_points']:+.2f}",
                        f"{g['delta_map_points']:+.2f}",
                    ],
                ],
            ),
            "",
            f"Mean cosine between FP32 and INT8 features: {g['mean_cosine']:.4f} "
            f"(min {g['min_cosine']:.4f}, {g['num_images']} images).",
            "",
        ]
    lines += [
        "## Throughput (images/s)",
        "",
        f"Synthetic inputs, {result.bench['settings']['seconds']} s per cell, threads: "
        f"{settings.threads or 'back-end default'}."
        + (
            " With INT8 the first model is INT8 and the ratio is INT8 / FP32."
            if result.int8
            else ""
        ),
        "",
        format_table(bench),
        "",
        "![throughput](throughput.png)",
        "",
        "## Retrieval",
        "",
        "![CMC](cmc.png)",
        "",
        "![ranked lists](ranked.png)",
        "",
        "## Stages",
        "",
        _table(
            ["stage", "seconds", "result"],
            [[s.name, f"{s.seconds:.1f}", s.detail] for s in result.stages],
        ),
        "",
        f"Total: {sum(s.seconds for s in result.stages):.1f} s. Re-run: `reidctl demo"
        + (f" --model {settings.model}" if settings.model != DEFAULT_MODEL else "")
        + (f" --weights {settings.weights}" if settings.weights else "")
        + (f" --data {settings.data}" if settings.data else "")
        + (" --no-int8" if not settings.int8 else "")
        + (" --quick" if settings.quick else "")
        + f" --out {settings.out}`",
        "",
    ]
    return "\n".join(lines)
