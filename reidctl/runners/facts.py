"""Model facts for files with or without a reidctl sidecar.

A model exported by ``reidctl export`` or converted by ``reidctl convert`` has a sidecar
(``<model file>.json``, docs/formats.md section 1). An ONNX exported by another tool has
none: its facts then come from the graph (input and outputs by name, the batch dimension)
and from the preprocessed set's ``meta.json`` (the preprocessing the tensors went through).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from reidctl.artifacts import ModelSidecar
from reidctl.errors import FormatError
from reidctl.specs import ModelFacts, PreprocessSpec, TensorSpec


def sidecar_or_none(model_file: str | os.PathLike[str]) -> ModelSidecar | None:
    """The model's sidecar, or ``None`` when the file has none (a malformed one is an error)."""
    return ModelSidecar.load_or_none(model_file)


def onnx_io_specs(path: str | os.PathLike[str]) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Graph inputs (initializers excluded) and outputs of an ONNX file, dynamic dims named."""
    import onnx
    from onnx.helper import tensor_dtype_to_np_dtype

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # protobuf decode errors have no common public base class
        raise FormatError(f"cannot read the ONNX file {path}: {e}") from e

    def spec(v: Any) -> TensorSpec:
        t = v.type.tensor_type
        dims: list[int | str] = []
        for i, d in enumerate(t.shape.dim):
            if d.HasField("dim_value") and d.dim_value > 0:
                dims.append(int(d.dim_value))
            else:
                dims.append(d.dim_param or ("batch" if i == 0 else f"dim{i}"))
        return TensorSpec(v.name, tuple(dims), str(np.dtype(tensor_dtype_to_np_dtype(t.elem_type))))

    inits = {i.name for i in proto.graph.initializer}
    inputs = [spec(v) for v in proto.graph.input if v.name not in inits]
    return inputs, [spec(v) for v in proto.graph.output]


def derive_facts(
    model_file: str | os.PathLike[str],
    inputs: Sequence[TensorSpec],
    outputs: Sequence[TensorSpec],
    preprocess: Mapping[str, Any] | None = None,
    model: str | None = None,
) -> ModelSidecar:
    """Sidecar-shaped facts for a model without a sidecar.

    ``preprocess`` defaults to the ImageNet-normalised spec at the input's height and width;
    the feature is the first output and is assumed to be compared after L2 normalisation
    (cosine distance, the ReID convention). ``facts_source`` records that they were derived.
    """
    if preprocess is None:
        shape = inputs[0].shape
        hw = {"height": shape[-2], "width": shape[-1]}
        if not all(isinstance(v, int) for v in hw.values()):
            hw = {}
        spec = PreprocessSpec(**hw)  # type: ignore[arg-type]
    else:
        spec = PreprocessSpec.from_dict(dict(preprocess))
    batch = inputs[0].shape[0] if inputs and inputs[0].shape else None
    facts = ModelFacts(
        model=model or Path(model_file).stem,
        preprocess=spec,
        inputs=tuple(inputs),
        outputs=tuple(outputs),
        feature=outputs[0].name,
        l2_normalize=True,
    )
    return ModelSidecar(
        facts,
        {
            "weights": None,
            "static_batch": batch if isinstance(batch, int) else None,
            "facts_source": "derived from the model graph (no sidecar)",
            "model_file": Path(model_file).name,
        },
    )


def output_specs(outputs: Mapping[str, np.ndarray]) -> list[TensorSpec]:
    """Specs of inference results, the batch dimension named ``"batch"``."""
    return [TensorSpec(n, ("batch", *a.shape[1:]), str(a.dtype)) for n, a in outputs.items()]


def with_feature(facts: ModelSidecar, feature: str | None) -> ModelSidecar:
    """``facts`` with ``feature`` as the retrieval feature (checked against the outputs)."""
    return facts.with_feature(feature)


def source_facts(onnx_file: str | os.PathLike[str]) -> ModelSidecar:
    """Facts of an ONNX to be converted: its sidecar, else derived from its graph."""
    side = sidecar_or_none(onnx_file)
    if side is not None:
        return side
    if not Path(onnx_file).is_file():
        raise FormatError(f"ONNX model not found: {onnx_file}")
    inputs, outputs = onnx_io_specs(onnx_file)
    return derive_facts(onnx_file, inputs, outputs)
