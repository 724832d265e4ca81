"""Ascend runner: an OM model on an Ascend NPU through pyACL (the CANN ``acl`` module).

Lifecycle (pyACL's documented order): ``acl.init`` -> ``acl.rt.set_device`` ->
``acl.rt.create_context`` -> ``acl.mdl.load_from_file`` -> ``acl.mdl.create_desc`` /
``get_desc`` -> device buffers (``acl.rt.malloc``) wrapped in data buffers and datasets ->
per batch: ``acl.rt.memcpy`` host->device, ``acl.mdl.set_dynamic_batch_size`` (models built
with ``--dynamic_batch_size``), ``acl.mdl.execute``, ``acl.rt.memcpy`` device->host ->
release in reverse order in ``deactivate()``.

A model built with ATC ``--dynamic_batch_size`` carries an extra input,
``ascend_mbatch_shape_data``, through which the batch of each call is chosen among the
model's batch gears; inputs are always copied at the gear's size (smaller batches padded by
:meth:`Runner.infer_rows`). The ``ais_bench`` back end (:mod:`reidctl.runners.ais_bench`)
runs the same OM models through ais_bench's ``InferSession`` instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from reidctl.errors import FormatError, InputError
from reidctl.runners import register_runner
from reidctl.runners._env import has_ascend_npu, has_module, import_backend
from reidctl.runners.base import Runner
from reidctl.runners.batching import BatchLimits
from reidctl.specs import TensorSpec

INSTALL_HINT = (
    "the CANN toolkit (it provides the `acl` Python module; `source "
    "/usr/local/Ascend/ascend-toolkit/set_env.sh`) on a machine with an Ascend NPU and driver"
)
DYNAMIC_BATCH_INPUT = "ascend_mbatch_shape_data"
ACL_MEM_MALLOC_HUGE_FIRST = 0
ACL_MEMCPY_HOST_TO_DEVICE = 1
ACL_MEMCPY_DEVICE_TO_HOST = 2
# aclDataType -> numpy dtype name (acl_base.h)
ACL_DTYPES = {0: "float32", 1: "float16", 2: "int8", 3: "int32", 4: "uint8", 9: "int64", 12: "bool"}


def limits_from_dynamic_batch(info: Mapping[str, Any] | None, static_batch: int) -> BatchLimits:
    """Batch limits of an OM model from ``acl.mdl.get_dynamic_batch``'s dictionary
    (``{"batchCount": n, "batch": [..]}``); ``batchCount == 0`` means a static model that
    runs only at ``static_batch`` (the batch dimension of its input).

    >>> limits_from_dynamic_batch({"batchCount": 3, "batch": [8, 1, 4, 0]}, 0).choices
    (1, 4, 8)
    """
    count = int(info.get("batchCount", 0)) if info else 0
    if count > 0:
        gears = [int(b) for b in list(info["batch"])[:count] if int(b) > 0]  # type: ignore[index]
        if gears:
            return BatchLimits(choices=tuple(gears))
    if static_batch < 1:
        raise FormatError(
            "the OM model has neither a static batch nor dynamic batch gears; rebuild it with "
            "`reidctl convert om --bs 1,4,8,16,32` (or --static --bs N)"
        )
    return BatchLimits(choices=(static_batch,))


def check_om_file(model_file: str) -> None:
    """:class:`FormatError` unless the OM model file exists."""
    if not Path(model_file).is_file():
        raise FormatError(f"OM model not found: {model_file}")


def dtype_name(name: str) -> str:
    """A numpy dtype name for a back end's type name (``float32`` when numpy has none)."""
    try:
        return str(np.dtype(name))
    except TypeError:
        return "float32"


def _check(ret: int, what: str) -> None:
    if ret != 0:
        raise FormatError(f"pyACL call {what} failed with error code {ret}")


@register_runner
class AclRunner(Runner):
    """An OM model on an Ascend NPU through pyACL. Options: ``device`` (NPU id, default 0)."""

    name = "acl"
    suffixes = (".om",)
    install_hint = INSTALL_HINT
    accepted_options = ("device",)

    def activate_impl(self) -> None:
        check_om_file(self.model_file)
        self.device_id = int(self.options.get("device") or 0)
        self._resources: list[tuple[str, Any]] = []  # released in reverse order
        try:
            self._activate_acl()
        except BaseException:
            self._release()
            raise

    # ------------------------------------------------------------------ pyACL
    def _activate_acl(self) -> None:
        acl = import_backend("acl", self.name, self.install_hint)
        self.acl = acl
        _check(acl.init(), "acl.init")
        self._resources.append(("finalize", None))
        _check(acl.rt.set_device(self.device_id), "acl.rt.set_device")
        self._resources.append(("reset_device", self.device_id))
        self.context, ret = acl.rt.create_context(self.device_id)
        _check(ret, "acl.rt.create_context")
        self._resources.append(("destroy_context", self.context))
        self.model_id, ret = acl.mdl.load_from_file(self.model_file)
        _check(ret, f"acl.mdl.load_from_file({self.model_file})")
        self._resources.append(("unload", self.model_id))
        self.desc = acl.mdl.create_desc()
        self._resources.append(("destroy_desc", self.desc))
        _check(acl.mdl.get_desc(self.desc, self.model_id), "acl.mdl.get_desc")

        n_in = acl.mdl.get_num_inputs(self.desc)
        n_out = acl.mdl.get_num_outputs(self.desc)
        self.dyn_index, ret = acl.mdl.get_input_index_by_name(self.desc, DYNAMIC_BATCH_INPUT)
        if ret != 0:
            self.dyn_index = -1
        self.in_dataset, self.in_bufs = self._dataset(n_in, acl.mdl.get_input_size_by_index)
        self.out_dataset, self.out_bufs = self._dataset(n_out, acl.mdl.get_output_size_by_index)

        specs = []
        for i in range(n_in):
            if i == self.dyn_index:
                continue
            dims, ret = acl.mdl.get_input_dims(self.desc, i)
            _check(ret, "acl.mdl.get_input_dims")
            name = acl.mdl.get_input_name_by_index(self.desc, i)
            dtype = ACL_DTYPES.get(acl.mdl.get_input_data_type(self.desc, i), "float32")
            shape = tuple(int(d) if d > 0 else "batch" for d in dims["dims"])
            specs.append((i, TensorSpec(name, shape, dtype)))
        self._in_index = {s.name: i for i, s in specs}
        self._inputs = tuple(s for _, s in specs)
        first = self._inputs[0].shape[0]
        info = None
        if self.dyn_index >= 0:
            info, ret = acl.mdl.get_dynamic_batch(self.desc)
            _check(ret, "acl.mdl.get_dynamic_batch")
        self._limits = limits_from_dynamic_batch(info, first if isinstance(first, int) else 0)

        self.output_names, self._out_meta = [], []
        largest = int(self._limits.largest or 1)
        for i in range(n_out):
            dims, ret = acl.mdl.get_output_dims(self.desc, i)
            _check(ret, "acl.mdl.get_output_dims")
            # ATC reports ONNX outputs as "node:index:name"; keep the graph's output name
            raw = acl.mdl.get_output_name_by_index(self.desc, i)
            self.output_names.append(str(raw).split(":")[-1])
            dtype = np.dtype(ACL_DTYPES.get(acl.mdl.get_output_data_type(self.desc, i), "float32"))
            row_shape = tuple(int(d) for d in dims["dims"][1:])
            size = acl.mdl.get_output_size_by_index(self.desc, i)
            self._out_meta.append((dtype, row_shape, size // largest))

    def _dataset(self, n: int, size_of: Any) -> tuple[Any, list[tuple[int, int]]]:
        acl = self.acl
        dataset = acl.mdl.create_dataset()
        self._resources.append(("destroy_dataset", dataset))
        bufs = []
        for i in range(n):
            size = size_of(self.desc, i)
            ptr, ret = acl.rt.malloc(size, ACL_MEM_MALLOC_HUGE_FIRST)
            _check(ret, "acl.rt.malloc")
            self._resources.append(("free", ptr))
            buf = acl.create_data_buffer(ptr, size)
            self._resources.append(("destroy_data_buffer", buf))
            _, ret = acl.mdl.add_dataset_buffer(dataset, buf)
            _check(ret, "acl.mdl.add_dataset_buffer")
            bufs.append((ptr, size))
        return dataset, bufs

    def batch_limits(self) -> BatchLimits:
        return self._limits

    def input_specs_impl(self) -> tuple[TensorSpec, ...]:
        return self._inputs

    def infer_impl(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        batch = len(next(iter(feeds.values())))
        acl = self.acl
        _check(acl.rt.set_context(self.context), "acl.rt.set_context")
        keep = []
        for name, arr in feeds.items():
            data = np.ascontiguousarray(arr).tobytes()
            keep.append(data)  # the bytes must outlive the copy
            ptr, size = self.in_bufs[self._in_index[name]]
            if len(data) > size:
                raise InputError(f"acl: {len(data)} input bytes exceed the model's {size}")
            _check(
                acl.rt.memcpy(
                    ptr, size, acl.util.bytes_to_ptr(data), len(data), ACL_MEMCPY_HOST_TO_DEVICE
                ),
                "acl.rt.memcpy (host to device)",
            )
        if self.dyn_index >= 0:
            _check(
                acl.mdl.set_dynamic_batch_size(
                    self.model_id, self.in_dataset, self.dyn_index, batch
                ),
                f"acl.mdl.set_dynamic_batch_size({batch})",
            )
        _check(acl.mdl.execute(self.model_id, self.in_dataset, self.out_dataset), "acl.mdl.execute")
        outs = {}
        for name, (ptr, _), (dtype, row_shape, row_bytes) in zip(
            self.output_names, self.out_bufs, self._out_meta, strict=True
        ):
            nbytes = row_bytes * batch
            host, ret = acl.rt.malloc_host(nbytes)
            _check(ret, "acl.rt.malloc_host")
            try:
                _check(
                    acl.rt.memcpy(host, nbytes, ptr, nbytes, ACL_MEMCPY_DEVICE_TO_HOST),
                    "acl.rt.memcpy (device to host)",
                )
                raw = acl.util.ptr_to_bytes(host, nbytes)
            finally:
                acl.rt.free_host(host)
            outs[name] = np.frombuffer(raw, dtype=dtype).reshape(batch, *row_shape).copy()
        return outs

    def deactivate_impl(self) -> None:
        self._release()

    def _release(self) -> None:
        acl = getattr(self, "acl", None)
        if acl is None:
            return
        release = {
            "destroy_data_buffer": acl.destroy_data_buffer,
            "free": acl.rt.free,
            "destroy_dataset": acl.mdl.destroy_dataset,
            "destroy_desc": acl.mdl.destroy_desc,
            "unload": acl.mdl.unload,
            "destroy_context": acl.rt.destroy_context,
            "reset_device": acl.rt.reset_device,
            "finalize": lambda _: acl.finalize(),
        }
        while self._resources:
            kind, handle = self._resources.pop()
            release[kind](handle)

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        if not has_module("acl"):
            return False, "pyACL (`acl`, from the CANN toolkit) is not installed"
        if not has_ascend_npu():
            return False, "no Ascend NPU/driver found (/dev/davinci*, npu-smi)"
        return True, "ok"

    def device_name(self) -> str:
        return f"npu:{self.device_id}"
