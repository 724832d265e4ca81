"""``reidctl convert trt``: the click command over :mod:`reidctl.convert.trt`."""

from __future__ import annotations

import shlex
from pathlib import Path

import click

from reidctl.commands._options import batch_sizes_option, force_option
from reidctl.convert.trt import (
    DEFAULT_WORKSPACE_MIB,
    _input_of,
    engine_from_onnx,
    parse_batch_sizes,
    source_facts,
    trtexec_command,
)


@click.command("trt")
@click.argument("onnx_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Engine file to write (.engine or .plan); its sidecar goes beside it.",
)
@batch_sizes_option(
    "1,4,8,16,32",
    "Batch sizes the engine must run: profile min = smallest, opt = max = largest.",
    dest="bs",
)
@click.option("--fp16", is_flag=True, help="Allow FP16 kernels (BuilderFlag.FP16).")
@click.option(
    "--workspace",
    "workspace_mib",
    default=DEFAULT_WORKSPACE_MIB,
    show_default=True,
    help="Builder workspace limit in MiB.",
)
@click.option(
    "--timing-cache",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Timing cache file: read when present, updated after the build.",
)
@click.option(
    "--print-trtexec",
    is_flag=True,
    help="Only print the equivalent trtexec command (no TensorRT needed) and exit.",
)
@force_option("Overwrite an existing engine and sidecar.")
def command(
    onnx_file: Path,
    output: Path,
    bs: tuple[int, ...],
    fp16: bool,
    workspace_mib: int,
    timing_cache: Path | None,
    print_trtexec: bool,
    force: bool,
) -> None:
    """Build a TensorRT engine (TensorRT >= 10) from ONNX_FILE.

    Engines run only on the GPU model and TensorRT version they were built with: build on
    the deployment machine.

    \b
    Examples:
      reidctl convert trt osnet.onnx -o osnet.engine --bs 1,4,8,16,32 --fp16
      reidctl convert trt osnet.onnx -o osnet.engine --print-trtexec
    """
    sizes = parse_batch_sizes(bs)
    if print_trtexec:
        facts = source_facts(onnx_file)
        name, shape, static = _input_of(facts)
        argv = trtexec_command(
            onnx_file,
            output,
            name,
            shape[1:],
            None if static else sizes,  # type: ignore[arg-type]
            fp16=fp16,
            workspace_mib=workspace_mib,
            timing_cache=timing_cache,
        )
        click.echo(shlex.join(argv))
        return
    side = engine_from_onnx(
        onnx_file,
        output,
        batch_sizes=sizes,
        fp16=fp16,
        workspace_mib=workspace_mib,
        timing_cache=timing_cache,
        force=force,
    )
    conv = side["conversion"]
    click.echo(f"wrote {output} ({conv['precision']}, profile {conv['profile']})")
