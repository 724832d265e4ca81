"""``reidctl adopt``: the facts of a model made elsewhere, written once.

A model exported by another tool (an ONNX from another exporter, an OpenVINO IR such as
Intel's ``person-reidentification-retail-*``) carries no preprocessing: :func:`adopt_model`
takes it from the caller, reads the inputs and outputs from the model file and writes the
sidecar ``<model file>.json`` and, for an ONNX, the same facts into its metadata
(``reidctl.facts``, the file rewritten atomically). Afterwards ``preprocess --model-config``,
``infer``, ``eval`` and :class:`reidctl.Embedder` need no flags for it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from reidctl.artifacts import ModelSidecar, sidecar_path
from reidctl.errors import FormatError, InputError, UnknownNameError
from reidctl.io import refuse_existing, sha256_file
from reidctl.specs import ModelFacts, PreprocessSpec, TensorSpec

ADOPTABLE = (".onnx", ".xml")


def ir_io_specs(xml_file: str | os.PathLike[str]) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Inputs and outputs of an OpenVINO IR (``.xml`` + ``.bin``), dynamic dims named."""
    from reidctl.runners._env import import_backend

    ov = import_backend("openvino", "openvino", "pip install openvino")
    try:
        model = ov.Core().read_model(str(xml_file))
    except Exception as e:  # OpenVINO raises RuntimeError subclasses of its own
        raise FormatError(
            f"OpenVINO cannot read {xml_file}: {str(e).strip().splitlines()[0]}"
        ) from e

    def spec(port: Any) -> TensorSpec:
        dims = tuple(
            d.get_length() if d.is_static else ("batch" if i == 0 else f"dim{i}")
            for i, d in enumerate(port.get_partial_shape())
        )
        return TensorSpec(
            port.get_any_name(), dims, str(np.dtype(port.get_element_type().to_dtype()))
        )

    return [spec(p) for p in model.inputs], [spec(p) for p in model.outputs]


def model_io_specs(model_file: str | os.PathLike[str]) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Inputs and outputs read from an ONNX or OpenVINO IR file."""
    from reidctl.runners.facts import onnx_io_specs

    suffix = Path(model_file).suffix.lower()
    if suffix == ".onnx":
        return onnx_io_specs(model_file)
    if suffix == ".xml":
        return ir_io_specs(model_file)
    raise InputError(
        f"{model_file}: reidctl reads the inputs and outputs of {' and '.join(ADOPTABLE)} "
        "files; for an engine, convert its ONNX with `reidctl convert` instead"
    )


def adopt_model(
    model_file: str | os.PathLike[str],
    preprocess: PreprocessSpec,
    *,
    feature: str | None = None,
    normalize: bool = False,
    name: str | None = None,
    force: bool = False,
) -> ModelSidecar:
    """Write the facts of ``model_file`` (ONNX or OpenVINO IR) and return its sidecar.

    ``preprocess`` is how images become its input (size in pixels, mean and std on the
    [0, 1] scale in ``preprocess.color`` order; for a model taking BGR 0..255, mean 0 and
    std 1/255). A model whose image input is uint8 normalises in its graph
    (``normalize_in_graph``). ``feature`` is the retrieval output (default: the first);
    ``normalize`` whether features are L2-normalised before comparison; ``name`` the model
    name recorded (default: the file's stem). An existing sidecar is replaced only with
    ``force``. The input's fixed height and width must match ``preprocess``.
    """
    from dataclasses import replace

    from reidctl.runners.facts import write_onnx_facts

    model_file = Path(model_file)
    if not model_file.is_file():
        raise FormatError(f"model file not found: {model_file}")
    inputs, outputs = model_io_specs(model_file)
    refuse_existing(sidecar_path(model_file), force=force)
    images = [t for t in inputs if t.name != "camera"]
    if len(images) != 1:
        raise InputError(
            f"{model_file} has inputs {[t.name for t in inputs]}: reidctl feeds one image "
            "tensor [batch, 3, H, W] (and optionally 'camera', int64 [batch])"
        )
    image = images[0]
    if len(image.shape) != 4 or image.shape[1] not in (3, "dim1"):
        raise InputError(
            f"{model_file} input {image.name!r} has shape {list(image.shape)}; reidctl feeds "
            "NCHW images [batch, 3, H, W]"
        )
    hw = image.shape[2:]
    if any(isinstance(d, int) for d in hw) and tuple(hw) != (preprocess.height, preprocess.width):
        raise InputError(
            f"{model_file} input {image.name!r} is {list(image.shape)}, but the size given is "
            f"{preprocess.height}x{preprocess.width}; give --size {hw[0]}x{hw[1]}"
        )
    if not outputs:
        raise FormatError(f"{model_file} has no outputs")
    names = [o.name for o in outputs]
    if feature is not None and feature not in names:
        raise UnknownNameError("output", feature, names)
    preprocess = replace(preprocess, normalize_in_graph=image.dtype == "uint8")
    facts = ModelFacts(
        model=name or model_file.stem,
        preprocess=preprocess,
        inputs=tuple(inputs),
        outputs=tuple(outputs),
        feature=feature or names[0],
        l2_normalize=bool(normalize),
    )
    if model_file.suffix.lower() == ".onnx":
        write_onnx_facts(model_file, facts)
    batch = image.shape[0]
    sidecar = ModelSidecar(
        facts,
        {
            "weights": None,
            "static_batch": batch if isinstance(batch, int) else None,
            "facts_source": "reidctl adopt",
            "model_file": model_file.name,
            "model_sha256": sha256_file(model_file),
        },
    )
    sidecar.save(model_file)
    return sidecar
