"""PyTorch -> ONNX export with validation (``reidctl export``).

The steps, each failing with a typed error:

1. build the registered model and load its weights (:func:`reidctl.models.loading.create_model`);
2. export with the TorchScript exporter, input ``image`` (and ``camera``, int64 ``[batch]``,
   for a camera-aware model) and the spec's output names, axis 0 named ``batch`` and dynamic
   on every input and output (or one fixed batch with ``static_batch``), tracing with a batch
   of 2 so that batch-1 shapes are not folded into constants;
3. ``onnx.checker`` (full check), then ``onnxsim``;
4. validation: onnxruntime against PyTorch at batch 1, 3 and 32 (or the static batch), fed
   valid camera indices cycling over every camera: per output, max abs difference relative
   to the output's max abs value, and row cosine;
5. write ``model.onnx`` (its model facts also in the ONNX metadata, key ``reidctl.facts``)
   and the sidecar ``model.onnx.json`` atomically (nothing is left behind
   on failure; an existing output is replaced only with ``force``).
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from reidctl.artifacts import sidecar_path, write_sidecar
from reidctl.artifacts.sidecar import facts_from_dict
from reidctl.errors import InputError, ShapeMismatchError, ValidationError
from reidctl.io import atomic_path, refuse_existing, sha256_file
from reidctl.runners.facts import set_onnx_facts

if TYPE_CHECKING:
    from reidctl.models.loading import LoadedModel

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
    """Optionally fold /255 and mean/std into the graph (uint8 RGB NCHW input); a
    camera-aware module (``takes_camera``) gets the second input ``camera``."""
    import torch

    class Exportable(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = module
            self.fold = fold
            self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1) * 255.0)
            self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1) * 255.0)

        def forward(
            self, image: torch.Tensor, camera: torch.Tensor | None = None
        ) -> tuple[torch.Tensor, ...]:
            if self.fold:
                # (x/255 - m)/s == (x - 255 m)/(255 s): one subtract, one divide
                image = (image.float() - self.mean) / self.std
            if camera is None:
                return tuple(self.inner(image))
            return tuple(self.inner(image, camera))

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
    num_cameras: int = 0,
) -> list[OutputCheck]:
    """Run the ONNX file with onnxruntime and the module with PyTorch on the same seeded input.

    With ``num_cameras`` > 0 the second input ``camera`` gets valid 0-based indices, every
    camera in turn from a seeded start, so that batches of ``num_cameras`` or more rows
    exercise every SIE row.

    Raises :class:`ValidationError` naming the output, batch and difference when
    ``max|onnx - torch| / max|torch|`` exceeds ``tolerance``.
    """
    import torch

    from reidctl.runners import get_runner
    from reidctl.runners.comparator import compare, run_all

    def run_torch(feeds: Any) -> dict[str, np.ndarray]:
        args = [torch.from_numpy(v) for v in feeds.values()]
        with torch.inference_mode():
            outs = torch_module(*args)
        return {n: t.numpy() for n, t in zip(output_names, outs, strict=True)}

    rng = np.random.default_rng(seed)
    checks: list[OutputCheck] = []
    with get_runner("ort")(str(onnx_path)) as ort_runner:
        specs = ort_runner.input_specs()
        input_name = specs[0].name
        camera_name = specs[1].name if num_cameras > 0 else None
        for batch in batches:
            shape = (batch, *input_shape)
            if input_dtype == "uint8":
                x = rng.integers(0, 256, size=shape, dtype=np.uint8)
            else:
                x = rng.standard_normal(shape, dtype=np.float32)
            feeds = {input_name: x}
            if camera_name is not None:
                feeds[camera_name] = camera_indices(
                    batch, num_cameras, int(rng.integers(num_cameras))
                )
            results = run_all({"PyTorch": run_torch, "ONNX": ort_runner}, feeds)
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


def camera_indices(batch: int, num_cameras: int, start: int = 0) -> np.ndarray:
    """``batch`` valid camera indices (int64), cycling ``start, start + 1, ...`` modulo
    ``num_cameras``."""
    return ((np.arange(batch) + start) % num_cameras).astype(np.int64)


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
    options: Mapping[str, Any] | None = None,
    first_camera: int = 1,
    loaded: LoadedModel | None = None,
) -> dict[str, Any]:
    """Export registered ``model`` to ``output`` (``.onnx``), validate it, write the sidecar.

    ``options`` go to the module's ``configure`` (e.g. ``config``, ``sie_coe``,
    ``camera_agnostic``, ``sie_camera``; see :mod:`reidctl.models.camera`); a model without
    ``configure`` refuses any. ``first_camera`` is the ``camid`` of camera index 0 (1 for
    Market-1501 and MSMT17 names), recorded in the sidecar of a camera-aware model.
    ``loaded``: an already built model (e.g. from a fast-reid config,
    :func:`reidctl.models.fastreid_config.load_fastreid`) used instead of building ``model``
    from the registry; ``weights`` and ``allow_pickle`` are then ignored.

    Returns the sidecar dictionary (also written to ``<output>.json``, see docs/formats.md).
    """
    from reidctl.models.registry import get_spec

    # unknown names fail before any file work
    spec = loaded.spec if loaded is not None else get_spec(model)
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
            validate_batches, simplify, options, first_camera, loaded,
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
    options: Mapping[str, Any] | None,
    first_camera: int,
    loaded: LoadedModel | None,
) -> dict[str, Any]:
    import onnx
    import torch

    from reidctl.models.loading import create_model

    if loaded is None:
        loaded = create_model(model, weights=weights, allow_pickle=allow_pickle)
    module = loaded.module
    settings: dict[str, Any] | None = None
    if hasattr(module, "configure"):
        import inspect

        accepted = inspect.signature(module.configure).parameters
        for key in options or {}:
            if key not in accepted:
                flag = "--" + key.replace("_", "-")
                raise InputError(f"{model} does not take {flag}")
        settings = module.configure(**dict(options or {}))
    elif options:
        flags = ", ".join("--" + k.replace("_", "-") for k in sorted(options))
        raise InputError(
            f"{model} takes no model options (got {flags}); --config and the SIE/JPM options "
            "are for MODEL fastreid and the TransReID / CLIP-ReID / SOLIDER-REID models"
        )
    takes_camera = bool(getattr(module, "takes_camera", False))
    num_cameras = int(getattr(module, "num_cameras", 0))
    # a model whose checkpoint carries its own normalisation (fast-reid's pixel_mean /
    # pixel_std buffers) exposes it as ``module.preprocess``
    pre = getattr(module, "preprocess", None) or spec.preprocess
    wrapped = _wrap_for_export(module, pre.mean, pre.std, fold_normalize)
    out_names = list(loaded.output_names)
    in_dtype = "uint8" if fold_normalize else "float32"
    trace_batch = static_batch or TRACE_BATCH
    example = (
        torch.randint(0, 256, (trace_batch, 3, pre.height, pre.width), dtype=torch.uint8)
        if fold_normalize
        else torch.randn(trace_batch, 3, pre.height, pre.width)
    )
    in_names = ["image"]
    args: tuple[Any, ...] = (example,)
    if takes_camera:
        in_names.append("camera")
        args = (example, torch.from_numpy(camera_indices(trace_batch, num_cameras)))
    dynamic_axes = None
    if static_batch is None:
        dynamic_axes = {n: {0: "batch"} for n in [*in_names, *out_names]}

    with atomic_path(output) as tmp:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            torch.onnx.export(
                wrapped,
                args,
                str(tmp),
                input_names=in_names,
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
        _set_batch_dim(proto, [*in_names, *out_names], static_batch)
        onnx.checker.check_model(proto, full_check=True)
        batch_dim: int | str = static_batch if static_batch else "batch"
        out_specs = {o.name: o for o in spec.outputs}
        # families whose output size follows the checkpoint report it themselves
        own_shapes = getattr(module, "output_shapes", {})
        outputs = []
        for name in out_names:
            shape = [batch_dim, *list(own_shapes.get(name, out_specs[name].shape[1:]))]
            if name == "logits" and loaded.num_classes:
                shape = [batch_dim, loaded.num_classes]
            outputs.append({"name": name, "shape": shape, "dtype": "float32"})
        preprocess = pre.to_dict()
        preprocess["normalize_in_graph"] = fold_normalize
        facts: dict[str, Any] = {
            "model": model,
            "preprocess": preprocess,
            "inputs": [
                {"name": "image", "shape": [batch_dim, 3, pre.height, pre.width], "dtype": in_dtype}
            ]
            + (
                [{"name": "camera", "shape": [batch_dim], "dtype": "int64"}] if takes_camera else []
            ),
            "outputs": outputs,
            "feature": spec.feature,
            "l2_normalize": spec.l2_normalize,
        }
        set_onnx_facts(proto, facts_from_dict(facts, f"facts of {model}"))
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
            num_cameras=num_cameras if takes_camera else 0,
        )
        model_sha = sha256_file(tmp)
        sidecar: dict[str, Any] = {
            **facts,
            "weights": loaded.weights_info(),
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
        if settings is not None:
            sidecar["model_settings"] = settings
        if hasattr(module, "camera_settings"):
            camera = module.camera_settings()
            if takes_camera:
                camera["first_camera"] = first_camera
            sidecar["camera"] = camera
        if getattr(module, "ignored_keys", None):
            sidecar["ignored_weights"] = dict(module.ignored_keys)
        # the sidecar goes down first: if it fails, the .onnx rename never happens
        write_sidecar(output, sidecar)
    return sidecar
