"""``reidctl convert trt``: the click command over :mod:`reidctl.convert.trt`."""

from __future__ import annotations

import shlex
from pathlib import Path

import click

from reidctl.commands._options import batch_sizes_option, force_option
from reidctl.convert.trt import (
    BUILDER_FLAGS,
    DEFAULT_WORKSPACE_MIB,
    engine_from_onnx,
    trtexec_for_onnx,
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
    "Batch sizes the engine must run: profile min = smallest, max = largest.",
    dest="bs",
)
@click.option(
    "--opt-bs",
    type=int,
    default=None,
    help="Batch the kernels are tuned for (profile opt), within the --bs range. "
    "[default: the largest --bs]",
)
@click.option(
    "--outputs",
    default=None,
    help="Comma-separated outputs to keep (e.g. global_feat,local_feat); the graph is cut "
    "before the build. The retrieval feature must stay. [default: all]",
)
@click.option(
    "--builder-flag",
    "builder_flags",
    multiple=True,
    metavar="NAME",
    help=f"trt.BuilderFlag to set (repeatable): {', '.join(BUILDER_FLAGS)}.",
)
@click.option(
    "--trtexec-args",
    default=None,
    help="Extra trtexec arguments (one quoted string), for --with-trtexec and --print-trtexec.",
)
@click.option(
    "--with-trtexec",
    is_flag=True,
    help="Build with the trtexec binary instead of the TensorRT Python API.",
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
    opt_bs: int | None,
    outputs: str | None,
    builder_flags: tuple[str, ...],
    trtexec_args: str | None,
    with_trtexec: bool,
) -> None:
    """Build a TensorRT engine (TensorRT >= 10) from ONNX_FILE.

    Engines run only on the GPU model and TensorRT version they were built with: build on
    the deployment machine.

    \b
    Examples:
      reidctl convert trt osnet.onnx -o osnet.engine --bs 1,4,8,16,32 --fp16
      reidctl convert trt osnet.onnx -o osnet.engine --print-trtexec
      reidctl convert trt osnet.onnx -o osnet.engine --bs 1,2,4,8 --opt-bs 4 --fp16
      reidctl convert trt aligned.onnx -o aligned.engine --outputs global_feat,local_feat
      reidctl convert trt osnet.onnx -o osnet.engine --with-trtexec --trtexec-args "--verbose"

    With --outputs, --print-trtexec writes the cut graph to <output stem>.cut.onnx, which the
    printed command reads.
    """
    sizes = list(bs)
    keep = [n.strip() for n in outputs.split(",") if n.strip()] if outputs else None
    common = dict(
        batch_sizes=sizes,
        opt_batch=opt_bs,
        fp16=fp16,
        workspace_mib=workspace_mib,
        timing_cache=timing_cache,
        builder_flags=builder_flags,
        trtexec_args=trtexec_args,
        outputs=keep,
        force=force,
    )
    if print_trtexec:
        click.echo(shlex.join(trtexec_for_onnx(onnx_file, output, **common)))  # type: ignore[arg-type]
        return
    side = engine_from_onnx(onnx_file, output, use_trtexec=with_trtexec, **common)  # type: ignore[arg-type]
    conv = side["conversion"]
    click.echo(f"wrote {output} ({conv['precision']}, profile {conv['profile']})")
