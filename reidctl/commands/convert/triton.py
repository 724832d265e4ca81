"""``reidctl convert triton``: the click command over :mod:`reidctl.convert.triton`."""

from __future__ import annotations

from pathlib import Path

import click

from reidctl.commands._options import force_option
from reidctl.convert.triton import DEFAULT_QUEUE_DELAY_US, KINDS, triton_repository
from reidctl.parsing import parse_int_list


@click.command("triton")
@click.argument("model_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Model repository folder; the model goes to <output>/<name>/.",
)
@click.option("--name", default=None, help="Model name in the repository. [default: file stem]")
@click.option(
    "--max-batch",
    type=int,
    default=None,
    help="max_batch_size for a dynamic-batch model (0 is written for a static batch). "
    "[default: 64, or a TensorRT engine's largest batch if smaller]",
)
@click.option("--instances", type=int, default=2, show_default=True, help="Instance count.")
@click.option(
    "--kind",
    type=click.Choice(sorted(KINDS)),
    default=None,
    help="Instance kind. [default: gpu for TensorRT, cpu for OpenVINO, auto for ONNX]",
)
@click.option(
    "--preferred",
    default=None,
    help="Preferred batch sizes, e.g. 4,8,16. [default: the engine's batch sizes, else "
    "powers of two from 4, and --max-batch]",
)
@click.option(
    "--queue-delay-us",
    type=int,
    default=DEFAULT_QUEUE_DELAY_US,
    show_default=True,
    help="dynamic_batching max_queue_delay_microseconds.",
)
@force_option("Replace an existing <output>/<name>/.")
def command(
    model_file: Path,
    output: Path,
    name: str | None,
    max_batch: int | None,
    instances: int,
    kind: str | None,
    preferred: str | None,
    queue_delay_us: int,
    force: bool,
) -> None:
    """Write a Triton model repository entry for MODEL_FILE (.onnx, .plan/.engine, .xml).

    The config.pbtxt is complete: platform or backend from the file type, max_batch_size,
    inputs and outputs with their types and dims, dynamic batching, instance group, and the
    model facts as parameters.

    \b
    Examples:
      reidctl convert triton osnet.onnx -o model_repository/ --name osnet
      reidctl convert triton osnet.engine -o model_repository/ --instances 1
      reidctl convert triton osnet.xml -o model_repository/ --max-batch 32
    """
    sizes = parse_int_list(preferred, "--preferred") if preferred else None
    out = triton_repository(
        model_file,
        output,
        name=name,
        max_batch=max_batch,
        instances=instances,
        kind=kind,
        preferred=sizes,
        queue_delay_us=queue_delay_us,
        force=force,
    )
    click.echo(
        f"wrote {out['path']} (max_batch_size {out['max_batch_size']}, {out['kind']}): "
        + ", ".join(out["files"])
    )
