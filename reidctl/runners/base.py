"""The runner contract, in the spirit of Polygraphy's runners.

A runner wraps one model on one back end::

    with get_runner("ort")(model_file) as runner:        # activate() ... deactivate()
        outputs = runner.infer({"image": batch})         # {output name: np.ndarray}
        runner.last_latency_s                            # wall time of that call

Subclasses implement ``activate_impl``, ``infer_impl``, ``deactivate_impl`` and
``input_specs_impl``; the base class checks the feeds (names, dtypes, ranks, fixed dims)
against the input specs and times every call. Back-end packages are imported inside
``activate_impl`` (never at module import), so a missing package only fails the runner that
needs it, with :class:`reidctl.errors.BackendUnavailableError` and its install hint.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from reidctl.errors import InputError, ReidctlError, ShapeMismatchError
from reidctl.specs import TensorSpec


class Runner(ABC):
    """Base class of every back end. Use as a context manager."""

    #: registry name, e.g. ``"ort"``
    name: ClassVar[str] = ""
    #: model file suffixes this runner reads, e.g. ``(".onnx",)``
    suffixes: ClassVar[tuple[str, ...]] = ()
    #: pip/apt hint printed when the back end is unavailable
    install_hint: ClassVar[str] = ""

    def __init__(self, model_file: str, **options: Any) -> None:
        self.model_file = str(model_file)
        self.options = options
        self.is_active = False
        self.last_latency_s: float | None = None
        self.latencies_s: list[float] = []

    # ---------------------------------------------------------------- lifecycle
    def activate(self) -> Runner:
        if not self.is_active:
            self.activate_impl()
            self.is_active = True
        return self

    def deactivate(self) -> None:
        if self.is_active:
            try:
                self.deactivate_impl()
            finally:
                self.is_active = False

    def __enter__(self) -> Runner:
        return self.activate()

    def __exit__(self, *exc: object) -> None:
        self.deactivate()

    # ---------------------------------------------------------------- inference
    def input_specs(self) -> tuple[TensorSpec, ...]:
        """Inputs of the loaded model; dynamic dims are strings (e.g. ``"batch"``)."""
        self._require_active()
        return self.input_specs_impl()

    def infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one batch. Returns ``{output name: array}`` in the model's output order."""
        self._require_active()
        self.check_feeds(feeds)
        t0 = time.perf_counter()
        out = self.infer_impl(feeds)
        self.last_latency_s = time.perf_counter() - t0
        self.latencies_s.append(self.last_latency_s)
        return out

    def check_feeds(self, feeds: Mapping[str, np.ndarray]) -> None:
        specs = {s.name: s for s in self.input_specs()}
        missing = sorted(set(specs) - set(feeds))
        extra = sorted(set(feeds) - set(specs))
        if missing or extra:
            raise InputError(
                f"{self.name}: feeds do not match the model inputs "
                f"(missing: {missing or 'none'}, unexpected: {extra or 'none'}; "
                f"model inputs: {sorted(specs)})"
            )
        for name, arr in feeds.items():
            spec = specs[name]
            if np.dtype(arr.dtype) != np.dtype(spec.dtype):
                raise ShapeMismatchError(
                    f"{self.name}: input {name!r} has dtype {arr.dtype}, the model expects "
                    f"{spec.dtype}"
                )
            if len(arr.shape) != len(spec.shape) or any(
                isinstance(d, int) and d >= 0 and d != a for d, a in zip(spec.shape, arr.shape)
            ):
                raise ShapeMismatchError(
                    f"{self.name}: input {name!r} has shape {list(arr.shape)}, the model "
                    f"expects {list(spec.shape)}"
                )

    def _require_active(self) -> None:
        if not self.is_active:
            raise ReidctlError(f"runner {self.name!r} is not active: use it as a context manager")

    # ---------------------------------------------------------------- hooks
    @abstractmethod
    def activate_impl(self) -> None: ...

    @abstractmethod
    def input_specs_impl(self) -> tuple[TensorSpec, ...]: ...

    @abstractmethod
    def infer_impl(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def deactivate_impl(self) -> None:  # noqa: B027 - optional hook
        """Release back-end resources (sessions, device memory)."""

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        """``(available, reason)`` without activating anything; cheap."""
        return True, "ok"

    def device_name(self) -> str:
        """Human-readable device description for run.json."""
        return "cpu"
