"""ONNX Runtime runners: ``ort`` (CPU, the embedded default) and ``ort-cuda`` (CUDA/TensorRT
execution providers of an ``onnxruntime-gpu`` build)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from reidctl.errors import BackendUnavailableError, FormatError, InputError
from reidctl.platform import usable_cores
from reidctl.runners import register_runner
from reidctl.runners._env import has_distribution, has_module, has_nvidia_gpu, import_backend
from reidctl.runners.base import Runner
from reidctl.specs import TensorSpec

# ONNX Runtime's type strings -> numpy dtype names
_ORT_TYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(uint8)": "uint8",
    "tensor(int8)": "int8",
    "tensor(int32)": "int32",
    "tensor(int64)": "int64",
    "tensor(bool)": "bool",
}


def _dims(shape: list[Any]) -> tuple[int | str, ...]:
    """ORT reports dynamic dims as a name or None; keep names, call unnamed ones by position."""
    out: list[int | str] = []
    for i, d in enumerate(shape):
        if (isinstance(d, int) and d > 0) or (isinstance(d, str) and d):
            out.append(d)
        else:
            out.append("batch" if i == 0 else f"dim{i}")
    return tuple(out)


# onnxruntime's WeightBiasQuantization turns a float Conv/Gemm fed by DequantizeLinear into
# an INT8 one (per-tensor weights). That would silently undo `convert int8 --exclude`, which
# keeps such layers in float on purpose; on FP32 models it does nothing.
DISABLED_OPTIMIZERS: tuple[str, ...] = ("WeightBiasQuantization",)


def make_session(ort: Any, model_file: str, options: Any, providers: list[str]) -> Any:
    """An ``InferenceSession`` as every reidctl onnxruntime runner creates it."""
    return ort.InferenceSession(
        model_file, options, providers=providers, disabled_optimizers=list(DISABLED_OPTIMIZERS)
    )


@register_runner
class OrtRunner(Runner):
    """onnxruntime on the CPU.

    Options: ``threads`` (CPU threads in all; default: onnxruntime's choice, one per core),
    ``streams`` (batches run at once, default 1). With ``streams`` N > 1 the session runs N
    calls concurrently (onnxruntime's ``Run`` is thread-safe), each on ``threads // N``
    intra-op threads (at least 1): the throughput setting, as OpenVINO's streams. For the
    CNNs measured (OSNet, ResNet-50) each image's outputs are the same bits as with one
    stream; a single call gets fewer threads, so latency at batch 1 is worse.
    """

    name = "ort"
    suffixes = (".onnx",)
    install_hint = "pip install onnxruntime"
    accepted_options = ("threads", "streams")
    packages = ("onnxruntime", "onnxruntime-gpu")
    providers: ClassVar[tuple[str, ...]] = ("CPUExecutionProvider",)

    def activate_impl(self) -> None:
        ort = import_backend("onnxruntime", self.name, self.install_hint)
        so = ort.SessionOptions()
        threads = self.options.get("threads")
        if threads is not None and int(threads) < 1:
            raise InputError(f"--threads must be >= 1, got {threads}")
        streams = self.concurrency
        if streams > 1:
            total = int(threads) if threads is not None else usable_cores()
            so.intra_op_num_threads = max(1, total // streams)
        elif threads is not None:
            so.intra_op_num_threads = int(threads)
        # one graph, run batch after batch: inter-op parallelism only adds thread contention
        so.inter_op_num_threads = 1
        providers = self._providers(ort)
        try:
            self.session = make_session(ort, self.model_file, so, providers)
        except Exception as e:  # onnxruntime raises its own exception types per failure
            if "NO_SUCHFILE" in str(e) or "No such file" in str(e):
                raise FormatError(f"model file not found: {self.model_file}") from e
            raise FormatError(
                f"onnxruntime cannot load {self.model_file}: {str(e).splitlines()[0]}"
            ) from e
        self._inputs = tuple(
            TensorSpec(i.name, _dims(i.shape), _ORT_TYPES.get(i.type, i.type))
            for i in self.session.get_inputs()
        )
        self.output_names = [o.name for o in self.session.get_outputs()]

    @property
    def concurrency(self) -> int:
        streams = self.options.get("streams")
        if streams is None:
            return 1
        if isinstance(streams, bool) or not isinstance(streams, int) or streams < 1:
            raise InputError(f"--streams must be a positive integer, got {streams!r}")
        return streams

    def _providers(self, ort: Any) -> list[str]:
        return list(self.providers)

    def input_specs_impl(self) -> tuple[TensorSpec, ...]:
        return self._inputs

    def infer_impl(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        outs = self.session.run(self.output_names, dict(feeds))
        return dict(zip(self.output_names, outs, strict=True))

    def deactivate_impl(self) -> None:
        self.session = None

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        if not has_module("onnxruntime"):
            return False, "the onnxruntime package is not installed"
        return True, "ok"

    def device_name(self) -> str:
        return "cpu"


@register_runner
class OrtCudaRunner(OrtRunner):
    """onnxruntime with the TensorRT and CUDA execution providers (CPU fallback for the rest).

    Options: ``device`` (``cuda`` or ``cuda:N``, default ``cuda:0``), ``tensorrt_ep`` (also
    try the TensorRT execution provider first; default off, it builds engines at start-up).
    """

    name = "ort-cuda"
    suffixes = ()
    install_hint = (
        "pip uninstall onnxruntime && pip install onnxruntime-gpu  "
        "(onnxruntime-gpu replaces onnxruntime; it needs the NVIDIA driver, CUDA and cuDNN)"
    )
    accepted_options = ("threads", "device", "tensorrt_ep")

    def _providers(self, ort: Any) -> list[Any]:
        available = ort.get_available_providers()
        if "CUDAExecutionProvider" not in available:
            raise BackendUnavailableError(
                f"this onnxruntime build has no CUDAExecutionProvider (providers: "
                f"{', '.join(available)}); install: {self.install_hint}"
            )
        device = str(self.options.get("device") or "cuda:0")
        index = int(device.split(":")[1]) if ":" in device else 0
        providers: list[Any] = []
        if self.options.get("tensorrt_ep") and "TensorrtExecutionProvider" in available:
            providers.append(("TensorrtExecutionProvider", {"device_id": index}))
        providers.append(("CUDAExecutionProvider", {"device_id": index}))
        providers.append("CPUExecutionProvider")
        return providers

    def activate_impl(self) -> None:
        super().activate_impl()
        used = self.session.get_providers()
        if "CUDAExecutionProvider" not in used:
            raise BackendUnavailableError(
                f"onnxruntime fell back to {used}: the CUDA provider failed to load (driver, "
                "CUDA or cuDNN missing or mismatched); check `nvidia-smi` and the onnxruntime-gpu "
                "CUDA requirements"
            )

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        if not has_module("onnxruntime"):
            return False, "the onnxruntime package is not installed"
        if not has_distribution("onnxruntime-gpu"):
            return False, "the installed onnxruntime is the CPU-only build"
        if not has_nvidia_gpu():
            return False, "no NVIDIA GPU/driver found (/proc/driver/nvidia, nvidia-smi)"
        return True, "ok"

    def device_name(self) -> str:
        return str(self.options.get("device") or "cuda:0")
