"""``reidctl inspect FILE``: what a file is and what reidctl can do with it.

The file type is chosen by :data:`INSPECTORS`, a table of ``(kind, matches, describe,
render)`` tried in order: ``matches(path)`` looks at the suffix and the first bytes,
``describe(path, allow_pickle)`` returns JSON-ready facts, ``render(report)`` the text lines.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import click

from reidctl.errors import InputError

CHECKPOINT_SUFFIXES = (".pth", ".pt", ".ckpt", ".tar", ".safetensors")


class Inspector(NamedTuple):
    kind: str
    matches: Callable[[Path], bool]
    describe: Callable[[Path, bool], dict[str, Any]]
    render: Callable[[dict[str, Any]], list[str]]


def _is_model(path: Path) -> bool:
    from reidctl.runners.inspect_model import is_model_file

    return is_model_file(path)


def _describe_model(path: Path, allow_pickle: bool) -> dict[str, Any]:
    from reidctl.runners.inspect_model import inspect_model

    return inspect_model(path)


def _render_model(report: dict[str, Any]) -> list[str]:
    from reidctl.runners.inspect_model import render_model_report

    return render_model_report(report)


def _is_checkpoint(path: Path) -> bool:
    from reidctl.models.checkpoints import sniff_format

    if sniff_format(path) is not None:
        return True
    name = path.name.lower()
    # torchreid names its checkpoints model.pth.tar-60
    return name.endswith(CHECKPOINT_SUFFIXES) or ".pth.tar-" in name


def _describe_checkpoint(path: Path, allow_pickle: bool) -> dict[str, Any]:
    from reidctl.models.checkpoints import describe_checkpoint

    return describe_checkpoint(path, allow_pickle=allow_pickle)


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n} bytes"


def _counts(counts: dict[str, int], limit: int = 8) -> str:
    items = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    text = ", ".join(f"{k} ({v})" for k, v in items[:limit])
    return text + (f", ... (+{len(items) - limit} more)" if len(items) > limit else "")


def _fit_line(fit: dict[str, Any]) -> str:
    facts = ", ".join(f"{k.removeprefix('num_')} {v}" for k, v in sorted(fit["facts"].items()))
    if fit["fits"]:
        head = "fits"
    elif fit.get("looks_like"):
        head = f"looks like (family check), {fit['coverage']:.0%} of the tensors fit"
    else:
        unused = fit["checkpoint_tensors"] - fit["matched"]
        head = (
            f"no ({fit['matched']} of its {fit['model_tensors']} tensors found, "
            f"{unused} of the file's not used)"
        )
    return f"{fit['model']}: {head}" + (f"; {facts}" if facts else "")


def _render_checkpoint(r: dict[str, Any]) -> list[str]:
    lines = [
        f"file       {r['file']} ({_size(r['size_bytes'])})",
        f"format     {r['format'] or 'unknown'}: {r['format_description']}",
    ]
    safe = r["safe_load"]
    if not safe["ok"]:
        lines.append(f"safe load  REFUSED: the file calls {safe['refused']} while it is read")
        lines.append("           (nothing was run; --allow-pickle would run it)")
        return lines
    lines.append(f"layout     {r['layout']}: {r['layout_description']}")
    if r["metadata"]:
        meta = ", ".join(f"{k}={v}" for k, v in r["metadata"].items())
        lines.append(f"metadata   {meta}")
    lines.append(f"tensors    {r['tensors']} ({r['parameters']:,} values)")
    if r["wrapper_prefixes"]:
        lines.append(f"stripped   {_counts(r['wrapper_prefixes'])}")
    lines.append(f"prefixes   {_counts(r['key_prefixes'])}")
    if not r["fits"]:
        lines.append("models     none of the registered models fits these keys")
    for i, fit in enumerate(r["fits"]):
        lines.append(("models     " if i == 0 else "           ") + _fit_line(fit))
    if safe.get("full_pickle"):
        lines.append("safe load  not tried: read as a full pickle (--allow-pickle)")
    elif safe["placeholders"]:
        names = ", ".join(safe["placeholders"])
        lines.append(f"safe load  ok; {len(safe['placeholders'])} globals kept as placeholders")
        lines.append(f"           (their classes are not imported): {names}")
    else:
        lines.append("safe load  ok: only tensors, containers and plain values")
    return lines


INSPECTORS: list[Inspector] = [
    Inspector("model", _is_model, _describe_model, _render_model),
    Inspector("checkpoint", _is_checkpoint, _describe_checkpoint, _render_checkpoint),
]


@click.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option(
    "--allow-pickle",
    is_flag=True,
    help="Read a checkpoint as a full pickle (can execute arbitrary code: trusted files only).",
)
def inspect(file: Path, as_json: bool, allow_pickle: bool) -> None:
    """Describe FILE: for a model file (.onnx, OpenVINO .xml, an engine with its sidecar),
    its inputs and outputs with their dynamic axes, opset and producer, and the model facts
    (preprocessing, feature, normalisation) with where they came from: the sidecar, the
    ONNX metadata, or derived from the graph.

    For a checkpoint (.pth, .ckpt, model.pth.tar-N, .safetensors): its format (zip, legacy,
    safetensors), its layout (torchreid, fast-reid, Lightning, AlignedReID, plain state
    dict), tensor count, key prefixes, the registered models its keys fit (with classes,
    cameras, stripes read from shapes) and what a safe load keeps as placeholders or refuses.

    \b
    Examples:
      reidctl inspect model.onnx
      reidctl inspect model.int8.onnx --json
      reidctl inspect ckpt.pth
      reidctl inspect model.pth.tar-60 --json
    """
    from reidctl.commands._common import echo_warnings

    if not file.is_file():
        raise InputError(f"file not found: {file}")
    inspector = next((i for i in INSPECTORS if i.matches(file)), None)
    if inspector is None:
        kinds = ", ".join(i.kind for i in INSPECTORS)
        raise InputError(f"{file}: not a file reidctl can inspect (known kinds: {kinds})")
    with echo_warnings():
        report = inspector.describe(file, allow_pickle)
    if as_json:
        click.echo(json.dumps(report, indent=2, sort_keys=True, default=str))
        return
    for line in inspector.render(report):
        click.echo(line)
