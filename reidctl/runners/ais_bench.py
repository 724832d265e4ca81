"""Ascend runner through ais_bench: an OM model run by ``ais_bench``'s ``InferSession``.

The same OM models as :mod:`reidctl.runners.acl` (static, or with batch gears from ATC
``--dynamic_batch_size``), for machines where ais_bench is the installed tool. Select it
with ``--backend ais_bench``; ``.om`` files default to the pyACL runner ``acl``.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from reidctl.runners import register_runner
from reidctl.runners._env import has_ascend_npu, has_module, import_backend
from reidctl.runners.acl import (
    DYNAMIC_BATCH_INPUT,
    check_om_file,
    dtype_name,
    limits_from_dynamic_batch,
)
from reidctl.runners.base import Runner
from reidctl.runners.batching import BatchLimits
from reidctl.specs import TensorSpec

INSTALL_HINT = (
    "ais_bench (pip install the aclruntime and ais_bench wheels from the Ascend tools "
    "repository) and the CANN toolkit, on a machine with an Ascend NPU and driver"
)


@register_runner
class AisBenchRunner(Runner):
    """An OM model on an Ascend NPU through ais_bench. Options: ``device`` (NPU id, default 0)."""

    name = "ais_bench"
    suffixes = ()
    install_hint = INSTALL_HINT
    accepted_options = ("device",)
    packages = ("ais_bench", "aclruntime")

    def activate_impl(self) -> None:
        check_om_file(self.model_file)
        self.device_id = int(self.options.get("device") or 0)
        interface = import_backend("ais_bench.infer.interface", self.name, self.install_hint)
        self.session = interface.InferSession(self.device_id, self.model_file)
        ins = [i for i in self.session.get_inputs() if i.name != DYNAMIC_BATCH_INPUT]
        self._inputs = tuple(
            TensorSpec(
                i.name,
                tuple(int(d) if int(d) > 0 else "batch" for d in i.shape),
                dtype_name(str(i.datatype).split(".")[-1]),
            )
            for i in ins
        )
        self.output_names = [o.name for o in self.session.get_outputs()]
        first = self._inputs[0].shape[0]
        self._limits = limits_from_dynamic_batch(
            getattr(self.session, "get_dynamic_batch", lambda: None)(),
            first if isinstance(first, int) else 0,
        )

    def batch_limits(self) -> BatchLimits:
        return self._limits

    def input_specs_impl(self) -> tuple[TensorSpec, ...]:
        return self._inputs

    def infer_impl(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        batch = len(next(iter(feeds.values())))
        arrays = [np.ascontiguousarray(feeds[s.name]) for s in self._inputs]
        mode = "dymbatch" if len(self._limits.choices or ()) > 1 else "static"
        outs = self.session.infer(arrays, mode=mode)
        return {n: np.asarray(o)[:batch] for n, o in zip(self.output_names, outs, strict=True)}

    def deactivate_impl(self) -> None:
        free = getattr(self.session, "free_resource", None)
        if free is not None:
            free()
        self.session = None

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        if not has_module("ais_bench"):
            return False, "ais_bench is not installed"
        if not has_ascend_npu():
            return False, "no Ascend NPU/driver found (/dev/davinci*, npu-smi)"
        return True, "ok"

    def device_name(self) -> str:
        return f"npu:{self.device_id}"
