"""``reidctl compare``: the features of two result directories, output by output."""

from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.argument("results_a", type=click.Path(path_type=Path))
@click.argument("results_b", type=click.Path(path_type=Path))
@click.option("--atol", type=float, default=None, help="Fail if any |a - b| exceeds this.")
@click.option(
    "--min-cos",
    type=float,
    default=0.9999,
    show_default=True,
    help="Fail if any row's cosine similarity is below this.",
)
@click.option("--worst", default=3, show_default=True, help="Worst rows listed per output.")
def compare(
    results_a: Path, results_b: Path, atol: float | None, min_cos: float, worst: int
) -> None:
    """Compare the features of RESULTS_A and RESULTS_B (e.g. NPU run vs CPU reference).

    For every output both hold: max and mean absolute difference, mean and min row cosine
    and the worst rows (manifest index). Exit code 1 when a threshold fails.

    \b
    Example:
      reidctl infer osnet.onnx prep/ -o cpu/
      reidctl infer osnet.om prep/ -o npu/
      reidctl compare cpu/ npu/ --min-cos 0.999 --atol 1e-2
    """
    from reidctl.runners.compare import check_comparison, compare_results

    report = compare_results(results_a, results_b, atol=atol, min_cos=min_cos, worst=worst)
    a, b = report["a"], report["b"]
    click.echo(f"A: {a['path']} ({a['backend']}, {a['device']})")
    click.echo(f"B: {b['path']} ({b['backend']}, {b['device']})")
    for name, s in report["outputs"].items():
        worst_rows = ", ".join(f"#{r['index']} {r['cosine']:.6f}" for r in s["worst_rows"])
        click.echo(
            f"{name}: {s['rows']} rows  max|a-b| {s['max_abs_diff']:.3g}  mean|a-b| "
            f"{s['mean_abs_diff']:.3g}  cosine mean {s['mean_cosine']:.6f} min "
            f"{s['min_cosine']:.6f}  worst: {worst_rows}"
        )
    for side in ("only_in_a", "only_in_b"):
        if report[side]:
            click.echo(f"{side.replace('_', ' ')}: {', '.join(report[side])}")
    check_comparison(report)
    click.echo("ok: within thresholds")
