"""Reporting: Markdown tables, CSV, the throughput plot and ``bench.{csv,json,png}``."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

from reidctl.bench.result import BenchResult
from reidctl.errors import InputError
from reidctl.io import atomic_path, write_json_atomic, write_text_atomic


def _fmt(v: float | None, spec: str = ".1f") -> str:
    return "-" if v is None else format(v, spec)


def _markdown(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.rjust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    sep = "|" + "|".join("-" * (w + 1) + ":" for w in widths) + "|"
    return "\n".join([line(header), sep, *(line(r) for r in rows)])


def format_table(result: BenchResult) -> str:
    """Throughput (images/s) as a Markdown table: rows = batch sizes, columns = back ends
    (per model when several, then the ratio of the first to the second)."""
    labels = list(result.models)
    header = ["batch"]
    for b in result.backends:
        if len(labels) == 1:
            header.append(b)
        else:
            header += [f"{b} {lab}" for lab in labels] + [f"{b} ratio"]
    rows = []
    for bs in result.settings.batch_sizes:
        row = [str(bs)]
        for b in result.backends:
            row += [_fmt(result.throughput(lab, b, bs)) for lab in labels]
            if len(labels) > 1:
                row.append(
                    _fmt(result.ratios(b)[bs], ".2f") + ("x" if result.ratios(b)[bs] else "")
                )
        rows.append(row)
    return _markdown(header, rows)


def format_latency_table(result: BenchResult) -> str:
    """Latency per call (ms, p50/p90/p99) and throughput, one row per measurement."""
    header = ["model", "backend", "batch", "img/s", "p50 ms", "p90 ms", "p99 ms", "calls"]
    rows = []
    for r in result.records:
        s = r.stats
        rows.append(
            [r.model, r.backend, str(r.batch_size)]
            + (
                [
                    _fmt(s.images_per_s),
                    _fmt(s.p50_ms, ".2f"),
                    _fmt(s.p90_ms, ".2f"),
                    _fmt(s.p99_ms, ".2f"),
                    str(s.iterations),
                ]
                if s
                else ["-", "-", "-", "-", f"skipped: {r.skipped}"]
            )
        )
    return _markdown(header, rows)


CSV_FIELDS = (
    "model",
    "backend",
    "batch_size",
    "images_per_s",
    "p50_ms",
    "p90_ms",
    "p99_ms",
    "mean_ms",
    "min_ms",
    "iterations",
    "total_s",
    "skipped",
)


def to_csv(result: BenchResult) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_FIELDS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in result.records:
        row = {k: "" for k in CSV_FIELDS}
        row.update({k: v for k, v in r.to_dict().items() if v is not None})
        w.writerow(row)
    return buf.getvalue()


def plot_throughput(result: BenchResult, path: str | os.PathLike[str], title: str = "") -> Path:
    """PNG of throughput (images/s) against batch size, one line per (model, back end)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    try:
        for lab in result.models:
            for b in result.backends:
                pts = [(bs, result.throughput(lab, b, bs)) for bs in result.settings.batch_sizes]
                pts = [(x, y) for x, y in pts if y is not None]
                if pts:
                    name = b if len(result.models) == 1 else f"{b} {lab}"
                    ax.plot([x for x, _ in pts], [y for _, y in pts], marker="o", label=name)
        ax.set_xscale("log", base=2)
        ax.set_xticks(list(result.settings.batch_sizes))
        ax.set_xticklabels([str(b) for b in result.settings.batch_sizes])
        ax.set_xlabel("batch size")
        ax.set_ylabel("throughput (images/s)")
        names = [m.get("model") or lab for lab, m in result.models.items()]
        ax.set_title(
            title or f"{', '.join(dict.fromkeys(names))} on {result.machine.get('cpu', '?')}",
            fontsize=9,
        )
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = Path(path)
        with atomic_path(path) as tmp:
            # no date/software metadata: the same figures give the same bytes
            fig.savefig(tmp, format="png", metadata={"Software": None})
    finally:
        plt.close(fig)
    return path


def write_outputs(result: BenchResult, out_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """Write ``bench.csv``, ``bench.json`` and ``bench.png`` into ``out_dir``."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    paths = {"csv": out / "bench.csv", "json": out / "bench.json", "png": out / "bench.png"}
    write_text_atomic(paths["csv"], to_csv(result))
    plot_throughput(result, paths["png"])
    write_json_atomic(paths["json"], result.to_dict())
    return paths
