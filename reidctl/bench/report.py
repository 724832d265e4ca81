"""Reporting: Markdown tables, CSV, the throughput plot and ``bench.{csv,json,png}``."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Any

from reidctl.bench.result import BenchResult, LatencyStats
from reidctl.bench.settings import SPREAD_LIMIT
from reidctl.errors import InputError
from reidctl.io import atomic_path, refuse_existing, write_json_atomic, write_text_atomic


def _fmt(v: float | None, spec: str = ".1f") -> str:
    return "-" if v is None else format(v, spec)


def _markdown(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.rjust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    sep = "|" + "|".join("-" * (w + 1) + ":" for w in widths) + "|"
    return "\n".join([line(header), sep, *(line(r) for r in rows)])


UNSTABLE_MARK = "*"


def _cell(stats: LatencyStats | None) -> str:
    """``median (spread %)``, marked when unstable; ``-`` for a skipped cell."""
    if stats is None:
        return "-"
    text = _fmt(stats.images_per_s)
    if stats.spread is not None:
        text += f" ({stats.spread * 100:.0f}%)"
    return text + (UNSTABLE_MARK if stats.unstable else "")


def format_table(result: BenchResult) -> str:
    """Throughput as a Markdown table: rows = batch sizes, columns = back ends (per model
    when several, then the ratio of the first to the second).

    Each cell is the median images/s over the repeats with its spread, ``(max - min) /
    median`` of the per-repeat throughput, in percent; a cell whose spread exceeds
    :data:`~reidctl.bench.settings.SPREAD_LIMIT` is marked ``*``.
    """
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
            row += [_cell(result.stats(lab, b, bs)) for lab in labels]
            if len(labels) > 1:
                ratio = result.ratios(b)[bs]
                row.append(_fmt(ratio, ".2f") + ("x" if ratio else ""))
        rows.append(row)
    return _markdown(header, rows)


def table_legend(result: BenchResult) -> str:
    """One line saying what :func:`format_table`'s cells mean, and which are flagged."""
    n = result.settings.repeat
    text = (
        f"median images/s over {n} repeat{'s' if n != 1 else ''} (spread: (max - min) / median "
        f"of the per-repeat throughput); {UNSTABLE_MARK} = spread above "
        f"{SPREAD_LIMIT * 100:.0f}%"
    )
    flagged = result.unstable()
    if flagged:
        text += (
            f": {len(flagged)} of {sum(r.stats is not None for r in result.records)} cells, "
            "rerun them on a quieter machine or with more --seconds / --repeat"
        )
    return text


def format_load(result: BenchResult) -> str:
    """``load average 0.31 at the start, 2.05 at the end (1 minute, 2 cores)``."""
    la = result.load_average
    if not la or (la.get("start") is None and la.get("end") is None):
        return "load average unknown"

    def one(v: list[float] | None) -> str:
        return "?" if v is None else f"{v[0]:.2f}"

    return (
        f"load average {one(la.get('start'))} at the start, {one(la.get('end'))} at the end "
        f"(1 minute, {la.get('cores')} cores)"
    )


def format_latency_table(result: BenchResult) -> str:
    """Per cell: median, min and max images/s over the repeats, the spread, the latency per
    call (ms, p50/p90/p99 over all calls of all repeats) and the number of calls."""
    header = [
        "model", "backend", "batch", "img/s", "min", "max", "spread", "p50 ms", "p90 ms",
        "p99 ms", "calls",
    ]  # fmt: skip
    rows = []
    for r in result.records:
        s = r.stats
        if s is None:
            rows.append(
                [r.model, r.backend, str(r.batch_size)] + ["-"] * 7 + [f"skipped: {r.skipped}"]
            )
            continue
        spread = "-" if s.spread is None else f"{s.spread * 100:.1f}%"
        rows.append(
            [
                r.model,
                r.backend,
                str(r.batch_size),
                _fmt(s.images_per_s),
                _fmt(s.images_per_s_min),
                _fmt(s.images_per_s_max),
                spread + (UNSTABLE_MARK if s.unstable else ""),
                _fmt(s.p50_ms, ".2f"),
                _fmt(s.p90_ms, ".2f"),
                _fmt(s.p99_ms, ".2f"),
                str(s.iterations),
            ]
        )
    return _markdown(header, rows)


CSV_FIELDS = (
    "model",
    "backend",
    "batch_size",
    "images_per_s",
    "images_per_s_min",
    "images_per_s_max",
    "spread",
    "unstable",
    "repeats",
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
    """One row per cell (:data:`CSV_FIELDS`); ``images_per_s`` is the median over the
    repeats, ``unstable`` is ``true`` or ``false``, empty fields for a skipped cell."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_FIELDS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in result.records:
        row = {k: "" for k in CSV_FIELDS}
        for k, v in r.to_dict().items():
            if isinstance(v, bool):
                row[k] = "true" if v else "false"
            elif v is not None:
                row[k] = v
        w.writerow(row)
    return buf.getvalue()


def draw_throughput(result: BenchResult, ax: Any, title: str = "") -> None:
    """Draw throughput against batch size on the matplotlib ``ax``: per (model, back end)
    the median images/s as a line, the min..max over the repeats as error bars; the y-axis
    starts at zero so heights compare. Series sit slightly apart along x so that their bars
    do not hide each other."""
    series = [(lab, b) for lab in result.models for b in result.backends]
    top = 0.0
    for k, (lab, b) in enumerate(series):
        pts = [
            (bs, s)
            for bs in result.settings.batch_sizes
            if (s := result.stats(lab, b, bs)) is not None
        ]
        if pts:
            name = b if len(result.models) == 1 else f"{b} {lab}"
            shift = 2 ** (0.04 * (k - (len(series) - 1) / 2))  # x is on a log2 scale
            xs = [x * shift for x, _ in pts]
            med = [s.images_per_s for _, s in pts]
            lo = [s.images_per_s - s.images_per_s_min for _, s in pts]
            hi = [s.images_per_s_max - s.images_per_s for _, s in pts]
            ax.errorbar(xs, med, yerr=[lo, hi], marker="o", capsize=4, label=name)
            top = max(top, *(s.images_per_s_max for _, s in pts))
    bss = list(result.settings.batch_sizes)
    ax.set_xscale("log", base=2)
    ax.set_xticks(bss)
    ax.set_xticklabels([str(b) for b in bss])
    ax.set_xlabel("batch size")
    n = result.settings.repeat
    ax.set_ylabel(f"images/s (median of {n}; bars: min..max)" if n > 1 else "images/s")
    if top > 0 and top < float("inf"):
        ax.set_ylim(0, top * 1.08)
    else:
        ax.set_ylim(bottom=0)
    names = [m.get("model") or lab for lab, m in result.models.items()]
    default = f"{', '.join(dict.fromkeys(names))} on {result.machine.get('cpu', '?')}"
    la = result.load_average
    if la and la.get("start") is not None and la.get("end") is not None:
        default += f"\nload average {la['start'][0]:.1f} -> {la['end'][0]:.1f}, {la['cores']} cores"
    ax.set_title(title or default, fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)


def plot_throughput(result: BenchResult, path: str | os.PathLike[str], title: str = "") -> Path:
    """PNG of :func:`draw_throughput`; the same figures give the same bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    try:
        draw_throughput(result, ax, title)
        fig.tight_layout()
        path = Path(path)
        with atomic_path(path) as tmp:
            # no date/software metadata: the same figures give the same bytes
            fig.savefig(tmp, format="png", metadata={"Software": None})
    finally:
        plt.close(fig)
    return path


OUTPUT_NAMES = {"csv": "bench.csv", "json": "bench.json", "png": "bench.png"}


def output_paths(out_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """The files :func:`write_outputs` writes into ``out_dir``, by kind."""
    return {k: Path(out_dir) / name for k, name in OUTPUT_NAMES.items()}


def check_outputs(out_dir: str | os.PathLike[str], force: bool = False) -> None:
    """Refuse an ``--out`` that is not a directory, or that holds an earlier run's files
    (:class:`OutputExistsError`) unless ``force``: call it before measuring."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} exists and is not a directory")
    refuse_existing(*output_paths(out).values(), force=force)


def write_outputs(
    result: BenchResult, out_dir: str | os.PathLike[str], *, force: bool = False
) -> dict[str, Path]:
    """Write ``bench.csv``, ``bench.json`` and ``bench.png`` into ``out_dir``; existing
    ones only with ``force`` (see :func:`check_outputs`)."""
    check_outputs(out_dir, force)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = output_paths(out)
    write_text_atomic(paths["csv"], to_csv(result))
    plot_throughput(result, paths["png"])
    write_json_atomic(paths["json"], result.to_dict())
    return paths
