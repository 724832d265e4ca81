"""ONNX -> OpenVINO IR (``model.xml`` + ``model.bin``) with OpenVINO's own converter.

``openvino.convert_model`` reads the ONNX graph (names and the dynamic batch axis stay);
``openvino.save_model`` writes the IR. ``save_model`` compresses weights to FP16 unless told
otherwise: here they stay FP32 unless ``fp16`` (``--fp16``). On CPUs without native FP16
arithmetic the CPU plugin decompresses FP16 weights to FP32 at load time, so ``--fp16``
halves the file and changes features only by the weights' rounding.

Before anything is written, the IR runs on the ``openvino`` runner (precision ``f32``)
against the ONNX on ``ort`` (:mod:`reidctl.convert.parity`); outputs beyond the tolerance
raise :class:`ValidationError`.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from reidctl.artifacts import sidecar_path
from reidctl.convert.carry import carry_sidecar, model_facts
from reidctl.convert.parity import (
    check_parity,
    compare_runs,
    describe_feeds,
    run_feeds,
    validation_feeds,
)
from reidctl.errors import FormatError, InputError
from reidctl.io import refuse_existing, sha256_file
from reidctl.runners._env import import_backend

INSTALL_HINT = "pip install 'reidctl[openvino]'  (or: pip install openvino)"
#: (max relative difference, min row cosine) of the IR against the ONNX
TOLERANCE = {"fp32": (1e-3, 0.9999), "fp16": (2e-2, 0.999)}


def ir_paths(output: str | os.PathLike[str]) -> tuple[Path, Path]:
    """``model.xml`` -> (``model.xml``, ``model.bin``)."""
    output = Path(output)
    if output.suffix.lower() != ".xml":
        raise InputError(f"output {output} should end in .xml (the IR's weights go to .bin)")
    return output, output.with_suffix(".bin")


def ir_from_onnx(
    onnx_file: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    fp16: bool = False,
    data: str | os.PathLike[str] | None = None,
    force: bool = False,
    max_rel_diff: float | None = None,
    min_cosine: float | None = None,
) -> dict[str, Any]:
    """Convert ``onnx_file`` to the IR ``output`` (``.xml``, weights beside it in ``.bin``),
    validate it, write it and its sidecar ``<output>.json``.

    ``fp16`` stores the weights as FP16. Validation feeds: ``data`` (a preprocessed set),
    else synthetic; bounds default to :data:`TOLERANCE`. Returns the sidecar;
    ``conversion.validation`` holds the figures per output.
    """
    onnx_file = Path(onnx_file)
    xml, bin_ = ir_paths(output)
    refuse_existing(xml, bin_, sidecar_path(xml), force=force)
    facts = model_facts(onnx_file)
    ov = import_backend("openvino", "openvino", INSTALL_HINT)
    precision = "fp16" if fp16 else "fp32"
    rel_tol = TOLERANCE[precision][0] if max_rel_diff is None else max_rel_diff
    cos_tol = TOLERANCE[precision][1] if min_cosine is None else min_cosine
    try:
        model = ov.convert_model(str(onnx_file))
    except Exception as e:  # OpenVINO raises its own (non-public) exception classes
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise FormatError(f"OpenVINO cannot convert {onnx_file}: {first}") from e
    xml.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{xml.stem}.", dir=xml.parent) as tmp:
        staged = Path(tmp) / xml.name
        ov.save_model(model, str(staged), compress_to_fp16=fp16)
        staged_bin = staged.with_suffix(".bin")
        feeds = validation_feeds(facts, data=data)
        names = [o["name"] for o in facts["outputs"]]
        ref = run_feeds("ort", onnx_file, feeds)
        got = run_feeds("openvino", staged, feeds, precision="f32")
        results = compare_runs(ref, got, names)
        check_parity(
            results, f"the OpenVINO IR of {onnx_file}", max_rel_diff=rel_tol, min_cosine=cos_tol
        )
        conversion = {
            "kind": "openvino",
            "tool": "openvino.convert_model + openvino.save_model",
            "openvino_version": str(ov.get_version()),
            "weights_precision": precision,
            "compress_to_fp16": fp16,
            "weights_file": xml.with_suffix(".bin").name,
            "weights_sha256": sha256_file(staged_bin),
            "validation": {
                "reference": "ort (the ONNX)",
                "backend": "openvino (CPU, f32 inference precision)",
                "max_rel_diff": rel_tol,
                "min_cosine": cos_tol,
                **describe_feeds(feeds, data),
                "results": [r.to_dict() for r in results],
            },
        }
        side = carry_sidecar(facts, onnx_file, staged, conversion, model_name=xml.name)
        # weights first, then the sidecar, then the .xml: a reader never sees an IR whose
        # .bin or sidecar is missing
        os.replace(staged_bin, bin_)
        os.replace(sidecar_path(staged), sidecar_path(xml))
        os.replace(staged, xml)
    return side
