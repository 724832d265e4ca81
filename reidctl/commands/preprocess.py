"""``reidctl preprocess``: a dataset layout -> ``.bin`` tensors, ``prep.info``, manifest."""

from __future__ import annotations

from pathlib import Path

import click

from reidctl.commands._common import echo_warnings
from reidctl.commands._options import connect_timeout_option, force_option
from reidctl.preprocess.layouts import list_layouts
from reidctl.preprocess.transform import DEFAULT_MAX_PIXELS, DTYPES


@click.command()
@click.argument("layout", metavar="LAYOUT")
@click.option(
    "--root",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Dataset folder (or, for market1501/dukemtmc/msmt17, its parent).",
)
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Output directory; created if missing, refused if not empty (see --resume, --force).",
)
@click.option(
    "--splits",
    default="query,gallery",
    show_default=True,
    help="Comma-separated splits, in output order: query, gallery, train.",
)
@click.option(
    "--model-config",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Model sidecar (model.onnx.json from `reidctl export`): take its preprocessing.",
)
@click.option(
    "--model", help="Registered model name (see `reidctl models`): take its preprocessing."
)
@click.option(
    "--size", help="Input size HEIGHTxWIDTH in pixels, at most 4096 a side.  [default: 256x128]"
)
@click.option(
    "--mean",
    help="Per-channel mean, 3 comma-separated values in [0, 1].  [default: 0.485,0.456,0.406]",
)
@click.option(
    "--std",
    help="Per-channel std, 3 comma-separated values > 0 (1/255 for raw-pixel models).  "
    "[default: 0.229,0.224,0.225]",
)
@click.option(
    "--interp",
    type=click.Choice(["bilinear", "bicubic", "area", "nearest"]),
    help="Resize interpolation (OpenCV).  [default: bilinear]",
)
@click.option("--rgb/--bgr", "rgb", default=None, help="Channel order.  [default: rgb]")
@click.option("--flip", is_flag=True, help="Store every tensor mirrored left-right.")
@click.option(
    "--dtype",
    type=click.Choice(list(DTYPES)),
    help="Tensor dtype. [default: float32, or uint8 for a model exported with --fold-normalize]",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    help="Worker processes (local engine).  [default: all cores]",
)
@click.option(
    "--engine",
    type=click.Choice(["local", "ray"]),
    default="local",
    show_default=True,
    help="local: processes on this machine; ray: one Ray task per 256 images "
    "(pip install 'reidctl[ray]'; see docs/scale.md).",
)
@click.option(
    "--address",
    help="With --engine ray: the cluster to join, `auto` (the one this machine belongs to) "
    "or HOST:PORT of the head node.  [default: start a local Ray on 127.0.0.1]",
)
@connect_timeout_option()
@click.option(
    "--max-pixels",
    type=click.IntRange(min=1),
    default=DEFAULT_MAX_PIXELS,
    show_default=True,
    help="Largest image decoded (width x height, read from the header first); larger ones, "
    "e.g. decompression bombs, are bad images (see --skip-bad).",
)
@click.option(
    "--relative-info",
    is_flag=True,
    help="Paths in prep.info relative to -o (automatic, with a warning, when -o contains "
    "whitespace: prep.info's fields are space-separated).",
)
@click.option(
    "--resume", is_flag=True, help="Continue an interrupted run, keeping complete tensors."
)
@force_option("Overwrite an earlier run's files in -o.")
@click.option(
    "--skip-bad",
    is_flag=True,
    help="Leave unreadable images out (listed in meta.json) instead of failing.",
)
def preprocess(
    layout: str,
    root: Path,
    output: Path,
    splits: str,
    model_config: Path | None,
    model: str | None,
    size: str | None,
    mean: str | None,
    std: str | None,
    interp: str | None,
    rgb: bool | None,
    flip: bool,
    dtype: str | None,
    workers: int | None,
    engine: str,
    address: str | None,
    connect_timeout: float | None,
    max_pixels: int,
    relative_info: bool,
    resume: bool,
    force: bool,
    skip_bad: bool,
) -> None:
    """Preprocess the LAYOUT dataset under --root into tensors every back end reads.

    For each image (sorted, per split): OpenCV decode, colour order, resize, /255,
    (x - mean) / std, CHW, written as raw little-endian `<split>_<stem>.bin`. Beside them:
    `prep.info` (`index path width height`, for the Ascend benchmark tool),
    `manifest.jsonl` (pid, camid, split per tensor) and, last, `meta.json`. Junk images
    (pid -1) are dropped; distractors (pid 0) stay in the gallery.

    The preprocessing comes from one of: --model-config, --model, or the explicit flags
    (--size, --mean, --std, --interp, --rgb/--bgr; defaults 256x128, ImageNet mean/std,
    bilinear, RGB).

    Unreadable images (undecodable, truncated, or larger than --max-pixels) are listed
    and make the run fail (exit 1) after the rest is done; --skip-bad leaves them out
    instead. An interrupted run continues with --resume.

    --engine ray spreads the images over a Ray cluster (a local one without --address); the
    dataset root and -o must then be at the same path on every node (shared file system).
    The output is byte-identical to the local engine's.

    \b
    Layouts: LAYOUTS

    \b
    Examples:
      reidctl preprocess market1501 --root Market-1501-v15.09.15 -o prep/
      reidctl preprocess market1501 --root DATA --model-config model.onnx.json -o prep/
      reidctl preprocess msmt17 --root MSMT17_V2 --model osnet_x0_25 -o prep/ --workers 4
      reidctl preprocess folder --root my_cams -o prep/ --size 256x128 --flip --dtype float16
      reidctl preprocess market1501 --root DATA -o prep/ --engine ray
      reidctl preprocess market1501 --root /nfs/DATA -o /nfs/prep --engine ray --address auto
    """
    from reidctl.errors import InputError
    from reidctl.preprocess.config import resolve_dtype, resolve_preprocess

    if engine == "ray" and workers is not None:
        raise InputError(
            "--workers applies to the local engine; with --engine ray every Ray CPU runs a "
            "task (size the cluster with `ray start --num-cpus N` instead)"
        )
    if engine != "ray" and address is not None:
        raise InputError("--address is the Ray cluster to join: add --engine ray")
    if engine != "ray" and connect_timeout is not None:
        raise InputError("--connect-timeout applies to the Ray engine: add --engine ray")
    spec = resolve_preprocess(
        model_config,
        model,
        size=size,
        mean=mean,
        std=std,
        interpolation=interp,
        color=None if rgb is None else ("rgb" if rgb else "bgr"),
    )
    common = dict(
        spec=spec,
        splits=splits,
        dtype=resolve_dtype(spec, dtype),
        flip=flip,
        relative_info=relative_info,
        resume=resume,
        force=force,
        skip_bad=skip_bad,
        progress=True,
        max_pixels=max_pixels,
    )
    with echo_warnings():
        if engine == "ray":
            from reidctl.scale.ray_engine import preprocess_ray

            if connect_timeout is not None:
                common["connect_timeout"] = connect_timeout
            summary = preprocess_ray(layout, root, output, address=address, **common)
        else:
            from reidctl.preprocess.engine import preprocess_dataset

            summary = preprocess_dataset(layout, root, output, workers=workers, **common)
    meta = summary.meta
    counts = ", ".join(f"{k} {v}" for k, v in summary.counts.items())
    shape = "x".join(str(d) for d in meta["shape"])
    click.echo(
        f"{meta['num_tensors']} tensors ({counts}), {shape} {meta['dtype']} -> {summary.out_dir}"
    )
    rate = f"{summary.images_per_s:.0f} images/s" if summary.written else "nothing to write"
    skipped = f", {summary.skipped} already complete" if summary.skipped else ""
    click.echo(f"wrote {summary.written} in {summary.wall_s:.2f} s ({rate}){skipped}")
    if summary.bad_files:
        click.echo(f"skipped {len(summary.bad_files)} unreadable images (listed in meta.json)")


preprocess.help = (preprocess.help or "").replace("LAYOUTS", ", ".join(list_layouts()))
