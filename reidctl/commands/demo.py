"""``reidctl demo``: the whole chain on a synthetic (or your) set, ending in a report."""

from __future__ import annotations

from pathlib import Path

import click

from reidctl.commands._common import echo_warnings
from reidctl.commands._options import force_option, threads_option


@click.command()
@click.option(
    "--data",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Dataset root in --layout [default: a synthetic Market-1501-style set, made fresh].",
)
@click.option(
    "--layout",
    default="market1501",
    show_default=True,
    help="Dataset layout of --data (see `reidctl preprocess --help`).",
)
@click.option(
    "--weights",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Checkpoint for --model [default: random weights; the report says so].",
)
@click.option(
    "--model", default="osnet_x0_25", show_default=True, help="Registered model (`reidctl models`)."
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("reidctl-demo"),
    show_default=True,
    help="Report directory; a previous demo's directory is replaced.",
)
@click.option("--no-int8", is_flag=True, help="Skip INT8 quantisation and its accuracy guard.")
@click.option(
    "--quick", is_flag=True, help="Fewer batch sizes (1, 8) and shorter timing (0.3 s per cell)."
)
@threads_option("Back-end threads [default: all cores].")
@force_option("Write into an --out that is not a demo directory.")
def demo(
    data: Path | None,
    layout: str,
    weights: Path | None,
    model: str,
    out: Path,
    no_int8: bool,
    quick: bool,
    threads: int | None,
    force: bool,
) -> None:
    """Run export -> preprocess -> infer -> eval -> INT8 -> bench and write a report.

    Without options: osnet_x0_25 with RANDOM weights on a small synthetic Market-1501-style
    set (under 3 minutes on 2 CPU cores). The report directory holds report.md (accuracy and
    throughput tables), cmc.png, ranked.png, throughput.png, every intermediate artefact
    (model, preprocessed sets, results, bench CSV/JSON) and demo.json (all figures).

    \b
    Examples:
      reidctl demo
      reidctl demo --weights osnet_x0_25_market1501.pth --data Market-1501-v15.09.15
      reidctl demo --quick --no-int8 --out /tmp/demo
    """
    from reidctl.demo import DemoSettings, run_demo

    settings = DemoSettings(
        out=out,
        model=model,
        weights=weights,
        data=data,
        layout=layout,
        int8=not no_int8,
        quick=quick,
        threads=threads,
    )
    if weights is None:
        click.secho(
            f"note: no --weights: {model} runs with RANDOM weights; accuracy figures are "
            "meaningless (the chain and the throughput are real)",
            fg="yellow",
            err=True,
        )
    with echo_warnings():
        result = run_demo(settings, force=force, progress=lambda line: click.echo(line, err=True))
    m = result.metrics
    total = sum(s.seconds for s in result.stages)
    click.echo(
        f"rank-1 {m['rank1']:.4f}  mAP {m['mAP']:.4f}"
        + (" (random weights)" if result.random_weights else "")
    )
    click.echo(f"report: {result.report} ({total:.0f} s)")
