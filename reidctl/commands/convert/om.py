"""``reidctl convert om``: the click command over :mod:`reidctl.convert.om`."""

from __future__ import annotations

from pathlib import Path

import click

from reidctl.commands._options import batch_sizes_option, force_option
from reidctl.convert.om import _om_paths, om_from_onnx


@click.command("om")
@click.argument("onnx_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Output prefix: writes <output>.om and <output>.om.json ('.om' may be given).",
)
@click.option(
    "--soc",
    required=True,
    help="Ascend SoC version ('Ascend' + the Name of `npu-smi info`), e.g. Ascend310P3, "
    "Ascend310B1, Ascend910B3; a name ATC does not know is refused with the list.",
)
@batch_sizes_option(
    "1,4,8,16,32", "Batch gears (--dynamic_batch_size), or the one batch with --static.", dest="bs"
)
@click.option("--static", is_flag=True, help="Build one fixed batch size instead of gears.")
@click.option(
    "--outputs",
    default=None,
    help="Comma-separated outputs to keep (e.g. global_feat,local_feat); the graph is cut "
    "before ATC reads it. The retrieval feature must stay. [default: all]",
)
@click.option(
    "--atc-args",
    default=None,
    help='Extra atc options (one quoted string), e.g. "--precision_mode=allow_fp32_to_fp16 '
    '--insert_op_conf=aipp.cfg --log=info".',
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="Print the atc command and exit (with --outputs, writes the cut graph it reads).",
)
@force_option("Overwrite an existing .om and sidecar.")
def command(
    onnx_file: Path,
    output: Path,
    soc: str,
    bs: tuple[int, ...],
    static: bool,
    outputs: str | None,
    atc_args: str | None,
    dry_run: bool,
    force: bool,
) -> None:
    """Convert ONNX_FILE to an Ascend OM model with ATC (needs `atc` on PATH).

    The command is built from the graph: input shape with batch -1 and the --bs gears
    (or one batch with --static), --out_nodes from the graph's named outputs.

    \b
    Examples:
      reidctl convert om osnet.onnx -o osnet --soc Ascend310P3 --bs 1,4,8,16,32
      reidctl convert om osnet.onnx -o osnet_bs16 --soc Ascend310P3 --static --bs 16 --dry-run
      reidctl convert om aligned.onnx -o aligned --soc Ascend310B1 --outputs global_feat \\
          --atc-args "--precision_mode=allow_fp32_to_fp16 --log=info"
    """
    side = om_from_onnx(
        onnx_file,
        output,
        soc=soc,
        batch_sizes=list(bs),
        static=static,
        dry_run=dry_run,
        force=force,
        outputs=[n.strip() for n in outputs.split(",") if n.strip()] if outputs else None,
        atc_args=atc_args,
    )
    if dry_run:
        click.echo(side["conversion"]["command"])
        return
    click.echo(f"wrote {_om_paths(output)[1]} (batch sizes {side['conversion']['batch_sizes']})")
