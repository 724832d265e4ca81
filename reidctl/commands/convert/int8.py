"""``reidctl convert int8``: the click command over :mod:`reidctl.convert.int8`."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import click

from reidctl.commands._common import echo_warnings
from reidctl.commands._options import force_option, threads_option
from reidctl.convert.int8 import DEFAULT_SAMPLES, METHODS, SameSetWarning, int8_from_onnx


@click.command("int8")
@click.argument("model_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--calib",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Preprocessed set (`reidctl preprocess`) whose tensors calibrate the ranges; "
    "use a split other than the evaluation set, e.g. the train split.",
)
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Output .onnx (e.g. model.int8.onnx); its sidecar is written beside it.",
)
@click.option(
    "--method",
    type=click.Choice(METHODS),
    default="minmax",
    show_default=True,
    help="Calibration method for the activation ranges.",
)
@click.option(
    "--samples",
    type=int,
    default=DEFAULT_SAMPLES,
    show_default=True,
    help="Calibration tensors, spread evenly over the set (all when the set is smaller).",
)
@click.option(
    "--exclude",
    default="",
    help="Comma-separated node names or op types to keep in float (e.g. depthwise,Gemm; "
    "`depthwise` selects every depthwise convolution).",
)
@click.option(
    "--per-channel/--no-per-channel",
    default=True,
    show_default=True,
    help="Quantise weights per output channel (more accurate) or per tensor.",
)
@click.option(
    "--reduce-range/--no-reduce-range",
    default=None,
    help="7-bit weights. Default: on where this CPU's uint8 x int8 kernels saturate (x86 "
    "without VNNI, e.g. AVX2-only), off elsewhere; the sidecar records the choice.",
)
@click.option(
    "--eval",
    "eval_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Labelled preprocessed set (query + gallery) for the accuracy guard.",
)
@click.option(
    "--max-map-drop",
    type=float,
    default=None,
    help="Fail (exit 1, nothing written) if INT8 mAP is lower by more than this many points "
    "(1 point = 0.01 mAP). Needs --eval.",
)
@click.option(
    "--allow-preprocess-mismatch",
    is_flag=True,
    help="Use --calib/--eval even though they were preprocessed differently from what the "
    "model's sidecar states (recorded in the sidecar's conversion.preprocess_check).",
)
@click.option(
    "--camera-offset",
    type=int,
    default=None,
    help="Camera-aware models: camera input = camid - N for calibration and the guard, as "
    "`reidctl infer --camera-offset`.  [default: each set's first camera number]",
)
@threads_option("onnxruntime threads for the guard.")
@force_option("Overwrite an existing output and sidecar.")
def command(
    model_file: Path,
    calib: Path,
    output: Path,
    method: str,
    samples: int,
    exclude: str,
    per_channel: bool,
    reduce_range: bool | None,
    eval_dir: Path | None,
    max_map_drop: float | None,
    camera_offset: int | None,
    allow_preprocess_mismatch: bool,
    threads: int | None,
    force: bool,
) -> None:
    """Quantise MODEL_FILE (ONNX + sidecar) to INT8 with ONNX Runtime static quantisation.

    QDQ format, uint8 activations and int8 weights (per channel by default), after ONNX
    Runtime's recommended pre-processing (shape inference, graph optimisation). Activation
    ranges are calibrated on --samples tensors of --calib. With --eval, FP32 and INT8 both run
    over that labelled set and the command prints the change in rank-1 and mAP (points) and the
    mean cosine between FP32 and INT8 features; --max-map-drop turns that into a gate.
    A camera-aware model (inputs image and camera) is calibrated and guarded with the
    manifests' cameras (camid - first camera), as `reidctl infer` feeds them.

    \b
    Examples:
      reidctl convert int8 model.onnx --calib prep-train/ -o model.int8.onnx
      reidctl convert int8 model.onnx --calib prep-train/ -o model.int8.onnx \\
          --eval prep-test/ --max-map-drop 1 --exclude depthwise
    """

    def warn_now(message: Warning | str, *_args: Any, **_kwargs: Any) -> None:
        # before the long work, not after it: the user may want to stop and re-split
        click.secho(f"warning: {message}", fg="yellow", err=True)

    items = [e.strip() for e in exclude.split(",") if e.strip()]
    click.echo(f"quantising {model_file} -> {output}", err=True)
    with echo_warnings(), warnings.catch_warnings():
        warnings.simplefilter("always", SameSetWarning)
        warnings.showwarning = warn_now
        sidecar = int8_from_onnx(
            model_file,
            calib,
            output,
            method=method,
            samples=samples,
            exclude=items,
            per_channel=per_channel,
            reduce_range=reduce_range,
            eval_dir=eval_dir,
            max_map_drop=max_map_drop,
            threads=threads,
            camera_offset=camera_offset,
            force=force,
            allow_preprocess_mismatch=allow_preprocess_mismatch,
            progress=True,
            on_stage=lambda line: click.echo(f"  {line}", err=True),
        )
    conv = sidecar["conversion"]
    click.echo(
        f"wrote {output} (sha256 {sidecar['model_sha256'][:12]}...) and {output}.json: "
        f"{conv['quantize_linear_nodes']} QuantizeLinear nodes, "
        f"{len(conv['excluded_nodes'])} nodes kept in float, calibrated on "
        f"{conv['calibration']['samples']} tensors ({conv['method']})"
    )
    guard = conv.get("accuracy_guard")
    if guard:
        click.echo(
            f"accuracy guard on {guard['num_images']} images: "
            f"rank-1 {guard['fp32']['rank1']:.4f} -> {guard['int8']['rank1']:.4f} "
            f"(Δ {guard['delta_rank1_points']:+.2f} points), "
            f"mAP {guard['fp32']['mAP']:.4f} -> {guard['int8']['mAP']:.4f} "
            f"(Δ {guard['delta_map_points']:+.2f} points), "
            f"mean cosine FP32 vs INT8 {guard['mean_cosine']:.4f}"
        )
