"""``reidctl bench``: throughput and latency by back end and batch size."""

from __future__ import annotations

from pathlib import Path

import click

from reidctl.commands._common import echo_warnings
from reidctl.commands._options import (
    backend_option,
    batch_sizes_option,
    force_option,
    threads_option,
)


@click.command()
@click.argument("model_file", required=False, type=click.Path(path_type=Path))
@backend_option(
    "Comma-separated back ends (see `reidctl backends`), e.g. ort,openvino,torch.",
    default="ort",
    dest="backends",
)
@batch_sizes_option("1,4,8,16,32", "Comma-separated batch sizes: the rows of the table.")
@click.option(
    "--seconds",
    type=float,
    default=3.0,
    show_default=True,
    help="Inference time per cell (model, back end, batch size), split over the repeats.",
)
@click.option(
    "--iters",
    type=int,
    default=None,
    help="A fixed number of timed calls per cell in each repeat (overrides --seconds).",
)
@click.option(
    "--repeat",
    type=int,
    default=3,
    show_default=True,
    help="Repeats of every cell, interleaved; the table gives the median and the spread.",
)
@click.option(
    "--warmup",
    type=int,
    default=3,
    show_default=True,
    help="Untimed calls of each cell before the first repeat.",
)
@threads_option("Intra-op threads for each back end [default: the back end's own choice].")
@click.option(
    "--data",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Time real tensors from this preprocessed set instead of seeded random inputs.",
)
@click.option(
    "--allow-preprocess-mismatch",
    is_flag=True,
    help="With --data: time it even though its preprocessing differs from the model's "
    "sidecar (recorded in bench.json).",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Write bench.csv, bench.json (machine, versions, model sha256) and bench.png here.",
)
@force_option("Overwrite the bench.csv, bench.json and bench.png of an earlier run in --out.")
@click.option(
    "--vs",
    "other",
    type=click.Path(path_type=Path),
    default=None,
    help="A second model measured interleaved in the same run; prints MODEL/OTHER ratios.",
)
@click.option(
    "--seed", type=int, default=0, show_default=True, help="Seed of the synthetic inputs."
)
def bench(
    model_file: Path | None,
    backends: str,
    batch_sizes: tuple[int, ...],
    seconds: float,
    iters: int | None,
    repeat: int,
    warmup: int,
    threads: int | None,
    data: Path | None,
    allow_preprocess_mismatch: bool,
    out: Path | None,
    force: bool,
    other: Path | None,
    seed: int,
) -> None:
    """Measure throughput (images/s) and latency (p50/p90/p99 ms per batch) of MODEL_FILE.

    Every cell (model, back end, batch size) runs --warmup untimed calls, then --repeat
    repeats of timed calls, interleaved with the other cells: each repeat gives a cell
    --seconds / --repeat of inference time (or --iters calls). Inputs are seeded random
    tensors of the model's input shape, or real ones with --data. The table has one row per
    batch size and one column per back end: the median images/s over the repeats and its
    spread, (max - min) / median; a spread above 10 % is marked *. The load average at the
    start and end is printed, with a warning when it exceeds the cores. Without MODEL_FILE
    the default model (aligned_reid, ResNet-50 at 256x128, random weights: throughput does
    not depend on them) is exported once into the cache ($REIDCTL_CACHE, default
    ~/.cache/reidctl) and measured.

    With --vs OTHER the two models run side by side in every repeat, so background load
    affects both alike; the table adds the ratio MODEL / OTHER per batch size.

    \b
    Examples:
      reidctl bench
      reidctl bench model.onnx --backend ort,openvino --bs 1,4,8,16,32 --out bench/
      reidctl bench model.int8.onnx --vs model.onnx --bs 8 --threads 2
    """
    from reidctl import bench as engine

    settings = engine.BenchSettings(
        batch_sizes=batch_sizes,
        seconds=seconds,
        iters=iters,
        warmup=warmup,
        repeat=repeat,
        threads=threads,
        seed=seed,
        data=str(data) if data else None,
        allow_preprocess_mismatch=allow_preprocess_mismatch,
    )
    names = engine.parse_name_list(backends)
    if out is not None:
        engine.check_outputs(out, force)  # before minutes of measuring
    with echo_warnings():
        if model_file is None:
            click.echo(
                f"no MODEL_FILE: using the default model {engine.DEFAULT_MODEL} "
                "(random weights; throughput does not depend on them)",
                err=True,
            )
            model_file, exported = engine.default_model_file()
            verb = "exported it to" if exported else "cached at"
            click.echo(f"{verb} {model_file}", err=True)
        files = [model_file] + ([other] if other else [])
        result = engine.run_bench(
            files, names, settings, progress=lambda line: click.echo(line, err=True)
        )
    m = result.machine
    click.echo(
        f"\nthroughput (images/s) on {m['cpu']} ({m['usable_cores']} cores"
        + (f", GPU {', '.join(m['gpus'])}" if m["gpus"] else "")
        + f"), threads {threads or 'default'}; {engine.format_load(result)}"
    )
    click.echo(engine.format_table(result))
    click.echo(engine.table_legend(result))
    click.echo("\nlatency per batch, over all calls of all repeats")
    click.echo(engine.format_latency_table(result))
    if out is not None:
        paths = engine.write_outputs(result, out, force=force)
        click.echo("\nwrote " + ", ".join(str(p) for p in paths.values()))
