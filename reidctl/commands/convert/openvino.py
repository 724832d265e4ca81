"""``reidctl convert openvino``: the click command over :mod:`reidctl.convert.openvino`."""

from __future__ import annotations

from pathlib import Path

import click

from reidctl.commands._options import force_option
from reidctl.convert.openvino import ir_from_onnx


@click.command("openvino")
@click.argument("onnx_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="IR file to write (.xml); its weights go to the .bin beside it, its sidecar to .xml.json.",
)
@click.option("--fp16", is_flag=True, help="Store the weights as FP16 (half the .bin size).")
@click.option(
    "--data",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Preprocessed set whose tensors validate the IR. [default: synthetic tensors]",
)
@force_option("Overwrite an existing IR and sidecar.")
def command(onnx_file: Path, output: Path, fp16: bool, data: Path | None, force: bool) -> None:
    """Convert ONNX_FILE to an OpenVINO IR with OpenVINO's converter, and validate it.

    The IR runs on the openvino runner against the ONNX on ort before anything is written:
    relative difference <= 1e-3 and row cosine >= 0.9999 (FP16 weights: 2e-2 and 0.999), else
    exit 1 and nothing is written.

    \b
    Examples:
      reidctl convert openvino osnet.onnx -o osnet.xml
      reidctl convert openvino osnet.onnx -o osnet_fp16.xml --fp16 --data prep/
    """
    side = ir_from_onnx(onnx_file, output, fp16=fp16, data=data, force=force)
    val = side["conversion"]["validation"]
    worst = min(val["results"], key=lambda r: r["min_cosine"])
    click.echo(
        f"wrote {output} + {side['conversion']['weights_file']} "
        f"({side['conversion']['weights_precision']} weights); against the ONNX over "
        f"{val['rows']} rows: min cosine {worst['min_cosine']:.6f}, max relative diff "
        f"{max(r['rel_diff'] for r in val['results']):.2e}"
    )
