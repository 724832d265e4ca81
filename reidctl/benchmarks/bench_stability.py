"""Run-to-run stability of ``reidctl bench``: the same benchmark twice, cell by cell.

Runs :func:`reidctl.bench.run_bench` ``--runs`` times (default 2) in one process on the same
model, back ends, batch sizes and settings, and prints per (back end, batch size) cell the
median images/s of each run, its spread ((max - min) / median over the repeats; ``*`` above
10 %) and the difference of the last run's median from the first's, with the load average at
the start and end of every run. Goal: the medians of the cells that no run flags differ by
at most 5 %. Without ``--model-file`` the model is ``--model`` (default ``osnet_x0_25``)
with random weights, exported once into the cache (:func:`reidctl.bench.default_model_file`;
throughput does not depend on the weights).

    python -m reidctl.benchmarks.bench_stability [--model osnet_x0_25] [--backend ort,openvino]
        [--bs 1,4,8,16,32] [--threads 2] [--seconds 3] [--repeat 3] [--runs 2]
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path
from typing import Any

GOAL = 0.05


def compare_runs(results: list[Any]) -> list[dict[str, Any]]:
    """Per cell of the first result: the medians and spreads of every run, ``flagged``
    (some run marks it unstable) and ``diff``, ``(last - first) / first`` of the median."""
    first = results[0]
    rows = []
    for rec in first.records:
        if rec.stats is None:
            continue
        stats = [r.stats(rec.model, rec.backend, rec.batch_size) for r in results]
        if any(s is None for s in stats):
            continue
        a, b = stats[0].images_per_s, stats[-1].images_per_s
        rows.append(
            {
                "model": rec.model,
                "backend": rec.backend,
                "batch_size": rec.batch_size,
                "medians": [s.images_per_s for s in stats],
                "spreads": [s.spread for s in stats],
                "flagged": any(s.unstable for s in stats),
                "diff": (b - a) / a if a > 0 else float("inf"),
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    from reidctl.bench import (
        BenchSettings,
        default_model_file,
        format_load,
        load_average,
        machine_info,
        parse_int_list,
        parse_name_list,
        run_bench,
    )

    p = argparse.ArgumentParser(
        prog="python -m reidctl.benchmarks.bench_stability", description=__doc__.split("\n")[0]
    )
    p.add_argument("--model", default="osnet_x0_25", help="registered model (random weights)")
    p.add_argument("--model-file", type=Path, default=None, help="an ONNX file instead")
    p.add_argument("--backend", default="ort,openvino")
    p.add_argument("--bs", default="1,4,8,16,32")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--runs", type=int, default=2)
    args = p.parse_args(argv)
    if args.runs < 2:
        p.error("--runs must be >= 2")

    model = args.model_file
    if model is None:
        model, _ = default_model_file(args.model)
    settings = BenchSettings(
        batch_sizes=parse_int_list(args.bs, "--bs"),
        seconds=args.seconds,
        warmup=args.warmup,
        repeat=args.repeat,
        threads=args.threads,
    )
    backends = parse_name_list(args.backend)
    m = machine_info()
    print(
        f"{model} on {m['cpu']} ({m['usable_cores']} cores), back ends {', '.join(backends)}, "
        f"threads {args.threads}, {args.seconds} s per cell in {args.repeat} repeats, "
        f"{args.runs} runs",
        flush=True,
    )
    t0 = time.perf_counter()
    results = []
    for k in range(args.runs):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the load is printed below instead
            res = run_bench([model], backends, settings)
        results.append(res)
        print(f"run {k + 1}: {format_load(res)}", flush=True)

    rows = compare_runs(results)
    runs = range(1, args.runs + 1)
    print()
    print(
        "| back end | batch | "
        + " | ".join(f"run {k} img/s (spread)" for k in runs)
        + f" | run {args.runs} vs run 1 |"
    )
    print("|---|---:|" + "---:|" * args.runs + "---:|")
    for r in rows:
        cells = [
            f"{med:.1f} ({'-' if sp is None else f'{sp * 100:.0f}%'})"
            for med, sp in zip(r["medians"], r["spreads"], strict=True)
        ]
        mark = "*" if r["flagged"] else ""
        print(
            f"| {r['backend']} | {r['batch_size']} | {' | '.join(cells)} | "
            f"{r['diff'] * 100:+.1f}%{mark} |"
        )
    print("\n* a run flags the cell: spread above 10 %")
    steady = [r for r in rows if not r["flagged"]]
    if steady:
        worst = max(steady, key=lambda r: abs(r["diff"]))
        print(
            f"goal: unflagged cells within {GOAL * 100:.0f}% run to run: {len(steady)} of "
            f"{len(rows)} cells unflagged, largest difference {worst['diff'] * 100:+.1f}% "
            f"({worst['backend']} bs {worst['batch_size']}): "
            f"{'PASS' if abs(worst['diff']) <= GOAL else 'MISS'}"
        )
    else:
        print(f"goal: no cell unflagged in every run ({len(rows)} flagged): nothing to judge")
    every = max(rows, key=lambda r: abs(r["diff"])) if rows else None
    if every is not None:
        print(
            f"all cells, flagged included: largest difference {every['diff'] * 100:+.1f}% "
            f"({every['backend']} bs {every['batch_size']})"
        )
    now = load_average()
    print(
        f"\ntotal {time.perf_counter() - t0:.0f} s; load average now "
        f"{'?' if now is None else f'{now[0]:.2f}'}; command: python -m "
        f"reidctl.benchmarks.bench_stability {' '.join(argv if argv is not None else sys.argv[1:])}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
