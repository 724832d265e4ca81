"""ONNX -> float16 ONNX with onnxconverter-common, and its parity check.

``onnxconverter_common.float16.convert_float_to_float16`` turns float32 weights and
activations into float16. Operators whose float16 results overflow or lose the sums they
rest on stay in float32 (the converter wraps them in casts):

* ``LayerNormalization`` and ``Softmax`` (transformer blocks: sums of squares and of
  exponentials exceed float16's 65504);
* L2 normalisation in the graph: ``LpNormalization``, ``ReduceL2``, ``ReduceSumSquare``, and
  the ``Div`` by a norm with the nodes computing that norm (:func:`norm_division_nodes`:
  ``Div(x, Clip/Max/Add/Expand(ReduceL2(x)))`` as ``F.normalize`` exports,
  ``Div(x, Sqrt(ReduceSum(x*x)))``, and a decomposed layer norm's ``Div`` by
  ``Sqrt(ReduceMean(d*d) + eps)``);
* the converter's own block list (``DEFAULT_OP_BLOCK_LIST``: ops without float16 kernels).

``keep_io_types`` (default on) keeps the graph inputs and outputs float32, so the float16
model takes the same tensors as the float32 one.

The parity check runs both models on the same tensors (a preprocessed set, else synthetic)
and requires a mean row cosine of at least ``min_mean_cosine`` on every output. onnxruntime
on the CPU has float16 kernels for few operators: where it lacks one it inserts casts and
computes in float32. :func:`float16_kernel_census` counts, from onnxruntime's own profile of
one run, the nodes that computed with float16 inputs; when none did (this is the case for
convolutional networks on x86 CPUs) the check covers the rounding of weights and of the
float16 tensors between nodes, not float16 arithmetic, and a :class:`Float16NotRunWarning`
says so: check on a back end with float16 kernels (``ort-cuda``, TensorRT) then.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
import warnings
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from reidctl.artifacts import facts_from_dict, sidecar_path
from reidctl.convert.carry import carry_sidecar, model_facts
from reidctl.convert.parity import (
    check_parity,
    compare_runs,
    describe_feeds,
    run_feeds,
    validation_feeds,
)
from reidctl.errors import FormatError, InputError
from reidctl.io import refuse_existing
from reidctl.runners.facts import set_onnx_facts

DEFAULT_MIN_MEAN_COSINE = 0.999
#: operators kept in float32 besides the converter's own block list
FP32_OPS: tuple[str, ...] = (
    "LayerNormalization",
    "Softmax",
    "LpNormalization",
    "ReduceL2",
    "ReduceSumSquare",
)
# ops between a norm and the Div using it (eps clamps, broadcasts, casts)
_NORM_PASS = ("Clip", "Max", "Add", "Expand", "Unsqueeze", "Reshape", "Cast", "Identity")
# the reductions under a Sqrt that make it a norm (or a standard deviation)
_SQUARE_SUMS = ("ReduceSum", "ReduceMean", "ReduceSumSquare")
# where onnxruntime can run a float16 model and report what each node computed with
_CENSUS_PROVIDERS = {
    "ort": ["CPUExecutionProvider"],
    "ort-cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
}


# ops that move or reshape data without arithmetic (any element type runs the same way)
_DATA_MOVEMENT = (
    "Cast", "Concat", "Expand", "Flatten", "Gather", "Identity", "Reshape", "Shape", "Slice",
    "Split", "Squeeze", "Transpose", "Unsqueeze",
)  # fmt: skip


class Float16NotRunWarning(UserWarning):
    """The validating back end computed no node in float16 (it cast to float32)."""


def norm_division_nodes(model: Any) -> list[str]:
    """Names of the nodes of ``model`` (an ``onnx.ModelProto``) that divide by an L2 norm
    or a standard deviation, and of the nodes computing that divisor, in graph order
    (see the module docstring for the patterns)."""
    producer = {out: n for n in model.graph.node for out in n.output}
    chosen: set[str] = set()

    def is_square(node: Any) -> bool:
        if node.op_type == "Mul":
            return len(node.input) == 2 and node.input[0] == node.input[1]
        return node.op_type == "Pow"

    for div in model.graph.node:
        if div.op_type != "Div" or len(div.input) < 2:
            continue
        chain: list[Any] = []
        node = producer.get(div.input[1])
        while node is not None and node.op_type in _NORM_PASS and len(chain) < 8:
            chain.append(node)
            node = producer.get(node.input[0]) if node.input else None
        if node is None:
            continue
        found = False
        if node.op_type in ("ReduceL2", "LpNormalization"):
            chain.append(node)
            found = True
        elif node.op_type == "Sqrt":
            chain.append(node)
            src = producer.get(node.input[0])
            while src is not None and src.op_type in _NORM_PASS and len(chain) < 16:
                chain.append(src)
                src = producer.get(src.input[0]) if src.input else None
            if src is not None and src.op_type in _SQUARE_SUMS:
                chain.append(src)
                sq = producer.get(src.input[0]) if src.input else None
                if src.op_type == "ReduceSumSquare":
                    found = True
                elif sq is not None and is_square(sq):
                    chain.append(sq)
                    found = True
        if found:
            chosen.update(n.name for n in chain)
            chosen.add(div.name)
    return [n.name for n in model.graph.node if n.name in chosen]


def float16_kernel_census(
    model_file: str | os.PathLike[str],
    feeds: Mapping[str, np.ndarray],
    providers: Sequence[str] = ("CPUExecutionProvider",),
) -> dict[str, Any]:
    """What onnxruntime computed one run of ``model_file`` with, from its profile: nodes by
    the element types of their inputs, ``float16_compute_nodes`` (nodes with a float16 input
    that compute, i.e. other than casts, reshapes and the like) and their op types, and
    ``float16_data_movement_nodes`` (the others with a float16 input)."""
    import onnxruntime as ort

    from reidctl.runners.ort import make_session

    with tempfile.TemporaryDirectory(prefix="reidctl-fp16-profile-") as tmp:
        so = ort.SessionOptions()
        so.log_severity_level = 3
        so.enable_profiling = True
        so.profile_file_prefix = str(Path(tmp) / "profile")
        sess = make_session(ort, str(model_file), so, list(providers))
        sess.run(None, dict(feeds))
        events = json.loads(Path(sess.end_profiling()).read_text(encoding="utf-8"))
    by_type: Counter[str] = Counter()
    fp16_ops: Counter[str] = Counter()
    moved = 0
    for e in events:
        args = e.get("args") or {}
        if e.get("cat") != "Node" or "op_name" not in args:
            continue
        if not str(e.get("name", "")).endswith("_kernel_time"):
            continue
        types = sorted({k for d in args.get("input_type_shape", []) for k in d})
        by_type["+".join(types) or "none"] += 1
        if "float16" in types:
            if args["op_name"] in _DATA_MOVEMENT:
                moved += 1
            else:
                fp16_ops[args["op_name"]] += 1
    return {
        "providers": list(providers),
        "nodes_by_input_types": dict(sorted(by_type.items())),
        "float16_compute_nodes": sum(fp16_ops.values()),
        "float16_ops": dict(sorted(fp16_ops.items())),
        "float16_data_movement_nodes": moved,
    }


def convert_to_float16(
    model: Any, *, keep_io_types: bool = True, extra_fp32_ops: Sequence[str] = ()
) -> tuple[Any, dict[str, Any]]:
    """The float16 model and the facts of the conversion (blocked ops and nodes)."""
    from onnxconverter_common import __version__ as occ_version
    from onnxconverter_common import float16

    ops = sorted({*float16.DEFAULT_OP_BLOCK_LIST, *FP32_OPS, *extra_fp32_ops})
    nodes = norm_division_nodes(model)
    present = {n.op_type for n in model.graph.node}
    with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("always")
        converted = float16.convert_float_to_float16(
            model, keep_io_types=keep_io_types, op_block_list=ops, node_block_list=nodes
        )
    truncated = sum("truncated" in str(w.message) for w in caught)
    return converted, {
        "tool": f"onnxconverter_common.float16.convert_float_to_float16 {occ_version}",
        "keep_io_types": keep_io_types,
        "fp32_ops_in_graph": sorted(present & set(ops)),
        "fp32_norm_nodes": nodes,
        "values_clamped_to_float16_range": truncated,
    }


def _fp16_io(facts: dict[str, Any], keep_io_types: bool) -> dict[str, Any]:
    if keep_io_types:
        return {}

    def half(t: dict[str, Any]) -> dict[str, Any]:
        return {**t, "dtype": "float16"} if t.get("dtype") == "float32" else t

    return {key: [half(t) for t in facts[key]] for key in ("inputs", "outputs")}


def fp16_from_onnx(
    onnx_file: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    keep_io_types: bool = True,
    data: str | os.PathLike[str] | None = None,
    backend: str = "ort",
    min_mean_cosine: float = DEFAULT_MIN_MEAN_COSINE,
    extra_fp32_ops: Sequence[str] = (),
    force: bool = False,
) -> dict[str, Any]:
    """Convert ``onnx_file`` to float16 ``output`` (``.onnx``), check it, write it and its
    sidecar atomically.

    The float32 model runs on ``ort``, the float16 one on ``backend``, over ``data`` (a
    preprocessed set) or synthetic tensors; a mean row cosine below ``min_mean_cosine`` on
    any output raises :class:`ValidationError` and writes nothing. Returns the sidecar;
    ``conversion.validation`` holds the figures and, for onnxruntime back ends, the census
    of the kernels that ran (:func:`float16_kernel_census`).
    """
    import onnx

    onnx_file, output = Path(onnx_file), Path(output)
    if output.suffix != ".onnx":
        raise InputError(f"output {output} should end in .onnx (e.g. model.fp16.onnx)")
    if not 0 < min_mean_cosine <= 1:
        raise InputError(f"--min-cosine must lie in (0, 1], got {min_mean_cosine}")
    refuse_existing(output, sidecar_path(output), force=force)
    facts = model_facts(onnx_file)
    try:
        model = onnx.load(str(onnx_file))
    except Exception as e:  # protobuf decode errors have no common public base class
        raise FormatError(f"cannot read the ONNX file {onnx_file}: {e}") from e
    converted, conversion = convert_to_float16(
        model, keep_io_types=keep_io_types, extra_fp32_ops=extra_fp32_ops
    )
    feeds = validation_feeds(facts, data=data)
    feeds16 = feeds
    if not keep_io_types:
        feeds16 = [
            {k: v.astype(np.float16) if v.dtype == np.float32 else v for k, v in f.items()}
            for f in feeds
        ]
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{output.name}.", dir=output.parent) as tmp:
        staged = Path(tmp) / output.name
        # the facts of the float16 file (io dtypes as converted) travel inside it too
        fp16_facts = facts_from_dict({**facts, **_fp16_io(facts, keep_io_types)}, str(output))
        set_onnx_facts(converted, fp16_facts)
        onnx.save(converted, str(staged))
        names = [o["name"] for o in facts["outputs"]]
        ref = run_feeds("ort", onnx_file, feeds)
        got = run_feeds(backend, staged, feeds16)
        results = compare_runs(ref, got, names)
        census = None
        if backend in _CENSUS_PROVIDERS:
            census = float16_kernel_census(staged, feeds16[0], _CENSUS_PROVIDERS[backend])
        check_parity(results, f"the float16 model of {onnx_file}", mean_cosine=min_mean_cosine)
        note = None
        if census is not None and census["float16_compute_nodes"] == 0:
            note = (
                f"{backend} computed every node of the float16 model in float32 (it casts "
                "where it lacks float16 kernels): the check covers the float16 rounding of "
                "weights and tensors, not float16 arithmetic; check on a back end with "
                "float16 kernels (ort-cuda, trt) with `reidctl infer` + `reidctl compare`"
            )
            warnings.warn(note, Float16NotRunWarning, stacklevel=2)
        conversion = {
            "kind": "fp16",
            "precision": "fp16",
            **conversion,
            "validation": {
                "reference": "ort (the float32 ONNX)",
                "backend": backend,
                "min_mean_cosine": min_mean_cosine,
                **describe_feeds(feeds, data),
                "results": [r.to_dict() for r in results],
                "kernels": census,
                "note": note,
            },
        }
        side = carry_sidecar(
            facts, onnx_file, staged, conversion, model_name=output.name,
            **_fp16_io(facts, keep_io_types),
        )  # fmt: skip
        os.replace(sidecar_path(staged), sidecar_path(output))
        os.replace(staged, output)
    return side
