"""``reidctl inspect FILE``: what a file is and what reidctl can do with it.

The file type is chosen by :data:`INSPECTORS`, a table of ``(kind, matches, describe,
render)`` tried in order: ``matches(path)`` looks at the file, ``describe(path,
allow_pickle)`` returns JSON-ready facts, ``render(report)`` the text lines.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import click

from reidctl.errors import InputError


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


INSPECTORS: list[Inspector] = [
    Inspector("model", _is_model, _describe_model, _render_model),
]


@click.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def inspect(file: Path, as_json: bool) -> None:
    """Describe FILE: for a model file (.onnx, OpenVINO .xml, an engine with its sidecar),
    its inputs and outputs with their dynamic axes, opset and producer, and the model facts
    (preprocessing, feature, normalisation) with where they came from: the sidecar, the
    ONNX metadata, or derived from the graph.

    \b
    Examples:
      reidctl inspect model.onnx
      reidctl inspect model.int8.onnx --json
    """
    if not file.is_file():
        raise InputError(f"file not found: {file}")
    inspector = next((i for i in INSPECTORS if i.matches(file)), None)
    if inspector is None:
        kinds = ", ".join(i.kind for i in INSPECTORS)
        raise InputError(f"{file}: not a file reidctl can inspect (known kinds: {kinds})")
    report = inspector.describe(file, False)
    if as_json:
        click.echo(json.dumps(report, indent=2, sort_keys=True, default=str))
        return
    for line in inspector.render(report):
        click.echo(line)
