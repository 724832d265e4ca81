"""OpenVINO on the CPU, reading ONNX directly (or an OpenVINO IR ``.xml``)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from reidctl.errors import FormatError, InputError
from reidctl.runners import register_runner
from reidctl.runners._env import has_module, import_backend
from reidctl.runners.base import Runner
from reidctl.specs import TensorSpec

PRECISIONS = ("f32", "bf16", "f16")


@register_runner
class OpenVinoRunner(Runner):
    """OpenVINO Runtime, CPU plugin.

    Options: ``precision`` (``f32`` default, ``bf16`` or ``f16``: the CPU plugin's
    ``INFERENCE_PRECISION_HINT``; OpenVINO would otherwise pick bf16 on CPUs that support it,
    which changes features at the 1e-2 level), ``threads`` (``INFERENCE_NUM_THREADS``).
    Dynamic batch dimensions stay dynamic (the CPU plugin compiles for any batch).
    """

    name = "openvino"
    suffixes = (".xml",)
    install_hint = "pip install 'reidctl[openvino]'  (or: pip install openvino)"
    accepted_options = ("precision", "threads")
    packages = ("openvino",)

    def activate_impl(self) -> None:
        ov = import_backend("openvino", self.name, self.install_hint)
        precision = str(self.options.get("precision") or "f32")
        if precision not in PRECISIONS:
            raise InputError(
                f"unknown OpenVINO precision {precision!r}; valid: {', '.join(PRECISIONS)}"
            )
        config: dict[str, str] = {"INFERENCE_PRECISION_HINT": precision}
        if self.options.get("threads"):
            config["INFERENCE_NUM_THREADS"] = str(int(self.options["threads"]))
        self.core = ov.Core()
        try:
            model = self.core.read_model(self.model_file)
            self.compiled = self.core.compile_model(model, "CPU", config)
        except RuntimeError as e:
            raise FormatError(
                f"OpenVINO cannot read {self.model_file}: {str(e).strip().splitlines()[0]}"
            ) from e
        self.request = self.compiled.create_infer_request()
        self.precision = precision
        self._inputs = tuple(
            TensorSpec(
                p.get_any_name(),
                tuple(
                    d.get_length() if d.is_static else ("batch" if i == 0 else f"dim{i}")
                    for i, d in enumerate(p.get_partial_shape())
                ),
                str(np.dtype(p.get_element_type().to_dtype())),
            )
            for p in self.compiled.inputs
        )
        self.output_names = [p.get_any_name() for p in self.compiled.outputs]

    def input_specs_impl(self) -> tuple[TensorSpec, ...]:
        return self._inputs

    def infer_impl(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.request.infer(dict(feeds))
        # the request reuses its output tensors on the next call: copy them out
        return {
            name: self.request.get_output_tensor(i).data.copy()
            for i, name in enumerate(self.output_names)
        }

    def deactivate_impl(self) -> None:
        self.request = self.compiled = self.core = None

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        if not has_module("openvino"):
            return False, "the openvino package is not installed"
        return True, "ok"

    def device_name(self) -> str:
        try:
            cpu = self.core.get_property("CPU", "FULL_DEVICE_NAME")
        except Exception:  # a property name change must not fail a finished run
            cpu = "CPU"
        return f"cpu ({cpu}, {self.precision})"
