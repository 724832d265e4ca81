"""TensorRT runner (TensorRT >= 10, the tensor-name API) for ``.engine`` / ``.plan`` files.

Device memory comes from torch CUDA tensors when torch has CUDA, otherwise from cuda-python's
``cudart`` (``cudaMalloc`` / ``cudaMemcpyAsync`` on one stream). Buffers are allocated once,
for the profile's largest batch; every call sets the input shapes for its own batch
(``set_input_shape``), so a smaller last batch runs at its size. Batches beyond the profile
are split and static engines padded by :meth:`Runner.infer_rows`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from reidctl.errors import BackendUnavailableError, FormatError
from reidctl.runners import register_runner
from reidctl.runners._env import has_module, has_nvidia_gpu, import_backend
from reidctl.runners.base import Runner
from reidctl.runners.batching import BatchLimits
from reidctl.specs import TensorSpec

INSTALL_HINT = (
    "TensorRT >= 10 from NVIDIA: pip install 'reidctl[tensorrt]' (tensorrt, cuda-python) on a "
    "machine with an NVIDIA GPU and driver; see docs.nvidia.com/deeplearning/tensorrt"
)


def limits_from_profile(
    engine_shape: Sequence[int], profile: Sequence[Sequence[int]] | None
) -> BatchLimits:
    """Batch limits of an engine input from its shape (``-1`` = dynamic) and, for a dynamic
    batch, its optimisation profile's ``(min, opt, max)`` shapes.

    >>> limits_from_profile([-1, 3, 256, 128], [[1, 3, 256, 128], [32, 3, 256, 128],
    ...                                         [32, 3, 256, 128]]).describe()
    'batch sizes 1..32'
    """
    if engine_shape[0] != -1:
        return BatchLimits(choices=(int(engine_shape[0]),))
    if not profile:
        raise FormatError("the engine has a dynamic batch but no optimisation profile")
    lo, _, hi = profile
    return BatchLimits(min_batch=int(lo[0]), max_batch=int(hi[0]))


def spec_dims(shape: Sequence[int]) -> tuple[int | str, ...]:
    """TensorRT dims (-1 dynamic) -> spec dims (``"batch"`` / ``"dimN"`` for dynamic ones)."""
    return tuple(
        int(d) if d >= 0 else ("batch" if i == 0 else f"dim{i}") for i, d in enumerate(shape)
    )


class _TorchCuda:
    """Device buffers as torch CUDA byte tensors, copies on one torch CUDA stream."""

    def __init__(self, torch: Any, device: str) -> None:
        self.torch = torch
        self.device = torch.device(device)
        self.stream = torch.cuda.Stream(self.device)
        self.handle = self.stream.cuda_stream
        self._bufs: list[Any] = []

    def alloc(self, nbytes: int) -> int:
        t = self.torch.empty(max(nbytes, 1), dtype=self.torch.uint8, device=self.device)
        self._bufs.append(t)
        return int(t.data_ptr())

    def _view(self, ptr: int, nbytes: int) -> Any:
        for t in self._bufs:
            if int(t.data_ptr()) == ptr:
                return t[:nbytes]
        raise KeyError(ptr)

    def htod(self, ptr: int, arr: np.ndarray) -> None:
        src = self.torch.from_numpy(np.ascontiguousarray(arr).reshape(-1).view(np.uint8))
        with self.torch.cuda.stream(self.stream):
            self._view(ptr, src.numel()).copy_(src, non_blocking=False)

    def dtoh(self, ptr: int, out: np.ndarray) -> None:
        with self.torch.cuda.stream(self.stream):
            data = self._view(ptr, out.nbytes).cpu().numpy()
        out.reshape(-1).view(np.uint8)[:] = data

    def sync(self) -> None:
        self.stream.synchronize()

    def close(self) -> None:
        self._bufs.clear()


class _Cudart:
    """Device buffers from cuda-python's runtime API."""

    def __init__(self, device: str) -> None:
        try:
            from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
        except ImportError:
            try:
                from cuda import cudart  # older cuda-python
            except ImportError as e:
                raise BackendUnavailableError(
                    f"the trt back end needs torch with CUDA or cuda-python ({e}); "
                    f"install: {INSTALL_HINT}"
                ) from e
        self.rt = cudart
        index = int(device.split(":")[1]) if ":" in device else 0
        self._check(cudart.cudaSetDevice(index), "cudaSetDevice")
        self.stream = self._check(cudart.cudaStreamCreate(), "cudaStreamCreate")
        self.handle = int(self.stream)
        self._ptrs: list[int] = []

    def _check(self, result: Any, what: str) -> Any:
        err, *rest = result if isinstance(result, tuple) else (result,)
        if err != self.rt.cudaError_t.cudaSuccess:
            raise BackendUnavailableError(f"CUDA call {what} failed: {err}")
        return rest[0] if len(rest) == 1 else rest

    def alloc(self, nbytes: int) -> int:
        ptr = int(self._check(self.rt.cudaMalloc(max(nbytes, 1)), "cudaMalloc"))
        self._ptrs.append(ptr)
        return ptr

    def htod(self, ptr: int, arr: np.ndarray) -> None:
        arr = np.ascontiguousarray(arr)
        kind = self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._check(
            self.rt.cudaMemcpyAsync(ptr, arr.ctypes.data, arr.nbytes, kind, self.stream),
            "cudaMemcpyAsync",
        )
        # the host array must outlive the async copy
        self._check(self.rt.cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")

    def dtoh(self, ptr: int, out: np.ndarray) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._check(
            self.rt.cudaMemcpyAsync(out.ctypes.data, ptr, out.nbytes, kind, self.stream),
            "cudaMemcpyAsync",
        )

    def sync(self) -> None:
        self._check(self.rt.cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")

    def close(self) -> None:
        for ptr in self._ptrs:
            self.rt.cudaFree(ptr)
        self._ptrs.clear()
        self.rt.cudaStreamDestroy(self.stream)


def _cuda_memory(device: str) -> Any:
    if has_module("torch"):
        import torch

        if torch.cuda.is_available():
            return _TorchCuda(torch, device)
    return _Cudart(device)


@register_runner
class TrtRunner(Runner):
    """A serialised TensorRT engine. Options: ``device`` (``cuda:N``, default ``cuda:0``)."""

    name = "trt"
    suffixes = (".engine", ".plan")
    install_hint = INSTALL_HINT
    accepted_options = ("device",)
    packages = ("tensorrt", "cuda-python")

    def activate_impl(self) -> None:
        trt = import_backend("tensorrt", self.name, self.install_hint)
        major = int(str(trt.__version__).split(".")[0])
        if major < 10:
            raise BackendUnavailableError(
                f"TensorRT {trt.__version__} is too old: the trt back end uses the tensor-name "
                f"API of TensorRT >= 10; install: {self.install_hint}"
            )
        path = Path(self.model_file)
        if not path.is_file():
            raise FormatError(f"engine file not found: {path}")
        self.trt = trt
        self.mem = _cuda_memory(str(self.options.get("device") or "cuda:0"))
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        self.engine = self.runtime.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise FormatError(
                f"TensorRT {trt.__version__} cannot deserialise {path}: engines only load with "
                "the TensorRT version and GPU they were built for; rebuild it with "
                "`reidctl convert trt`"
            )
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        is_input = {n: self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names}
        self.input_names = [n for n in names if is_input[n]]
        self.output_names = [n for n in names if not is_input[n]]
        self.dtypes = {n: np.dtype(trt.nptype(self.engine.get_tensor_dtype(n))) for n in names}
        shapes = {n: list(self.engine.get_tensor_shape(n)) for n in names}
        first = self.input_names[0]
        profile = None
        if shapes[first][0] == -1:
            profile = [list(s) for s in self.engine.get_tensor_profile_shape(first, 0)]
        self._limits = limits_from_profile(shapes[first], profile)
        self._inputs = tuple(
            TensorSpec(n, spec_dims(shapes[n]), str(self.dtypes[n])) for n in self.input_names
        )
        # size every buffer for the largest batch the engine accepts, once
        largest = int(self._limits.largest or 1)
        for n in self.input_names:
            self.context.set_input_shape(n, [largest, *shapes[n][1:]])
        self.ptrs: dict[str, int] = {}
        for n in names:
            dims = list(self.context.get_tensor_shape(n))
            nbytes = int(np.prod(dims)) * self.dtypes[n].itemsize
            self.ptrs[n] = self.mem.alloc(nbytes)
            self.context.set_tensor_address(n, self.ptrs[n])

    def batch_limits(self) -> BatchLimits:
        return self._limits

    def input_specs_impl(self) -> tuple[TensorSpec, ...]:
        return self._inputs

    def infer_impl(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        for n in self.input_names:
            arr = np.ascontiguousarray(feeds[n])
            self.context.set_input_shape(n, list(arr.shape))
            self.mem.htod(self.ptrs[n], arr)
        if not self.context.execute_async_v3(self.mem.handle):
            raise FormatError(f"TensorRT execution failed for {self.model_file}")
        outs = {}
        for n in self.output_names:
            out = np.empty(tuple(self.context.get_tensor_shape(n)), dtype=self.dtypes[n])
            self.mem.dtoh(self.ptrs[n], out)
            outs[n] = out
        self.mem.sync()
        return outs

    def deactivate_impl(self) -> None:
        self.context = self.engine = self.runtime = None
        if getattr(self, "mem", None) is not None:
            self.mem.close()
            self.mem = None

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        if not has_module("tensorrt"):
            return False, "the tensorrt package is not installed"
        if not has_nvidia_gpu():
            return False, "no NVIDIA GPU/driver found (/proc/driver/nvidia, nvidia-smi)"
        if not (has_module("cuda") or has_module("torch")):
            return False, "neither cuda-python nor torch is installed for device memory"
        return True, "ok"

    def device_name(self) -> str:
        return str(self.options.get("device") or "cuda:0")
