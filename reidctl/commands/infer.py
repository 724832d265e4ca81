"""``reidctl infer``: a model over a preprocessed set (or straight over images) -> result
directory."""

from __future__ import annotations

from pathlib import Path

import click

from reidctl.commands._common import echo_warnings
from reidctl.commands._options import (
    backend_option,
    batch_size_option,
    connect_timeout_option,
    force_option,
    streams_option,
    threads_option,
)


@click.command()
@click.argument("model_file", type=click.Path(path_type=Path))
@click.argument("prep_dir", required=False, type=click.Path(path_type=Path))
@click.option(
    "-o",
    "--output",
    "results",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Result directory to create (run.json, model.json, manifest.jsonl, features/).",
)
@backend_option(
    "Back end (see `reidctl backends`). Default: by file suffix: .onnx ort, "
    ".engine/.plan trt, .om acl, .xml openvino, .pth torch."
)
@batch_size_option(32, "Images per batch.")
@threads_option("CPU threads (ort, openvino).")
@streams_option("2 for ort with 2+ threads on the local engine, else 1")
@click.option(
    "--dump",
    type=click.Choice(["bin", "txt"]),
    default=None,
    help="Also write dump/<stem>_<k>.bin|txt per image and output, as the Ascend tools do.",
)
@click.option(
    "--index-base",
    default=1,
    show_default=True,
    help="First output number k in dump names: 1 as the Ascend benchmark tool, 0 as ais_bench.",
)
@click.option(
    "--feature",
    default=None,
    help="Output recorded as the retrieval feature (default: the sidecar's, else the first).",
)
@click.option(
    "--device",
    default=None,
    help="torch: cpu|cuda[:N]; trt, ort-cuda: cuda:N; acl, ais_bench: NPU id.",
)
@click.option(
    "--camera-offset",
    type=int,
    default=None,
    help="Camera-aware models: camera input = camid - N.  [default: the preprocessed set's "
    "first camera number (meta.json first_camera, 1 for market1501, dukemtmc, msmt17, "
    "cuhk03), else the sidecar's first_camera]",
)
@click.option("--fp16", is_flag=True, help="torch on CUDA: half-precision weights and inputs.")
@click.option("--channels-last", is_flag=True, help="torch: NHWC memory format.")
@click.option(
    "--precision",
    type=click.Choice(["f32", "bf16", "f16"]),
    default=None,
    help="openvino inference precision (default f32).",
)
@click.option("--model", default=None, help="torch: registered model name (without a sidecar).")
@click.option(
    "--weights",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="torch: checkpoint (default: the sidecar's weights).",
)
@click.option(
    "--allow-pickle",
    is_flag=True,
    help="torch: load a legacy full-pickle checkpoint (runs code from the file: trusted only).",
)
@click.option(
    "--allow-preprocess-mismatch",
    is_flag=True,
    help="Run even though PREP_DIR was preprocessed differently (size, colour order, mean, "
    "std, interpolation) from what the model's sidecar states; recorded in run.json.",
)
@force_option("Replace an existing result directory.")
@click.option(
    "--images",
    type=click.Path(file_okay=False, path_type=Path),
    help="Read the images of a dataset (this root, --layout) instead of PREP_DIR: decoded and "
    "preprocessed on the fly as `reidctl preprocess` would, no tensor files.",
)
@click.option(
    "--layout",
    help="With --images: the dataset layout (as for `reidctl preprocess`, e.g. market1501).",
)
@click.option(
    "--splits",
    default=None,
    help="With --images: comma-separated splits, in output order.  [default: query,gallery]",
)
@click.option(
    "--model-config",
    type=click.Path(dir_okay=False, path_type=Path),
    help="With --images: take the preprocessing from this sidecar.  [default: the model's "
    "facts: sidecar or ONNX metadata]",
)
@click.option("--size", help="With --images: input size HEIGHTxWIDTH (instead of the facts).")
@click.option("--mean", help="With --images: per-channel mean, 3 comma-separated values.")
@click.option("--std", help="With --images: per-channel std, 3 comma-separated values.")
@click.option(
    "--interp",
    type=click.Choice(["bilinear", "bicubic", "area", "nearest"]),
    help="With --images: resize interpolation.",
)
@click.option("--rgb/--bgr", "rgb", default=None, help="With --images: channel order.")
@click.option("--flip", is_flag=True, help="With --images: mirror every image left-right.")
@click.option(
    "--dtype",
    type=click.Choice(["float32", "float16", "uint8"]),
    help="With --images: tensor dtype.  [default: float32, uint8 for --fold-normalize models]",
)
@click.option(
    "--decoders",
    type=click.IntRange(min=1),
    help="With --images (local engine): image decoding processes.  [default: all cores]",
)
@click.option(
    "--skip-bad",
    is_flag=True,
    help="With --images: leave unreadable images out (listed in run.json) instead of failing.",
)
@click.option(
    "--engine",
    type=click.Choice(["local", "ray"]),
    default="local",
    show_default=True,
    help="local: this process; ray: a pool of Ray actors, each loading the model once "
    "(pip install 'reidctl[ray]'; see docs/scale.md).",
)
@click.option(
    "--address",
    help="With --engine ray: the cluster to join, `auto` (the one this machine belongs to) "
    "or HOST:PORT of the head node.  [default: start a local Ray on 127.0.0.1]",
)
@connect_timeout_option()
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    help="With --engine ray: Ray actors (one CPU each).  [default: the cluster's CPUs, or "
    "its GPUs / --gpus-per-worker]",
)
@click.option(
    "--gpus-per-worker",
    type=click.FloatRange(min=0),
    default=None,
    help="With --engine ray: GPUs each actor reserves (fractions share a GPU; cuda:0 is the "
    "actor's own GPU).  [default: 0]",
)
@click.option(
    "--resume",
    is_flag=True,
    help="With --engine ray: continue an interrupted run in -o, rerunning only the shards "
    "it had not saved (same model, back end, options and batch size).",
)
def infer(
    model_file: Path,
    prep_dir: Path,
    results: Path,
    backend: str | None,
    batch_size: int,
    threads: int | None,
    streams: int | None,
    dump: str | None,
    index_base: int,
    feature: str | None,
    device: str | None,
    camera_offset: int | None,
    fp16: bool,
    channels_last: bool,
    precision: str | None,
    model: str | None,
    weights: Path | None,
    allow_pickle: bool,
    allow_preprocess_mismatch: bool,
    force: bool,
    engine: str,
    address: str | None,
    connect_timeout: float | None,
    workers: int | None,
    gpus_per_worker: float | None,
    resume: bool,
    images: Path | None,
    layout: str | None,
    splits: str | None,
    model_config: Path | None,
    size: str | None,
    mean: str | None,
    std: str | None,
    interp: str | None,
    rgb: bool | None,
    flip: bool,
    dtype: str | None,
    decoders: int | None,
    skip_bad: bool,
) -> None:
    """Run MODEL_FILE over the preprocessed set PREP_DIR (or the images of --images) and
    write a result directory.

    Before running, the model input is checked against PREP_DIR/meta.json (shape and
    dtype), and so is the preprocessing (size, colour order, mean, std, interpolation,
    normalisation in graph; not --flip) against the model's sidecar: a mismatch is refused
    (exit 2) unless --allow-preprocess-mismatch. A model without a sidecar runs unchecked,
    with a note. Tensors are read one batch ahead on a background thread; a progress bar shows
    images/s on stderr. Static-batch models run at their batch (the last batch padded and
    trimmed). RESULTS/run.json is written last; `reidctl eval RESULTS` reads the directory.
    Only the options a back end understands may be given (e.g. --precision is openvino's).

    A camera-aware model (inputs image and camera) gets camera = camid - first camera per
    manifest entry (--camera-offset overrides); a camid outside the model's cameras stops
    the run before inference, naming the image.

    --engine ray hands shards of whole batches to Ray actors and writes the same result
    directory (CPU ort features byte-identical), with an `engine` record in run.json; the
    model and PREP_DIR must be at the same path on every node. A crashed run continues
    with --resume.

    --images ROOT --layout NAME reads the dataset's images instead of PREP_DIR: worker
    processes decode and preprocess them (the code and tensors of `reidctl preprocess`,
    settings from the model's facts or the preprocess flags) and feed the model batch after
    batch, with no tensor files. The result directory is the one `preprocess` + `infer`
    write; run.json records the images instead of prep_dir. Unreadable images are listed
    (exit 1, nothing written) unless --skip-bad. With --engine ray each actor decodes the
    images of its shards.

    \b
    Examples:
      reidctl infer osnet.onnx prep/ -o results/
      reidctl infer osnet.onnx prep/ -o results-ov/ --backend openvino --threads 2
      reidctl infer osnet.onnx prep/ -o results-pt/ --backend torch
      reidctl infer transreid.onnx prep/ -o results-tr/ --camera-offset 1
      reidctl infer osnet.om prep/ -o results-npu/ --dump bin --index-base 1
      reidctl infer osnet.onnx prep/ -o results/ --engine ray --workers 4
      reidctl infer osnet.onnx prep/ -o results/ --engine ray --address auto --resume
      reidctl infer osnet.engine prep/ -o results/ --engine ray --gpus-per-worker 1
      reidctl infer osnet.onnx --images Market-1501-v15.09.15 --layout market1501 -o results/
    """
    from reidctl.errors import InputError

    source = _image_source(
        model_file,
        prep_dir,
        images,
        layout,
        splits,
        model_config,
        dict(size=size, mean=mean, std=std, interpolation=interp, color=rgb),
        flip,
        dtype,
        decoders,
        skip_bad,
        model,
        engine,
    )

    if engine != "ray" and streams is None:
        streams = default_streams(model_file, backend, threads)
    if engine != "ray":
        ray_only = {
            "--address": address is not None,
            "--connect-timeout": connect_timeout is not None,
            "--workers": workers is not None,
            "--gpus-per-worker": gpus_per_worker is not None,
            "--resume": resume,
        }
        given = [name for name, is_set in ray_only.items() if is_set]
        if given:
            raise InputError(f"{', '.join(given)} apply to the Ray engine: add --engine ray")
    common = dict(
        backend=backend,
        batch_size=batch_size,
        dump=dump,
        index_base=index_base,
        force=force,
        feature=feature,
        progress=True,
        threads=threads,
        streams=streams,
        device=device,
        camera_offset=camera_offset,
        fp16=fp16,
        channels_last=channels_last,
        precision=precision,
        model=model,
        weights=str(weights) if weights else None,
        allow_pickle=allow_pickle,
        allow_preprocess_mismatch=allow_preprocess_mismatch,
    )
    with echo_warnings():
        if engine == "ray":
            from reidctl.scale.ray_engine import infer_ray

            run = infer_ray(
                model_file,
                prep_dir,
                results,
                source=source,
                address=address,
                workers=workers,
                gpus_per_worker=gpus_per_worker or 0,
                resume=resume,
                **({} if connect_timeout is None else {"connect_timeout": connect_timeout}),
                **common,
            )
        else:
            from reidctl.runners.infer import run_inference

            run = run_inference(model_file, prep_dir, results, source=source, **common)
    rate = f"{run['images_per_s']:.1f} images/s" if run["images_per_s"] else "images/s n/a"
    click.echo(
        f"{run['num_images']} images, {run['backend']} on {run['device']}, batch "
        f"{run['batch_size']}: {run['wall_s']:.2f} s, {rate}"
    )
    eng = run.get("engine")
    if eng:
        click.echo(
            f"ray: {eng['workers']} worker(s) on {eng['nodes']} node(s), {eng['shards']} shards "
            f"of {eng['shard_size']} rows, {eng['retried_shards']} retried, "
            f"{eng['resumed_shards']} resumed"
        )
    click.echo(f"outputs: {', '.join(run['outputs'])} (feature: {run['feature']}) -> {results}")


def _image_source(
    model_file: Path,
    prep_dir: Path | None,
    images: Path | None,
    layout: str | None,
    splits: str | None,
    model_config: Path | None,
    explicit: dict,
    flip: bool,
    dtype: str | None,
    decoders: int | None,
    skip_bad: bool,
    model: str | None,
    engine: str,
):
    """The :class:`ImageSource` of ``--images`` (``None`` for a preprocessed set); refuses
    image options without ``--images`` and a PREP_DIR with it."""
    from reidctl.errors import InputError

    image_opts = {
        "--layout": layout is not None,
        "--splits": splits is not None,
        "--model-config": model_config is not None,
        "--size": explicit["size"] is not None,
        "--mean": explicit["mean"] is not None,
        "--std": explicit["std"] is not None,
        "--interp": explicit["interpolation"] is not None,
        "--rgb/--bgr": explicit["color"] is not None,
        "--flip": flip,
        "--dtype": dtype is not None,
        "--decoders": decoders is not None,
        "--skip-bad": skip_bad,
    }
    if images is None:
        given = [k for k, v in image_opts.items() if v]
        if given:
            raise InputError(f"{', '.join(given)} apply to --images: add --images ROOT")
        if prep_dir is None:
            raise InputError("give PREP_DIR (a preprocessed set) or --images ROOT --layout NAME")
        return None
    if prep_dir is not None:
        raise InputError(f"give either PREP_DIR ({prep_dir}) or --images, not both")
    if layout is None:
        raise InputError("--images needs --layout (e.g. market1501; see `reidctl preprocess`)")
    if engine == "ray" and decoders is not None:
        raise InputError("--decoders applies to the local engine; Ray actors decode their shards")
    from reidctl.preprocess.config import resolve_preprocess
    from reidctl.runners.image_source import ImageSource

    color = explicit["color"]
    explicit = {**explicit, "color": None if color is None else ("rgb" if color else "bgr")}
    spec = None
    if model_config is not None or any(v is not None for v in explicit.values()):
        spec = resolve_preprocess(model_config, None, **explicit)
    return ImageSource(
        layout,
        images,
        splits or ("query", "gallery"),
        spec,
        dtype,
        flip,
        decoders,
        skip_bad,
        model=model,
    )


def default_streams(model_file: Path, backend: str | None, threads: int | None) -> int | None:
    """``infer``'s ``--streams`` when not given: 2 for a back end that takes it (``ort``)
    with 2 or more threads, else ``None`` (the back end's own, one). Two batches at once
    keep the cores busy where one batch's threads wait for each other (figures:
    ``python -m reidctl.benchmarks.stream --streams 1 --streams 2``). A back end that
    cannot be resolved gets ``None``; its error comes later, in context."""
    from reidctl.errors import ReidctlError
    from reidctl.platform import usable_cores
    from reidctl.runners.infer import runner_class

    try:
        cls = runner_class(model_file, backend)
    except ReidctlError:
        return None
    if "streams" not in cls.accepted_options:
        return None
    return 2 if (threads or usable_cores()) >= 2 else None
