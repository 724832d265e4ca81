"""``reidctl convert fp16``: the click command over :mod:`reidctl.convert.fp16`."""

from __future__ import annotations

from pathlib import Path

import click

from reidctl.commands._common import echo_warnings
from reidctl.commands._options import force_option
from reidctl.convert.fp16 import DEFAULT_MIN_MEAN_COSINE, fp16_from_onnx


@click.command("fp16")
@click.argument("onnx_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Output .onnx (e.g. model.fp16.onnx); its sidecar is written beside it.",
)
@click.option(
    "--keep-io-types/--no-keep-io-types",
    default=True,
    show_default=True,
    help="Keep the graph inputs and outputs float32 (same tensors as the FP32 model).",
)
@click.option(
    "--data",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Preprocessed set whose tensors validate the model. [default: synthetic tensors]",
)
@click.option(
    "--backend",
    default="ort",
    show_default=True,
    help="Runner for the float16 model in the check (ort-cuda where a GPU has FP16 kernels).",
)
@click.option(
    "--min-cosine",
    type=float,
    default=DEFAULT_MIN_MEAN_COSINE,
    show_default=True,
    help="Least mean row cosine against FP32 on every output; below it, exit 1, nothing written.",
)
@click.option(
    "--keep-fp32",
    default="",
    help="Comma-separated further op types to keep in float32.",
)
@force_option("Overwrite an existing output and sidecar.")
def command(
    onnx_file: Path,
    output: Path,
    keep_io_types: bool,
    data: Path | None,
    backend: str,
    min_cosine: float,
    keep_fp32: str,
    force: bool,
) -> None:
    """Convert ONNX_FILE to float16 with onnxconverter-common, and validate it.

    LayerNormalization, Softmax and in-graph L2 normalisation (LpNormalization, ReduceL2,
    Div by a norm) stay float32. onnxruntime on the CPU computes in float32 where it lacks
    float16 kernels; the command then says so (the check covers float16 rounding only).

    \b
    Examples:
      reidctl convert fp16 osnet.onnx -o osnet.fp16.onnx --data prep/
      reidctl convert fp16 osnet.onnx -o osnet.fp16.onnx --backend ort-cuda
    """
    extra = [o.strip() for o in keep_fp32.split(",") if o.strip()]
    with echo_warnings():
        side = fp16_from_onnx(
            onnx_file,
            output,
            keep_io_types=keep_io_types,
            data=data,
            backend=backend,
            min_mean_cosine=min_cosine,
            extra_fp32_ops=extra,
            force=force,
        )
    conv = side["conversion"]
    val = conv["validation"]
    worst = min(r["mean_cosine"] for r in val["results"])
    click.echo(
        f"wrote {output}: {len(conv['fp32_ops_in_graph'])} op types and "
        f"{len(conv['fp32_norm_nodes'])} norm nodes kept float32; mean cosine against FP32 "
        f"{worst:.6f} over {val['rows']} rows on {val['backend']}"
    )
