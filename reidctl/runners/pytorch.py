"""The PyTorch reference runner: the registered model itself, on CPU or CUDA."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from reidctl.artifacts import ModelSidecar, sidecar_path
from reidctl.errors import BackendUnavailableError, InputError
from reidctl.runners import register_runner
from reidctl.runners._env import has_module, import_backend
from reidctl.runners.base import Runner
from reidctl.specs import PreprocessSpec, TensorSpec


@register_runner
class TorchRunner(Runner):
    """A registered model built with :func:`reidctl.models.loading.create_model`.

    The model name and weights come from the model file's sidecar (``model.onnx`` ->
    ``model.onnx.json``: the model the ONNX was exported from), or from the options ``model``
    and ``weights``; a ``.pth`` model file is the weights itself. Options: ``device``
    (``cpu`` default, ``cuda``, ``cuda:N``), ``fp16`` (half-precision weights and inputs,
    outputs returned as float32; CUDA only), ``channels_last`` (NHWC memory format),
    ``allow_pickle`` (load a legacy full-pickle checkpoint; runs code from the file).
    When the sidecar says ``normalize_in_graph``, the inputs are uint8 and this runner
    scales and normalises them as the exported graph does. A camera-aware model (TransReID,
    CLIP-ReID with SIE) takes the second input ``camera`` (int64 ``[batch]``), and the
    sidecar's export settings (SIE coefficient, camera-agnostic mode, JPM) are applied.
    """

    name = "torch"
    suffixes = (".pth", ".pt")
    install_hint = "pip install torch==2.13.0"
    accepted_options = ("model", "weights", "device", "fp16", "channels_last", "allow_pickle")
    packages = ("torch",)

    def _resolve(self) -> tuple[str, str | None, PreprocessSpec | None]:
        model = self.options.get("model")
        weights = self.options.get("weights")
        pre = None
        side = sidecar_path(self.model_file)
        self._sidecar: dict[str, Any] = {}
        if side.is_file():
            facts = ModelSidecar.load(self.model_file)
            self._sidecar = facts.to_dict()
            model = model or facts.model
            if weights is None and facts.weights is not None:
                weights = facts.weights.get("path")
            pre = facts.preprocess
        if weights is None and Path(self.model_file).suffix in self.suffixes:
            weights = self.model_file
        if not model:
            raise InputError(
                f"torch back end: cannot tell which model {self.model_file} is (no sidecar "
                f"{side.name}); pass --model NAME (see `reidctl models`)"
            )
        return str(model), (str(weights) if weights is not None else None), pre

    def activate_impl(self) -> None:
        torch = import_backend("torch", self.name, self.install_hint)
        from reidctl.models.loading import create_model
        from reidctl.models.registry import get_spec

        model, weights, pre = self._resolve()
        if weights is not None and not os.path.isabs(weights) and not Path(weights).exists():
            # sidecars record absolute paths; a relative one is read beside the model file
            weights = str(Path(self.model_file).parent / weights)
        spec = get_spec(model)
        self.preprocess = pre or spec.preprocess
        device = str(self.options.get("device") or "cpu")
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise BackendUnavailableError(
                f"--device {device}: this torch build or machine has no CUDA "
                f"(torch {torch.__version__}); use --device cpu or install a CUDA build of torch"
            )
        if device != "cpu" and not device.startswith("cuda"):
            raise InputError(f"unknown torch device {device!r}; valid: cpu, cuda, cuda:N")
        self.fp16 = bool(self.options.get("fp16"))
        if self.fp16 and device == "cpu":
            raise InputError("--fp16 needs --device cuda (half precision is slow and lossy on CPU)")
        loaded = create_model(model, weights, allow_pickle=bool(self.options.get("allow_pickle")))
        if hasattr(loaded.module, "configure"):
            import inspect

            from reidctl.models.camera import options_from_sidecar

            accepted = inspect.signature(loaded.module.configure).parameters
            opts = options_from_sidecar(self._sidecar)
            loaded.module.configure(**{k: v for k, v in opts.items() if k in accepted})
        self.takes_camera = bool(getattr(loaded.module, "takes_camera", False))
        self.torch = torch
        self.device = torch.device(device)
        self.dtype = torch.float16 if self.fp16 else torch.float32
        self.memory_format = (
            torch.channels_last if self.options.get("channels_last") else torch.contiguous_format
        )
        self.module = loaded.module.to(self.device, self.dtype, memory_format=self.memory_format)
        self.output_names = list(loaded.output_names)
        self.model_name, self.weights = model, weights
        p = self.preprocess
        in_dtype = "uint8" if p.normalize_in_graph else "float32"
        self._inputs = (TensorSpec("image", ("batch", 3, p.height, p.width), in_dtype),)
        if self.takes_camera:
            from reidctl.models.registry import CAMERA_INPUT

            self._inputs += (CAMERA_INPUT,)
        shape = (1, 3, 1, 1)
        self._mean = torch.tensor(p.mean, device=self.device).view(shape) * 255.0
        self._std = torch.tensor(p.std, device=self.device).view(shape) * 255.0

    def input_specs_impl(self) -> tuple[TensorSpec, ...]:
        return self._inputs

    def _to_input(self, arr: np.ndarray) -> Any:
        x = self.torch.from_numpy(np.ascontiguousarray(arr)).to(self.device)
        if self.preprocess.normalize_in_graph:
            x = (x.float() - self._mean) / self._std
        return x.to(self.dtype).contiguous(memory_format=self.memory_format)

    def infer_impl(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = self._to_input(feeds["image"])
        args = [x]
        if self.takes_camera:
            cam = np.ascontiguousarray(feeds["camera"], dtype=np.int64)
            args.append(self.torch.from_numpy(cam).to(self.device))
        with self.torch.inference_mode():
            out = self.module(*args)
        outs = out if isinstance(out, tuple | list) else (out,)
        return {n: o.float().cpu().numpy() for n, o in zip(self.output_names, outs, strict=True)}

    def deactivate_impl(self) -> None:
        self.module = None
        if getattr(self, "device", None) is not None and self.device.type == "cuda":
            self.torch.cuda.empty_cache()

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        if not has_module("torch"):
            return False, "the torch package is not installed"
        return True, "ok (cpu; cuda when torch has CUDA and a GPU)"

    def device_name(self) -> str:
        if self.device.type == "cuda":
            name = self.torch.cuda.get_device_name(self.device)
            return f"{self.device} ({name}{', fp16' if self.fp16 else ''})"
        return "cpu"
