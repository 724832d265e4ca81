"""``reidctl models``: the registered models and their facts."""

from __future__ import annotations

import json

import click

from reidctl.commands._options import json_flag_option


@click.command()
@json_flag_option("Print the specs as JSON.")
def models(as_json: bool) -> None:
    """List the registered models: input size, outputs, feature and preprocessing.

    \b
    Example:
      reidctl models
      reidctl export osnet_x0_25 --weights ckpt.pth -o osnet.onnx
    """
    from reidctl.models.registry import get_spec, list_models

    specs = [get_spec(n) for n in list_models()]
    if as_json:
        click.echo(json.dumps([s.to_dict() for s in specs], indent=2))
        return
    for s in specs:
        p = s.preprocess
        outs = ", ".join(
            f"{o.name}[{', '.join(map(str, o.shape[1:]))}]"
            + ("?" if o.name in s.optional_outputs else "")
            for o in s.outputs
        )
        click.echo(click.style(s.name, bold=True) + f"  {s.description}")
        click.echo(f"    input     image [N, 3, {p.height}, {p.width}] float32")
        if s.camera_input is not None:
            click.echo(
                f"    input     camera [N] int64, 0-based SIE camera index "
                f"({s.num_cameras} cameras at random init; the checkpoint decides)"
            )
        note = "   (? = only when the checkpoint has it)" if s.optional_outputs else ""
        click.echo(f"    outputs   {outs}{note}")
        click.echo(
            f"    feature   {s.feature}, "
            + ("L2-normalised" if s.l2_normalize else "not normalised")
            + f" for retrieval; export tolerance {s.tolerance:g}"
        )
        click.echo(
            f"    preprocess {p.interpolation} resize, {p.color.upper()}, /255, "
            f"mean {list(p.mean)}, std {list(p.std)}"
        )
