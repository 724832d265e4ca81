"""``reidctl infer``: a model over a preprocessed set -> result directory."""

from __future__ import annotations

from pathlib import Path

import click

from reidctl.commands._common import echo_warnings
from reidctl.commands._options import (
    backend_option,
    batch_size_option,
    force_option,
    threads_option,
)


@click.command()
@click.argument("model_file", type=click.Path(path_type=Path))
@click.argument("prep_dir", type=click.Path(path_type=Path))
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
    dump: str | None,
    index_base: int,
    feature: str | None,
    device: str | None,
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
    workers: int | None,
    gpus_per_worker: float | None,
    resume: bool,
) -> None:
    """Run MODEL_FILE over the preprocessed set PREP_DIR and write a result directory.

    Before running, the model input is checked against PREP_DIR/meta.json (shape and
    dtype), and so is the preprocessing (size, colour order, mean, std, interpolation,
    normalisation in graph; not --flip) against the model's sidecar: a mismatch is refused
    (exit 2) unless --allow-preprocess-mismatch. A model without a sidecar runs unchecked,
    with a note. Tensors are read one batch ahead on a background thread; a progress bar shows
    images/s on stderr. Static-batch models run at their batch (the last batch padded and
    trimmed). RESULTS/run.json is written last; `reidctl eval RESULTS` reads the directory.
    Only the options a back end understands may be given (e.g. --precision is openvino's).

    --engine ray hands shards of whole batches to Ray actors and writes the same result
    directory (CPU ort features byte-identical), with an `engine` record in run.json; the
    model and PREP_DIR must be at the same path on every node. A crashed run continues
    with --resume.

    \b
    Examples:
      reidctl infer osnet.onnx prep/ -o results/
      reidctl infer osnet.onnx prep/ -o results-ov/ --backend openvino --threads 2
      reidctl infer osnet.onnx prep/ -o results-pt/ --backend torch
      reidctl infer osnet.om prep/ -o results-npu/ --dump bin --index-base 1
      reidctl infer osnet.onnx prep/ -o results/ --engine ray --workers 4
      reidctl infer osnet.onnx prep/ -o results/ --engine ray --address auto --resume
      reidctl infer osnet.engine prep/ -o results/ --engine ray --gpus-per-worker 1
    """
    from reidctl.errors import InputError

    if engine != "ray":
        ray_only = {
            "--address": address is not None,
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
        device=device,
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
                address=address,
                workers=workers,
                gpus_per_worker=gpus_per_worker or 0,
                resume=resume,
                **common,
            )
        else:
            from reidctl.runners.infer import run_inference

            run = run_inference(model_file, prep_dir, results, **common)
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
