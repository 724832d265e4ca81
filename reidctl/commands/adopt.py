"""``reidctl adopt MODEL_FILE``: write the facts of a model made elsewhere."""

from __future__ import annotations

from pathlib import Path

import click

from reidctl.commands._options import force_option


@click.command()
@click.argument("model_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--size", help="Input size HEIGHTxWIDTH in pixels.  [default: the graph's, else 256x128]"
)
@click.option(
    "--mean",
    help="Per-channel mean on the [0, 1] scale, in the colour order.  [default: ImageNet]",
)
@click.option("--std", help="Per-channel std on the [0, 1] scale.  [default: ImageNet]")
@click.option(
    "--interp",
    type=click.Choice(["bilinear", "bicubic", "area", "nearest"]),
    help="Resize interpolation (OpenCV).  [default: bilinear]",
)
@click.option("--rgb/--bgr", "rgb", default=None, help="Channel order.  [default: rgb]")
@click.option("--feature", help="Output used as the retrieval feature.  [default: the first]")
@click.option(
    "--normalize/--no-normalize",
    default=False,
    show_default=True,
    help="Compare features after L2 normalisation (cosine; most ReID models).",
)
@click.option("--name", help="Model name recorded in the facts.  [default: the file's stem]")
@force_option("Replace an existing sidecar.")
def adopt(
    model_file: Path,
    size: str | None,
    mean: str | None,
    std: str | None,
    interp: str | None,
    rgb: bool | None,
    feature: str | None,
    normalize: bool,
    name: str | None,
    force: bool,
) -> None:
    """Describe MODEL_FILE (an ONNX or OpenVINO IR made by another tool) once: write its
    sidecar MODEL_FILE.json and, for an ONNX, the same facts into its metadata
    (`reidctl.facts`; the file is rewritten atomically). Then `preprocess --model-config`,
    `infer`, `eval` and `reidctl.Embedder` need no preprocessing flags for it.

    Inputs and outputs are read from the model. Mean and std are on the [0, 1] scale: a
    model taking BGR 0..255 pixels wants --bgr --mean 0,0,0 --std 0.00392156862745098 x3
    (1/255).

    \b
    Examples:
      reidctl adopt other_exporter.onnx --size 256x128 --feature fc1 --normalize
      reidctl adopt person-reidentification-retail-0288.xml --bgr --mean 0,0,0 \\
          --std 0.00392156862745098,0.00392156862745098,0.00392156862745098 --normalize
    """
    from reidctl.preprocess.config import parse_size, resolve_preprocess
    from reidctl.runners.adopt import adopt_model, model_io_specs

    if size is None:
        inputs, _ = model_io_specs(model_file)
        hw = inputs[0].shape[2:] if inputs and len(inputs[0].shape) == 4 else ()
        if all(isinstance(d, int) for d in hw) and hw:
            size = f"{hw[0]}x{hw[1]}"
    spec = resolve_preprocess(
        size=parse_size(size) if size else None,
        mean=mean,
        std=std,
        interpolation=interp,
        color=None if rgb is None else ("rgb" if rgb else "bgr"),
    )
    side = adopt_model(
        model_file, spec, feature=feature, normalize=normalize, name=name, force=force
    )
    p = side.preprocess
    where = " and its ONNX metadata" if model_file.suffix.lower() == ".onnx" else ""
    click.echo(f"wrote {model_file}.json{where}")
    for t in side.inputs:
        click.echo(f"  input   {t.name} {list(t.shape)} {t.dtype}")
    for t in side.outputs:
        mark = "  <- feature" if t.name == side.feature else ""
        click.echo(f"  output  {t.name} {list(t.shape)} {t.dtype}{mark}")
    click.echo(
        f"  preprocess {p.height}x{p.width} {p.color.upper()} {p.interpolation}, mean "
        f"{list(p.mean)}, std {list(p.std)}; l2_normalize {str(side.l2_normalize).lower()}"
    )
