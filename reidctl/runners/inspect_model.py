"""``reidctl inspect MODEL_FILE``: a model file's inputs, outputs and facts.

:func:`inspect_model` returns a JSON-ready report (in the spirit of ``polygraphy inspect
model``): the graph's inputs and outputs with their dynamic axes, the opset and producer
(ONNX), and the model facts with where they came from: the sidecar, the ONNX metadata
(``reidctl.facts``), or derived from the graph with the default preprocessing (then
``reidctl adopt`` should describe the model). A sidecar that disagrees with the metadata is
reported, not raised. :func:`render_model_report` turns the report into text lines.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from reidctl.artifacts import ModelSidecar
from reidctl.artifacts.sidecar import facts_to_dict
from reidctl.specs import TensorSpec

#: model file suffixes :func:`inspect_model` reads
MODEL_SUFFIXES = (".onnx", ".xml", ".engine", ".plan", ".om")


def is_model_file(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a model file by its suffix (the inspect dispatch's test)."""
    return Path(path).suffix.lower() in MODEL_SUFFIXES


def _tensor(t: TensorSpec) -> dict[str, Any]:
    return {"name": t.name, "shape": list(t.shape), "dtype": t.dtype}


def _dynamic_axes(specs: list[TensorSpec]) -> dict[str, dict[str, str]]:
    return {
        t.name: {str(i): d for i, d in enumerate(t.shape) if isinstance(d, str)}
        for t in specs
        if any(isinstance(d, str) for d in t.shape)
    }


def inspect_model(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Report on the model file ``path`` (ONNX, OpenVINO IR, or an engine with a sidecar).

    Keys: ``file``, ``kind``, ``size_bytes``, ``inputs`` / ``outputs`` (name, shape with
    dynamic dims as names, dtype; from the graph, else from the facts), ``dynamic_axes``
    (``{tensor: {axis: name}}``), ``opset`` (``{domain: version}``, ONNX), ``ir_version``,
    ``producer``, ``metadata`` (other ONNX metadata keys), ``facts`` (the model facts or
    ``None``), ``facts_source`` (``sidecar`` / ``metadata`` / ``derived`` / ``None``),
    ``sidecar`` and ``metadata_facts`` (whether each exists) and ``facts_differ`` (fields
    on which the two disagree).
    """
    from reidctl.errors import FormatError
    from reidctl.runners.facts import (
        FACTS_KEY,
        _load_onnx,
        derive_facts,
        facts_differences,
        facts_from_proto,
        proto_io_specs,
    )

    path = Path(path)
    if not path.is_file():
        raise FormatError(f"model file not found: {path}")
    suffix = path.suffix.lower()
    side = ModelSidecar.load_or_none(path)
    report: dict[str, Any] = {
        "file": str(path),
        "kind": {".onnx": "onnx", ".xml": "openvino"}.get(suffix, suffix.lstrip(".")),
        "size_bytes": path.stat().st_size,
        "opset": None,
        "ir_version": None,
        "producer": None,
        "metadata": {},
        "sidecar": side is not None,
        "metadata_facts": False,
        "facts_differ": [],
    }
    inputs: list[TensorSpec] | None = None
    outputs: list[TensorSpec] | None = None
    meta = None
    if suffix == ".onnx":
        proto = _load_onnx(path)
        inputs, outputs = proto_io_specs(proto)
        report["opset"] = {(o.domain or "ai.onnx"): int(o.version) for o in proto.opset_import}
        report["ir_version"] = int(proto.ir_version)
        producer = f"{proto.producer_name} {proto.producer_version}".strip()
        report["producer"] = producer or None
        report["metadata"] = {p.key: p.value for p in proto.metadata_props if p.key != FACTS_KEY}
        meta = facts_from_proto(proto, f"ONNX metadata of {path}")
        report["metadata_facts"] = meta is not None
    elif suffix == ".xml":
        from reidctl.runners.adopt import ir_io_specs

        inputs, outputs = ir_io_specs(path)
    facts: ModelSidecar | None = side
    source = "sidecar" if side is not None else None
    if side is not None and meta is not None:
        report["facts_differ"] = facts_differences(side.facts, meta)
    if facts is None and meta is not None:
        facts, source = ModelSidecar(meta), "metadata"
    if facts is None and inputs is not None and outputs is not None and inputs:
        facts, source = derive_facts(path, inputs, outputs), "derived"
    if inputs is None and facts is not None:
        inputs, outputs = list(facts.inputs), list(facts.outputs)
    report["inputs"] = [_tensor(t) for t in inputs or []]
    report["outputs"] = [_tensor(t) for t in outputs or []]
    report["dynamic_axes"] = _dynamic_axes(list(inputs or []) + list(outputs or []))
    report["facts"] = None if facts is None else facts_to_dict(facts.facts)
    report["facts_source"] = source
    return report


def _tensor_line(t: dict[str, Any], mark: str = "") -> str:
    return f"  {t['name']:<12} {t['shape']} {t['dtype']}{mark}"


def render_model_report(r: dict[str, Any]) -> list[str]:
    """The text lines of an :func:`inspect_model` report."""
    lines = [f"file       {r['file']} ({r['kind']}, {r['size_bytes']:,} bytes)"]
    if r["opset"]:
        opsets = ", ".join(f"{d} {v}" for d, v in sorted(r["opset"].items()))
        lines.append(f"opset      {opsets} (IR version {r['ir_version']})")
    if r["producer"]:
        lines.append(f"producer   {r['producer']}")
    facts = r["facts"] or {}
    lines.append("inputs")
    lines += [_tensor_line(t) for t in r["inputs"]]
    lines.append("outputs")
    feature = facts.get("feature")
    lines += [_tensor_line(t, "  <- feature" if t["name"] == feature else "") for t in r["outputs"]]
    if r["dynamic_axes"]:
        axes = "; ".join(
            f"{n}: " + ", ".join(f"axis {a} {d!r}" for a, d in sorted(ax.items()))
            for n, ax in sorted(r["dynamic_axes"].items())
        )
        lines.append(f"dynamic    {axes}")
    else:
        lines.append("dynamic    none (static shapes)")
    if r["metadata"]:
        groups: dict[str, int] = {}
        for k in r["metadata"]:
            prefix = k.split(".")[0] + ".*" if "." in k else k
            groups[prefix] = groups.get(prefix, 0) + 1
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(groups.items()))
        lines.append(f"metadata   {len(r['metadata'])} other entries ({kinds}); --json lists them")
    where = {
        "sidecar": "the sidecar "
        + Path(r["file"]).name
        + ".json"
        + (" (the ONNX metadata agrees)" if r["metadata_facts"] and not r["facts_differ"] else ""),
        "metadata": "the ONNX metadata (reidctl.facts); no sidecar",
        "derived": "derived from the graph, default preprocessing: describe the model with "
        "`reidctl adopt`",
    }
    if not facts:
        lines.append("facts      none: no sidecar; describe the model with `reidctl adopt`")
        return lines
    lines.append(f"facts      from {where[r['facts_source']]}")
    if r["facts_differ"]:
        lines.append(f"           SIDECAR AND METADATA DISAGREE on {', '.join(r['facts_differ'])}")
    p = facts["preprocess"]
    lines.append(f"  model          {facts['model']}")
    lines.append(
        f"  preprocess     {p['height']}x{p['width']} {p['color'].upper()} {p['interpolation']}, "
        f"mean {p['mean']}, std {p['std']}"
        + (", normalised in the graph (uint8 input)" if p.get("normalize_in_graph") else "")
    )
    lines.append(f"  feature        {facts['feature']}")
    lines.append(f"  l2_normalize   {str(facts['l2_normalize']).lower()}")
    return lines
