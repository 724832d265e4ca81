"""PyTorch -> ONNX export with validation (``reidctl export``).

The steps, each failing with a typed error:

1. build the registered model and load its weights (:func:`reidctl.models.loading.create_model`);
2. export with the TorchScript exporter, input ``image`` and the spec's output names, axis 0
   named ``batch`` and dynamic on the input and every output (or one fixed batch with
   ``static_batch``), tracing with a batch of 2 so that batch-1 shapes are not folded into
   constants;
3. ``onnx.checker`` (full check), then ``onnxsim``;
4. validation: onnxruntime against PyTorch at batch 1, 3 and 32 (or the static batch): per
   output, max abs difference relative to the output's max abs value, and row cosine;
5. write ``model.onnx`` and the sidecar ``model.onnx.json`` atomically (nothing is left behind
   on failure; an existing output is replaced only with ``force``).
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from reidctl.artifacts import sidecar_path, write_sidecar
from reidctl.errors import InputError, ShapeMismatchError, ValidationError
from reidctl.io import atomic_path, refuse_existing, sha256_file

DEFAULT_OPSET = 17
#: opsets the exporter is validated for (the TorchScript exporter of torch 2.x, ops used here)
MIN_OPSET, MAX_OPSET = 11, 21
VALIDATION_BATCHES = (1, 3, 32)
TRACE_BATCH = 2


@dataclass(frozen=True)
class OutputCheck:
    """One validated output at one batch size."""

    batch: int
    output: str
    max_abs_diff: float
    rel_diff: float
    min_cosine: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "batch": self.batch,
            "output": self.output,
            "max_abs_diff": self.max_abs_diff,
            "rel_diff": self.rel_diff,
            "min_cosine": self.min_cosine,
        }


def check_output_path(output: str | os.PathLike[str], force: bool) -> Path:
    """Refuse an existing output without ``force`` and an unwritable folder, before any work."""
    output = Path(output)
    if output.suffix != ".onnx":
        raise InputError(f"output {output} should end in .onnx")
    refuse_existing(output, sidecar_path(output), force=force)
    # Nothing is created yet (a failed export must leave no new folder behind): the nearest
    # existing folder must be a writable directory.
    existing = output.parent if str(output.parent) else Path(".")
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise InputError(f"cannot create the output folder {output.parent}: {existing} is a file")
    if not os.access(existing, os.W_OK):
        raise InputError(f"output folder {existing} is not writable; choose another -o path")
    return output


def _missing_folders(path: Path) -> list[Path]:
    """The ancestors of ``path`` that do not exist yet, deepest first."""
    missing = []
    parent = path.parent
    while str(parent) and not parent.exists() and parent != parent.parent:
        missing.append(parent)
        parent = parent.parent
    return missing


def _wrap_for_export(module: Any, mean: tuple[float, ...], std: tuple[float, ...], fold: bool):
    """Optionally fold /255 and mean/std into the graph (uint8 RGB NCHW input)."""
    import torch

    class Exportable(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = module
            self.fold = fold
            self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1) * 255.0)
            self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1) * 255.0)

        def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
            if self.fold:
                # (x/255 - m)/s == (x - 255 m)/(255 s): one subtract, one divide
                image = (image.float() - self.mean) / self.std
            return tuple(self.inner(image))

    return Exportable().eval()


def _set_batch_dim(model_proto: Any, names: list[str], static_batch: int | None) -> None:
    """Name axis 0 ``batch`` (or fix it) on the graph inputs and outputs, after onnxsim."""
    for value in list(model_proto.graph.input) + list(model_proto.graph.output):
        if value.name not in names:
            continue
        dim0 = value.type.tensor_type.shape.dim[0]
        if static_batch is None:
            dim0.ClearField("dim_value")
            dim0.dim_param = "batch"
        else:
            dim0.ClearField("dim_param")
            dim0.dim_value = static_batch


def validate_onnx(
    onnx_path: str | os.PathLike[str],
    torch_module: Any,
    output_names: list[str],
    input_shape: tuple[int, int, int],
    input_dtype: str,
    batches: tuple[int, ...],
    tolerance: float,
    seed: int = 0,
) -> list[OutputCheck]:
    """Run the ONNX file with onnxruntime and the module with PyTorch on the same seeded input.

    Raises :class:`ValidationError` naming the output, batch and difference when
    ``max|onnx - torch| / max|torch|`` exceeds ``tolerance``.
    """
    import torch

    from reidctl.runners import get_runner
    from reidctl.runners.comparator import compare, run_all

    def run_torch(feeds: Any) -> dict[str, np.ndarray]:
        with torch.inference_mode():
            outs = torch_module(torch.from_numpy(next(iter(feeds.values()))))
        return {n: t.numpy() for n, t in zip(output_names, outs, strict=True)}

    rng = np.random.default_rng(seed)
    checks: list[OutputCheck] = []
    with get_runner("ort")(str(onnx_path)) as ort_runner:
        input_name = ort_runner.input_specs()[0].name
        for batch in batches:
            shape = (batch, *input_shape)
            if input_dtype == "uint8":
                x = rng.integers(0, 256, size=shape, dtype=np.uint8)
            else:
                x = rng.standard_normal(shape, dtype=np.float32)
            results = run_all({"PyTorch": run_torch, "ONNX": ort_runner}, {input_name: x})
            try:
                comparison = compare(results, rtol=tolerance)
            except ShapeMismatchError as e:
                raise ValidationError(f"at batch {batch}: {e}") from None
            for name in output_names:
                d = comparison.outputs[name]
                checks.append(OutputCheck(batch, name, d.max_abs_diff, d.rel_diff, d.min_cosine))
            for name, reasons in comparison.failed.items():
                raise ValidationError(f"output {name!r} at batch {batch}: {'; '.join(reasons)}")
    return checks


def onnx_from_torch(
    model: str,
    output: str | os.PathLike[str],
    *,
    weights: str | os.PathLike[str] | None = None,
    opset: int = DEFAULT_OPSET,
    static_batch: int | None = None,
    fold_normalize: bool = False,
    force: bool = False,
    allow_pickle: bool = False,
    validate_batches: tuple[int, ...] = VALIDATION_BATCHES,
    simplify: bool = True,
) -> dict[str, Any]:
    """Export registered ``model`` to ``output`` (``.onnx``), validate it, write the sidecar.

    Returns the sidecar dictionary (also written to ``<output>.json``, see docs/formats.md).
    """
    from reidctl.models.registry import get_spec

    spec = get_spec(model)  # unknown names fail before any file work
    if static_batch is not None and static_batch < 1:
        raise InputError(f"--static-batch must be a positive batch size, got {static_batch}")
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise InputError(
            f"opset {opset} is not supported; use {MIN_OPSET}..{MAX_OPSET} "
            f"(default {DEFAULT_OPSET})"
        )
    output = check_output_path(output, force)
    created = _missing_folders(output)
    try:
        return _export(
            model, spec, output, weights, opset, static_batch, fold_normalize, allow_pickle,
            validate_batches, simplify,
        )  # fmt: skip
    except BaseException:
        for folder in created:  # deepest first; only the ones this call made, if still empty
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise


def _export(
    model: str,
    spec: Any,
    output: Path,
    weights: str | os.PathLike[str] | None,
    opset: int,
    static_batch: int | None,
    fold_normalize: bool,
    allow_pickle: bool,
    validate_batches: tuple[int, ...],
    simplify: bool,
) -> dict[str, Any]:
    import onnx
    import torch

    from reidctl.models.loading import create_model

    loaded = create_model(model, weights=weights, allow_pickle=allow_pickle)
    pre = spec.preprocess
    wrapped = _wrap_for_export(loaded.module, pre.mean, pre.std, fold_normalize)
    out_names = list(loaded.output_names)
    in_dtype = "uint8" if fold_normalize else "float32"
    trace_batch = static_batch or TRACE_BATCH
    example = (
        torch.randint(0, 256, (trace_batch, 3, pre.height, pre.width), dtype=torch.uint8)
        if fold_normalize
        else torch.randn(trace_batch, 3, pre.height, pre.width)
    )
    dynamic_axes = None
    if static_batch is None:
        dynamic_axes = {n: {0: "batch"} for n in ["image", *out_names]}

    with atomic_path(output) as tmp:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            torch.onnx.export(
                wrapped,
                (example,),
                str(tmp),
                input_names=["image"],
                output_names=out_names,
                dynamic_axes=dynamic_axes,
                opset_version=opset,
                do_constant_folding=True,
                dynamo=False,
            )
        proto = onnx.load(str(tmp))
        onnx.checker.check_model(proto, full_check=True)
        if simplify:
            import onnxsim

            simplified, ok = onnxsim.simplify(proto)
            if not ok:
                raise ValidationError(f"onnxsim could not validate the simplified {model} graph")
            proto = simplified
        _set_batch_dim(proto, ["image", *out_names], static_batch)
        onnx.checker.check_model(proto, full_check=True)
        onnx.save(proto, str(tmp))

        batches = (static_batch,) if static_batch else validate_batches
        checks = validate_onnx(
            tmp,
            wrapped,
            out_names,
            (3, pre.height, pre.width),
            in_dtype,
            batches,
            spec.tolerance,
        )
        model_sha = sha256_file(tmp)
        batch_dim: int | str = static_batch if static_batch else "batch"
        out_specs = {o.name: o for o in spec.outputs}
        outputs = []
        for name in out_names:
            shape = [batch_dim, *list(out_specs[name].shape[1:])]
            if name == "logits" and loaded.num_classes:
                shape = [batch_dim, loaded.num_classes]
            outputs.append({"name": name, "shape": shape, "dtype": "float32"})
        preprocess = pre.to_dict()
        preprocess["normalize_in_graph"] = fold_normalize
        sidecar: dict[str, Any] = {
            "model": model,
            "weights": loaded.weights_info(),
            "preprocess": preprocess,
            "inputs": [
                {"name": "image", "shape": [batch_dim, 3, pre.height, pre.width], "dtype": in_dtype}
            ],
            "outputs": outputs,
            "feature": spec.feature,
            "l2_normalize": spec.l2_normalize,
            "opset": opset,
            "static_batch": static_batch,
            "validation": {
                "tolerance": spec.tolerance,
                "metric": "max|onnx - torch| / max|torch|",
                "results": [c.to_dict() for c in checks],
            },
            "model_file": output.name,
            "model_sha256": model_sha,
        }
        # the sidecar goes down first: if it fails, the .onnx rename never happens
        write_sidecar(output, sidecar)
    return sidecar
