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
@click.option(
    "--config",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The reference project's YAML config. MODEL `fastreid`: the fast-reid config the "
    "checkpoint was trained with (depth, IBN, non-local, pooling, neck, size). TransReID, "
    "CLIP-ReID: SIE coefficient, JPM settings, neck feature; SOLIDER-REID: semantic weight, "
    "neck feature; facts the weights also fix must agree with them.",
)
@click.option("--sie-coe", type=float, help="SIE coefficient (MODEL.SIE_COE; default 3.0).")
@click.option("--jpm-shift", type=int, help="TransReID JPM shift (MODEL.SHIFT_NUM; default 5).")
@click.option(
    "--jpm-groups", type=int, help="TransReID JPM shuffle groups (MODEL.SHUFFLE_GROUP; default 2)."
)
@click.option(
    "--jpm-divide", type=int, help="TransReID JPM divide length (MODEL.DEVIDE_LENGTH; default 4)."
)
@click.option(
    "--neck-feat",
    type=click.Choice(["before", "after"]),
    help="Feature before or after the BN neck (TEST.NECK_FEAT; default before).",
)
@click.option(
    "--semantic-weight",
    type=float,
    help="SOLIDER-REID: the semantic weight s of the Swin's modulation, w = [s, 1 - s] "
    "(MODEL.SEMANTIC_WEIGHT; default 0.2, the value of its released runs).",
)
@click.option(
    "--camera-agnostic",
    is_flag=True,
    help="Camera-aware models: export without the camera input (CLIP-ReID: no SIE, its own "
    "path; TransReID: no SIE, or the row of --sie-camera).",
)
@click.option(
    "--sie-camera",
    type=int,
    help="With --camera-agnostic: add this camera's SIE row (0-based) to every image.",
)
@click.option(
    "--first-camera",
    type=int,
    default=1,
    show_default=True,
    help="Camera-aware models: the manifest camid of camera index 0 (index = camid - this).",
)
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
    config: Path | None,
    sie_coe: float | None,
    jpm_shift: int | None,
    jpm_groups: int | None,
    jpm_divide: int | None,
    neck_feat: str | None,
    semantic_weight: float | None,
    camera_agnostic: bool,
    sie_camera: int | None,
    first_camera: int,
) -> None:
    """Export MODEL (see `reidctl models`) to ONNX and validate it against PyTorch.

    The graph has the input `image` [batch, 3, H, W] (camera-aware models, e.g. TransReID and
    CLIP-ReID with SIE, also `camera` [batch] int64, the 0-based camera index) and the model's
    named outputs, with the batch axis dynamic everywhere (unless --static-batch). After
    onnx.checker and onnxsim,
    onnxruntime is run at batch 1, 3 and 32 and compared with PyTorch; the export fails
    (exit 1) if any output differs by more than the model's tolerance. Nothing is written
    on failure.

    \b
    Examples:
      reidctl export osnet_x0_25 --weights osnet_x0_25_market1501.pth -o osnet.onnx
      reidctl export aligned_reid --weights ckpt.pth -o aligned.onnx --static-batch 16
      reidctl export transreid_vit_base --weights transformer_120.pth \\
          --config vit_transreid_stride.yml -o transreid.onnx
      reidctl export clipreid_vit_b16 --weights ViT-B-16_60.pth -o clipreid.onnx --camera-agnostic
      reidctl export solider_swin_base --weights transformer_120.pth -o solider.onnx \\
          --semantic-weight 0.2
      reidctl export fastreid --config sbs_R50-ibn.yml --weights model_final.pth -o sbs.onnx
    """
    from reidctl.convert.onnx import check_output_path, onnx_from_torch
    from reidctl.errors import InputError

    loaded = None
    if model == "fastreid" and config is None:
        raise InputError("`reidctl export fastreid` needs --config <fast-reid config.yml>")
    given = {
        "config": config if model != "fastreid" else None,
        "sie_coe": sie_coe,
        "jpm_shift": jpm_shift,
        "jpm_groups": jpm_groups,
        "jpm_divide": jpm_divide,
        "neck_feat": neck_feat,
        "semantic_weight": semantic_weight,
        "camera_agnostic": camera_agnostic or None,
        "sie_camera": sie_camera,
    }
    options = {k: v for k, v in given.items() if v is not None}
    click.echo(f"exporting {model} -> {output}", err=True)
    with echo_warnings():
        if config is not None:
            from reidctl.models.fastreid_config import load_fastreid

            check_output_path(output, force)  # before the checkpoint is read
            loaded = load_fastreid(config, weights, allow_pickle=allow_pickle)
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
            options=options,
            first_camera=first_camera,
            loaded=loaded,
        )
    click.echo(f"wrote {output} (sha256 {sidecar['model_sha256'][:12]}...) and {output}.json")
    for inp in sidecar["inputs"]:
        click.echo(f"  input   {inp['name']} {inp['shape']} {inp['dtype']}")
    cam = sidecar.get("camera")
    if cam and cam.get("input"):
        click.echo(
            f"  camera  {cam['num_cameras']} cameras, index = camid - {cam['first_camera']}, "
            f"SIE coefficient {cam['sie_coefficient']:g}"
        )
    elif cam and cam.get("camera_agnostic"):
        row = cam.get("sie_camera")
        click.echo(
            "  camera  agnostic: "
            + ("no SIE added" if row is None else f"SIE row {row} added to every image")
        )
    for prefix, count in sidecar.get("ignored_weights", {}).items():
        click.echo(f"  ignored {prefix} ({count} tensors, not used by the image network)")
    for o in sidecar["outputs"]:
        mark = "  <- feature" if o["name"] == sidecar["feature"] else ""
        click.echo(f"  output  {o['name']} {o['shape']}{mark}")
    validation = sidecar["validation"]
    worst: dict[str, float] = {}
    for r in validation["results"]:  # the figure the tolerance bounds: relative difference
        worst[r["output"]] = max(worst.get(r["output"], 0.0), r["rel_diff"])
    batches = sorted({r["batch"] for r in validation["results"]})
    click.echo(
        f"  validated with onnxruntime at batch {', '.join(map(str, batches))}: "
        "max|onnx-torch|/max|torch| "
        + ", ".join(f"{k} {v:.2e}" for k, v in worst.items())
        + f" (tolerance {validation['tolerance']:.0e})"
    )
    if sidecar["weights"] is None:
        click.secho("  weights: RANDOM (no --weights given)", fg="yellow")
