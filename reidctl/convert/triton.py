"""A Triton Inference Server model repository for a converted model.

Layout (Triton's model repository convention)::

    model_repository/<name>/config.pbtxt
    model_repository/<name>/1/model.onnx      (platform onnxruntime_onnx)
                            1/model.plan      (platform tensorrt_plan)
                            1/model.xml + model.bin  (backend openvino)

``config.pbtxt`` is complete (the OpenVINO backend does not auto-complete configurations):
``max_batch_size`` is ``max_batch`` when the model's batch axis is dynamic (capped by a
TensorRT engine's profile) and ``0`` for a static batch, whose ``dims`` then keep the batch;
``dims`` omit the batch axis otherwise, with ``-1`` for other dynamic axes; a ``[batch]``
input such as a camera index is ``dims: [1]`` with ``reshape { shape: [] }`` (Triton's way to
batch a 1-D tensor). ``dynamic_batching`` lists the preferred batch sizes, ``instance_group``
the instance count and kind, and ``parameters`` the model facts (``reidctl.*`` keys, string
values). The model's sidecar is carried beside the copied model file, so ``reidctl infer``
reads the repository's copy too. The repository entry is staged in a hidden folder and
renamed into place.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from reidctl import __version__
from reidctl.convert.carry import carry_sidecar, model_facts
from reidctl.errors import FormatError, InputError, OutputExistsError
from reidctl.io import make_temp_dir

DEFAULT_MAX_BATCH = 64
DEFAULT_QUEUE_DELAY_US = 100
CONFIG_NAME = "config.pbtxt"
VERSION = "1"

#: model file suffix -> (config key, value, file name in the version folder, default kind)
FORMATS: dict[str, tuple[str, str, str, str]] = {
    ".onnx": ("platform", "onnxruntime_onnx", "model.onnx", "KIND_AUTO"),
    ".plan": ("platform", "tensorrt_plan", "model.plan", "KIND_GPU"),
    ".engine": ("platform", "tensorrt_plan", "model.plan", "KIND_GPU"),
    ".xml": ("backend", "openvino", "model.xml", "KIND_CPU"),
}
KINDS = {"auto": "KIND_AUTO", "gpu": "KIND_GPU", "cpu": "KIND_CPU"}
DATA_TYPES = {
    "float32": "TYPE_FP32",
    "float16": "TYPE_FP16",
    "float64": "TYPE_FP64",
    "uint8": "TYPE_UINT8",
    "int8": "TYPE_INT8",
    "int16": "TYPE_INT16",
    "int32": "TYPE_INT32",
    "int64": "TYPE_INT64",
    "bool": "TYPE_BOOL",
}
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


def _q(text: str) -> str:
    """A protobuf text-format string literal."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def _ints(values: Sequence[int]) -> str:
    return "[ " + ", ".join(str(int(v)) for v in values) + " ]"


def tensor_entry(t: dict[str, Any], batched: bool) -> str:
    """One ``input``/``output`` entry; ``batched``: the first axis is Triton's batch."""
    dtype = str(t.get("dtype") or "float32")
    if dtype not in DATA_TYPES:
        raise FormatError(f"tensor {t['name']!r} has dtype {dtype}, which Triton cannot carry")
    shape = list(t["shape"])[1:] if batched else list(t["shape"])
    dims = [d if isinstance(d, int) and d > 0 else -1 for d in shape]
    lines = [f"    name: {_q(str(t['name']))}", f"    data_type: {DATA_TYPES[dtype]}"]
    if batched and not dims:
        lines += ["    dims: [ 1 ]", "    reshape: { shape: [ ] }"]
    else:
        lines.append(f"    dims: {_ints(dims)}")
    return "  {\n" + "\n".join(lines) + "\n  }"


def default_preferred(max_batch: int, batch_sizes: Sequence[int] | None = None) -> list[int]:
    """Preferred batch sizes: a converted engine's batch sizes (gears) above 1 up to
    ``max_batch``; else the powers of two from 4 below ``max_batch``, and ``max_batch``."""
    if batch_sizes:
        chosen = sorted({int(b) for b in batch_sizes if 1 < int(b) <= max_batch})
        if chosen:
            return chosen
    out, b = [], 4
    while b < max_batch:
        out.append(b)
        b *= 2
    return [*out, max_batch] if max_batch > 1 else [max_batch]


def model_parameters(facts: dict[str, Any]) -> dict[str, str]:
    """The facts a client needs, as Triton ``parameters`` (string values)."""
    params = {
        "reidctl.version": __version__,
        "reidctl.model": str(facts.get("model", "")),
        "reidctl.feature": str(facts.get("feature", "")),
        "reidctl.l2_normalize": "true" if facts.get("l2_normalize") else "false",
        "reidctl.preprocess": json.dumps(facts.get("preprocess", {}), sort_keys=True),
    }
    if facts.get("model_sha256"):
        params["reidctl.model_sha256"] = str(facts["model_sha256"])
    return params


def render_config(
    name: str,
    suffix: str,
    facts: dict[str, Any],
    *,
    max_batch: int,
    preferred: Sequence[int],
    instances: int,
    kind: str,
    queue_delay_us: int = DEFAULT_QUEUE_DELAY_US,
) -> str:
    """``config.pbtxt`` text for the model file type ``suffix`` and its ``facts``;
    ``max_batch`` 0 for a static batch (no dynamic batching then)."""
    key, value, filename, _ = FORMATS[suffix]
    batched = max_batch > 0
    parts = [
        f"name: {_q(name)}",
        f"{key}: {_q(value)}",
        f"default_model_filename: {_q(filename)}",
        f"max_batch_size: {int(max_batch)}",
        "input [\n" + ",\n".join(tensor_entry(t, batched) for t in facts["inputs"]) + "\n]",
        "output [\n" + ",\n".join(tensor_entry(t, batched) for t in facts["outputs"]) + "\n]",
    ]
    if batched:
        parts.append(
            "dynamic_batching {\n"
            f"  preferred_batch_size: {_ints(preferred)}\n"
            f"  max_queue_delay_microseconds: {int(queue_delay_us)}\n"
            "}"
        )
    parts.append(f"instance_group [\n  {{\n    count: {int(instances)}\n    kind: {kind}\n  }}\n]")
    for k, v in model_parameters(facts).items():
        parts.append(f"parameters {{\n  key: {_q(k)}\n  value: {{ string_value: {_q(v)} }}\n}}")
    return "\n".join(parts) + "\n"


def _batching(
    facts: dict[str, Any], suffix: str, max_batch: int | None
) -> tuple[int, list[int] | None]:
    """``max_batch_size`` and the engine's batch sizes (for preferred sizes)."""
    from reidctl.convert.graph import graph_inputs

    inputs = graph_inputs(facts)
    conversion = facts.get("conversion") or {}
    if inputs[0].static_batch:
        return 0, None
    limit = None
    if suffix in (".plan", ".engine") and conversion.get("profile"):
        limit = int(conversion["profile"]["max"])
    elif conversion.get("kind") == "atc" and conversion.get("batch_sizes"):
        limit = max(int(b) for b in conversion["batch_sizes"])
    if max_batch is None:
        max_batch = min(DEFAULT_MAX_BATCH, limit) if limit else DEFAULT_MAX_BATCH
    if max_batch < 1:
        raise InputError(f"--max-batch must be positive, got {max_batch}")
    if limit is not None and max_batch > limit:
        raise InputError(
            f"--max-batch {max_batch} exceeds the engine's largest batch {limit}; rebuild "
            f"it with a larger --bs or use --max-batch {limit}"
        )
    return max_batch, conversion.get("batch_sizes")


def triton_repository(
    model_file: str | os.PathLike[str],
    repository: str | os.PathLike[str],
    *,
    name: str | None = None,
    max_batch: int | None = None,
    instances: int = 2,
    kind: str | None = None,
    preferred: Sequence[int] | None = None,
    queue_delay_us: int = DEFAULT_QUEUE_DELAY_US,
    force: bool = False,
) -> dict[str, Any]:
    """Write ``<repository>/<name>/`` for ``model_file`` (.onnx, .plan/.engine or .xml).

    ``name`` defaults to the model file's stem. ``kind`` is ``auto``, ``gpu`` or ``cpu``
    (default: GPU for TensorRT, CPU for OpenVINO, which runs only there; auto for ONNX).
    Returns ``{"path", "config", "max_batch_size", "preferred_batch_size", "files"}``.
    """
    model_file = Path(model_file)
    suffix = model_file.suffix.lower()
    if suffix not in FORMATS:
        raise InputError(
            f"Triton serves {', '.join(sorted(FORMATS))} model files; got {model_file} "
            "(convert it first: reidctl convert trt|openvino)"
        )
    facts = model_facts(model_file)
    name = name or model_file.stem.replace(".", "_")
    if not _NAME.match(name):
        raise InputError(f"--name {name!r}: use letters, digits, '_', '-' and '.' only")
    if instances < 1:
        raise InputError(f"--instances must be positive, got {instances}")
    chosen_kind = FORMATS[suffix][3] if kind is None else KINDS.get(kind)
    if chosen_kind is None:
        raise InputError(f"unknown --kind {kind!r}; valid: {', '.join(KINDS)}")
    if suffix == ".xml" and chosen_kind != "KIND_CPU":
        raise InputError("Triton's OpenVINO backend runs on the CPU only: use --kind cpu")
    if suffix in (".plan", ".engine") and chosen_kind == "KIND_CPU":
        raise InputError("a TensorRT engine runs on the GPU only: use --kind gpu")
    extra = []
    if suffix == ".xml":
        weights = model_file.with_suffix(".bin")
        if not weights.is_file():
            raise FormatError(f"the IR's weights {weights} are missing (an IR is .xml + .bin)")
        extra.append((weights, "model.bin"))
    mbs, engine_batches = _batching(facts, suffix, max_batch)
    pref = [] if mbs == 0 else sorted({int(b) for b in (preferred or [])})
    if mbs and not pref:
        pref = default_preferred(mbs, engine_batches)
    if any(b < 1 or b > mbs for b in pref):
        raise InputError(f"--preferred batch sizes must lie within 1..{mbs}, got {pref}")
    config = render_config(
        name,
        suffix,
        facts,
        max_batch=mbs,
        preferred=pref,
        instances=instances,
        kind=chosen_kind,
        queue_delay_us=queue_delay_us,
    )

    repository = Path(repository)
    final = repository / name
    if final.exists() and not force:
        raise OutputExistsError(f"{final} exists; pass --force to replace it")
    repository.mkdir(parents=True, exist_ok=True)
    filename = FORMATS[suffix][2]
    stage = make_temp_dir(repository, prefix=f".{name}.stage-")
    try:
        version = stage / VERSION
        version.mkdir()
        shutil.copyfile(model_file, version / filename)
        for src, dst in extra:
            shutil.copyfile(src, version / dst)
        carry_sidecar(
            facts,
            model_file,
            version / filename,
            {"kind": "triton", "repository": str(repository.resolve()), "name": name},
        )
        (stage / CONFIG_NAME).write_text(config, encoding="utf-8")
        old = None
        if final.exists():
            old = make_temp_dir(repository, prefix=f".{name}.old-")
            os.replace(final, old / name)
        os.replace(stage, final)
        if old is not None:
            shutil.rmtree(old)
    finally:
        if stage.exists():
            shutil.rmtree(stage)
    files = sorted(str(p.relative_to(repository)) for p in final.rglob("*") if p.is_file())
    return {
        "path": str(final),
        "config": config,
        "max_batch_size": mbs,
        "preferred_batch_size": pref,
        "kind": chosen_kind,
        "files": files,
    }
