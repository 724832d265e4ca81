"""Model facts for files with or without a reidctl sidecar.

A model exported by ``reidctl export`` or converted by ``reidctl convert`` has a sidecar
(``<model file>.json``, docs/formats.md section 1); an ONNX written by them also carries
the same facts in its ``metadata_props`` (key ``reidctl.facts``, docs/formats.md section
1.1), so a model file copied without its sidecar still knows its preprocessing, outputs,
feature and normalisation. Where both exist they must agree. An ONNX exported by another
tool has neither: its facts then come from the graph (input and outputs by name, the batch
dimension) and from the preprocessed set's ``meta.json`` (the preprocessing the tensors went
through), or from ``reidctl adopt``, which writes both for it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from reidctl.artifacts import ModelSidecar
from reidctl.artifacts.common import check_format
from reidctl.artifacts.sidecar import facts_from_dict, facts_to_dict, sidecar_path
from reidctl.errors import FormatError
from reidctl.io import atomic_path
from reidctl.specs import ModelFacts, PreprocessSpec, TensorSpec

#: the ``metadata_props`` key of an ONNX that holds the model facts (JSON)
FACTS_KEY = "reidctl.facts"
#: the format tag inside that JSON
FACTS_FORMAT = "reidctl.facts/1"
FACTS_FIX = "re-export the model, or describe it again with `reidctl adopt MODEL_FILE ...`"
#: where :func:`model_facts` found the facts
FACT_SOURCES = ("sidecar", "metadata", "derived")


def facts_json(facts: ModelFacts) -> str:
    """The ``reidctl.facts`` value: the core facts (model, preprocess, inputs, outputs,
    feature, l2_normalize) and the format tag, as compact JSON with sorted keys. No paths,
    hashes or versions, so that re-exporting the same model gives the same bytes."""
    d = facts_to_dict(replace(facts, extra={}))
    d["format"] = FACTS_FORMAT
    return json.dumps(d, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def set_onnx_facts(proto: Any, facts: ModelFacts) -> None:
    """Store ``facts`` in the ``metadata_props`` of the ONNX ``ModelProto`` (in memory).

    Replaces an earlier ``reidctl.facts`` entry; other entries are left as they are. Every
    stage that writes an ONNX calls this before saving (export, ``convert int8``, ``adopt``).
    """
    value = facts_json(facts)
    for prop in proto.metadata_props:
        if prop.key == FACTS_KEY:
            prop.value = value
            return
    entry = proto.metadata_props.add()
    entry.key, entry.value = FACTS_KEY, value


def write_onnx_facts(onnx_file: str | os.PathLike[str], facts: ModelFacts) -> None:
    """Store ``facts`` in the ONNX file ``onnx_file`` (rewritten atomically, in place)."""
    import onnx

    proto = _load_onnx(onnx_file)
    set_onnx_facts(proto, facts)
    with atomic_path(onnx_file) as tmp:
        onnx.save(proto, str(tmp))


def _load_onnx(path: str | os.PathLike[str]) -> Any:
    import onnx

    try:
        return onnx.load(str(path), load_external_data=False)
    except FileNotFoundError as e:
        raise FormatError(f"ONNX model not found: {path}") from e
    except Exception as e:  # protobuf decode errors have no common public base class
        raise FormatError(f"cannot read the ONNX file {path}: {e}") from e


def facts_from_proto(proto: Any, source: str = "ONNX metadata") -> ModelFacts | None:
    """The facts stored in a ``ModelProto``'s ``reidctl.facts`` entry, or ``None``."""
    for prop in proto.metadata_props:
        if prop.key != FACTS_KEY:
            continue
        try:
            d = json.loads(prop.value)
        except json.JSONDecodeError as e:
            raise FormatError(f"{source} {FACTS_KEY} is not valid JSON ({e}); {FACTS_FIX}") from e
        if not isinstance(d, dict):
            raise FormatError(f"{source} {FACTS_KEY} must hold a JSON object; {FACTS_FIX}")
        check_format(d, source, FACTS_FORMAT, FACTS_FIX)
        d.pop("format")
        return replace(facts_from_dict(d, source), extra={})
    return None


def onnx_metadata_facts(model_file: str | os.PathLike[str]) -> ModelFacts | None:
    """The facts in an ONNX file's metadata, or ``None`` (no entry, or not an ONNX file)."""
    if Path(model_file).suffix.lower() != ".onnx" or not Path(model_file).is_file():
        return None
    return facts_from_proto(_load_onnx(model_file), f"ONNX metadata of {model_file}")


def facts_differences(a: ModelFacts, b: ModelFacts) -> list[str]:
    """Names of the fields in which two sets of facts differ (``preprocess.mean``, ...)."""
    da, db = facts_to_dict(replace(a, extra={})), facts_to_dict(replace(b, extra={}))
    out = []
    for key in sorted(set(da) | set(db)):
        va, vb = da.get(key), db.get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += [f"{key}.{k}" for k in sorted(set(va) | set(vb)) if va.get(k) != vb.get(k)]
        elif va != vb:
            out.append(key)
    return out


def check_facts_agree(sidecar: ModelSidecar, stored: ModelFacts, model_file: Any) -> None:
    """:class:`FormatError` naming the differing fields when a sidecar and the facts stored
    in its model file disagree."""
    diff = facts_differences(sidecar.facts, stored)
    if diff:
        raise FormatError(
            f"the sidecar {sidecar_path(model_file)} and the {FACTS_KEY} metadata of "
            f"{model_file} disagree on {', '.join(diff)}: the model was changed or re-exported "
            "without its sidecar; write both again (`reidctl adopt` or re-export), or delete "
            "the stale sidecar"
        )


def _metadata_sidecar(model_file: str | os.PathLike[str], facts: ModelFacts) -> ModelSidecar:
    batch = facts.inputs[0].shape[0] if facts.inputs and facts.inputs[0].shape else None
    return ModelSidecar(
        facts,
        {
            "static_batch": batch if isinstance(batch, int) else None,
            "facts_source": f"ONNX metadata ({FACTS_KEY}); no sidecar",
            "model_file": Path(model_file).name,
        },
    )


def stored_facts(model_file: str | os.PathLike[str]) -> tuple[ModelSidecar | None, str | None]:
    """``(facts, source)``: the sidecar (``"sidecar"``), else the ONNX metadata
    (``"metadata"``), else ``(None, None)``. When both exist they must agree
    (:func:`check_facts_agree`); a malformed sidecar or entry is a :class:`FormatError`."""
    side = ModelSidecar.load_or_none(model_file)
    try:
        meta = onnx_metadata_facts(model_file)
    except FormatError:
        if side is None:
            raise
        meta = None  # an unreadable model file: its runner reports it
    if side is not None:
        if meta is not None:
            check_facts_agree(side, meta, model_file)
        return side, "sidecar"
    if meta is not None:
        return _metadata_sidecar(model_file, meta), "metadata"
    return None, None


def sidecar_or_none(model_file: str | os.PathLike[str]) -> ModelSidecar | None:
    """The model's stored facts: its sidecar, else the facts in its ONNX metadata (as a
    sidecar record with ``facts_source`` saying so), else ``None``. A malformed sidecar or
    metadata entry, or a sidecar that disagrees with the metadata, is an error."""
    return stored_facts(model_file)[0]


def onnx_io_specs(path: str | os.PathLike[str]) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Graph inputs (initializers excluded) and outputs of an ONNX file, dynamic dims named."""
    return proto_io_specs(_load_onnx(path))


def proto_io_specs(proto: Any) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """:func:`onnx_io_specs` of a loaded ``ModelProto``."""
    from onnx.helper import tensor_dtype_to_np_dtype

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
    """Facts of an ONNX to be converted: its sidecar, else its metadata, else derived from
    its graph."""
    return model_facts(onnx_file)[0]


def model_facts(model_file: str | os.PathLike[str]) -> tuple[ModelSidecar, str]:
    """``(facts, source)`` of a model file, ``source`` one of :data:`FACT_SOURCES`: the
    sidecar, else the ONNX metadata, else (ONNX only) derived from the graph with the
    default preprocessing. A model file of another kind without a sidecar is a
    :class:`FormatError` pointing at ``reidctl adopt``."""
    side, source = stored_facts(model_file)
    if side is not None and source is not None:
        return side, source
    if not Path(model_file).is_file():
        raise FormatError(f"model file not found: {model_file}")
    if Path(model_file).suffix.lower() != ".onnx":
        raise FormatError(
            f"{model_file} has no sidecar ({sidecar_path(model_file).name}); describe its "
            "preprocessing and outputs once with `reidctl adopt MODEL_FILE --size HxW --mean "
            "... --std ...`"
        )
    inputs, outputs = onnx_io_specs(model_file)
    return derive_facts(model_file, inputs, outputs), "derived"
