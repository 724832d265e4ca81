"""Graph facts shared by the TensorRT and ATC converters: every input's shape, and cutting
an ONNX graph down to some of its outputs (``--outputs``).

A camera-aware model has two inputs, ``image`` ``[batch, 3, H, W]`` float32 and ``camera``
``[batch]`` int64; both get the batch of the profile or gear. Every input whose first
dimension is dynamic is batched; the other dimensions must be fixed.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reidctl.errors import FormatError, InputError, UnknownNameError


@dataclass(frozen=True)
class GraphInput:
    """One model input: ``dims`` without the batch axis; ``static_batch`` when axis 0 is
    fixed (``None`` when it is dynamic)."""

    name: str
    dims: tuple[int, ...]
    static_batch: int | None
    dtype: str

    def shape(self, batch: int | str) -> list[int | str]:
        """The full shape at ``batch`` (a fixed input keeps its own batch)."""
        return [self.static_batch if self.static_batch else batch, *self.dims]


def graph_inputs(facts: dict[str, Any]) -> list[GraphInput]:
    """The inputs of a model's facts (sidecar), in order.

    Raises :class:`FormatError` for a model without inputs, a non-batch dynamic dimension,
    or inputs that disagree on whether the batch is dynamic.
    """
    inputs = facts.get("inputs") or []
    if not inputs:
        raise FormatError("the model facts list no inputs")
    out = []
    for t in inputs:
        shape = list(t["shape"])
        if not shape:
            raise FormatError(f"input {t['name']!r} is a scalar; it has no batch axis")
        if not all(isinstance(d, int) and d > 0 for d in shape[1:]):
            raise FormatError(f"input {t['name']!r} has dynamic non-batch dims {shape}")
        static = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else None
        out.append(GraphInput(str(t["name"]), tuple(shape[1:]), static, str(t.get("dtype"))))
    if len({i.static_batch is None for i in out}) > 1:
        raise FormatError(
            "some inputs have a dynamic batch and others a fixed one: "
            + ", ".join(f"{i.name} {i.shape('batch')}" for i in out)
        )
    return out


def static_batch_of(inputs: Sequence[GraphInput]) -> int | None:
    """The fixed batch of the inputs, ``None`` when it is dynamic."""
    return inputs[0].static_batch


def select_outputs(facts: dict[str, Any], names: Sequence[str] | None) -> list[str]:
    """Check ``names`` against the facts' outputs; return them in graph order.

    ``None`` keeps every output. The retrieval feature must stay: dropping it raises
    :class:`InputError`; an unknown name raises :class:`UnknownNameError`.
    """
    have = [o["name"] for o in facts.get("outputs", [])]
    if not names:
        return have
    for n in names:
        if n not in have:
            raise UnknownNameError("output", n, have)
    feature = facts.get("feature")
    if feature and feature not in names:
        raise InputError(
            f"--outputs must keep the retrieval feature {feature!r} (outputs: {', '.join(have)})"
        )
    return [n for n in have if n in set(names)]


def with_outputs(facts: dict[str, Any], names: Sequence[str]) -> dict[str, Any]:
    """``facts`` listing only the outputs ``names``."""
    keep = set(names)
    return {**facts, "outputs": [o for o in facts["outputs"] if o["name"] in keep]}


def cut_outputs(
    onnx_file: str | os.PathLike[str], names: Sequence[str], dst: str | os.PathLike[str]
) -> Path:
    """Write to ``dst`` the graph of ``onnx_file`` computing only the outputs ``names``.

    Nodes and initializers that only feed the dropped outputs go (e.g. a 2048 x 751
    classifier); inputs, names and the dynamic batch axis stay. Uses ``onnx.utils.Extractor``.
    """
    import onnx
    import onnx.utils

    try:
        model = onnx.load(str(onnx_file))
    except Exception as e:  # protobuf decode errors have no common public base class
        raise FormatError(f"cannot read the ONNX file {onnx_file}: {e}") from e
    inits = {i.name for i in model.graph.initializer}
    inputs = [i.name for i in model.graph.input if i.name not in inits]
    have = [o.name for o in model.graph.output]
    for n in names:
        if n not in have:
            raise UnknownNameError("output", n, have)
    cut = onnx.utils.Extractor(model).extract_model(inputs, [n for n in have if n in names])
    cut.ir_version, cut.producer_name = model.ir_version, model.producer_name
    del cut.opset_import[:]
    cut.opset_import.extend(model.opset_import)
    # the extractor declares inputs and outputs from inferred value infos: keep the originals
    orig_in = {i.name: i for i in model.graph.input}
    orig_out = {o.name: o for o in model.graph.output}
    for seq, orig in ((cut.graph.input, orig_in), (cut.graph.output, orig_out)):
        for v in seq:
            if v.name in orig:
                v.CopyFrom(orig[v.name])
    onnx.checker.check_model(cut)
    onnx.save(cut, str(dst))
    return Path(dst)
