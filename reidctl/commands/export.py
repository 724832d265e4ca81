"""``reidctl export``: registered model (+ checkpoint) -> validated ONNX + sidecar."""

from __future__ import annotations

from pathlib import Path

import click

from reidctl.commands._common import echo_warnings
from reidctl.commands._options import force_option


@click.command()
@click.argument("model")
@click.option(
    "--weights",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Checkpoint (.pth). Omit for random initialisation (a warning says so).",
)
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Output .onnx path; the sidecar is written beside it as <output>.json.",
)
@click.option("--opset", default=17, show_default=True, help="ONNX opset version (11..21).")
@click.option(
    "--static-batch",
    type=int,
    default=None,
    help="Export one fixed batch size instead of a dynamic `batch` axis.",
)
@click.option(
    "--fold-normalize",
    is_flag=True,
    help="Move /255 and mean/std into the graph: the input becomes uint8 RGB NCHW.",
)
@force_option("Overwrite an existing output and sidecar.")
@click.option(
    "--allow-pickle",
    is_flag=True,
    help="Load a legacy full-pickle checkpoint (can execute arbitrary code: trusted files only).",
)
@click.option("--no-simplify", is_flag=True, help="Skip onnxsim.")
def export(
    model: str,
    weights: Path | None,
    output: Path,
    opset: int,
    static_batch: int | None,
    fold_normalize: bool,
    force: bool,
    allow_pickle: bool,
    no_simplify: bool,
) -> None:
    """Export MODEL (see `reidctl models`) to ONNX and validate it against PyTorch.

    The graph has one input `image` [batch, 3, H, W] and the model's named outputs, with the
    batch axis dynamic everywhere (unless --static-batch). After onnx.checker and onnxsim,
    onnxruntime is run at batch 1, 3 and 32 and compared with PyTorch; the export fails
    (exit 1) if any output differs by more than the model's tolerance. Nothing is written
    on failure.

    \b
    Examples:
      reidctl export osnet_x0_25 --weights osnet_x0_25_market1501.pth -o osnet.onnx
      reidctl export aligned_reid --weights ckpt.pth -o aligned.onnx --static-batch 16
    """
    from reidctl.convert.onnx import onnx_from_torch

    click.echo(f"exporting {model} -> {output}", err=True)
    with echo_warnings():
        sidecar = onnx_from_torch(
            model,
            output,
            weights=weights,
            opset=opset,
            static_batch=static_batch,
            fold_normalize=fold_normalize,
            force=force,
            allow_pickle=allow_pickle,
            simplify=not no_simplify,
        )
    inp = sidecar["inputs"][0]
    click.echo(f"wrote {output} (sha256 {sidecar['model_sha256'][:12]}...) and {output}.json")
    click.echo(f"  input   {inp['name']} {inp['shape']} {inp['dtype']}")
    for o in sidecar["outputs"]:
        mark = "  <- feature" if o["name"] == sidecar["feature"] else ""
        click.echo(f"  output  {o['name']} {o['shape']}{mark}")
    worst: dict[str, float] = {}
    for r in sidecar["validation"]["results"]:
        worst[r["output"]] = max(worst.get(r["output"], 0.0), r["max_abs_diff"])
    batches = sorted({r["batch"] for r in sidecar["validation"]["results"]})
    click.echo(
        f"  validated with onnxruntime at batch {', '.join(map(str, batches))}: max abs diff "
        + ", ".join(f"{k} {v:.2e}" for k, v in worst.items())
    )
    if sidecar["weights"] is None:
        click.secho("  weights: RANDOM (no --weights given)", fg="yellow")
