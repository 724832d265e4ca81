"""The runner contract, in the spirit of Polygraphy's runners.

A runner wraps one model on one back end::

    with get_runner("ort")(model_file) as runner:        # activate() ... deactivate()
        outputs = runner.infer({"image": batch})         # {output name: np.ndarray}
        runner.last_latency_s                            # wall time of that call

Subclasses implement ``activate_impl``, ``infer_impl``, ``deactivate_impl`` and
``input_specs_impl``; the base class checks the feeds (names, dtypes, ranks, fixed dims)
against the input specs and times every call. :meth:`Runner.infer_rows` runs any number of
rows on engines with a restricted batch (static models, TensorRT profiles, OM batch gears):
it splits, pads and trims according to :meth:`Runner.batch_limits`. Back-end packages are
imported inside ``activate_impl`` (never at module import), so a missing package only fails
the runner that needs it, with :class:`reidctl.errors.BackendUnavailableError` and its install hint.
"""

from __future__ import annotations

import importlib.metadata
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from reidctl.errors import InputError, ReidctlError, ShapeMismatchError
from reidctl.runners.batching import BatchLimits, plan_batches
from reidctl.runners.options import check_options
from reidctl.specs import TensorSpec


class Runner(ABC):
    """Base class of every back end. Use as a context manager."""

    #: registry name, e.g. ``"ort"``
    name: ClassVar[str] = ""
    #: model file suffixes this runner reads, e.g. ``(".onnx",)``
    suffixes: ClassVar[tuple[str, ...]] = ()
    #: pip/apt hint printed when the back end is unavailable
    install_hint: ClassVar[str] = ""
    #: keyword options the constructor understands (e.g. ``("threads",)``)
    accepted_options: ClassVar[tuple[str, ...]] = ()
    #: distribution names whose versions go into run.json (e.g. ``("onnxruntime",)``)
    packages: ClassVar[tuple[str, ...]] = ()

    def __init__(self, model_file: str, **options: Any) -> None:
        """``options``: keyword options of this back end (:attr:`accepted_options`); ``None``
        and ``False`` mean "not given". Any other option raises :class:`InputError` listing
        the valid ones."""
        self.model_file = str(model_file)
        self.options = check_options(type(self), options)
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
    @property
    def concurrency(self) -> int:
        """How many :meth:`infer` calls this runner may run at once, from different threads
        (1: one call at a time, the default). :func:`reidctl.runners.infer.run_batches` keeps
        that many batches in flight."""
        return 1

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

    def infer_rows(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run any number of rows (axis 0), whatever batch sizes the engine accepts.

        Rows are split into calls planned by :func:`plan_batches` from :meth:`batch_limits`;
        padded rows (zeros) are trimmed from the outputs. Returns ``{output: array}`` with
        as many rows as the feeds. Every output must have one row per input row (axis 0 of
        the size fed): :class:`ShapeMismatchError` names an output that does not (a scalar,
        or a reduction over the batch axis), rather than copying one row to every image.
        """
        n = len(next(iter(feeds.values())))
        plan = plan_batches(n, max(n, 1), self.batch_limits())
        if len(plan) == 1 and plan[0].padding == 0:
            return self.check_rows(self.infer(feeds), n)
        parts: list[dict[str, np.ndarray]] = []
        for step in plan:
            sub = {}
            for k, v in feeds.items():
                rows = v[step.start : step.start + step.count]
                if step.padding:
                    pad = np.zeros((step.padding, *rows.shape[1:]), dtype=rows.dtype)
                    rows = np.concatenate([rows, pad])
                sub[k] = rows
            out = self.check_rows(self.infer(sub), step.count + step.padding)
            parts.append({k: v[: step.count] for k, v in out.items()})
        if not parts:
            return {}
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def check_rows(self, outputs: dict[str, np.ndarray], rows: int) -> dict[str, np.ndarray]:
        """``outputs`` of a call fed ``rows`` rows, unchanged when every output's axis 0 has
        ``rows`` entries; :class:`ShapeMismatchError` naming the first output that does not."""
        for name, arr in outputs.items():
            shape = list(np.shape(arr))
            if not shape or shape[0] != rows:
                raise ShapeMismatchError(
                    f"{self.model_file}: output {name!r} has shape {shape} for a batch of "
                    f"{rows} rows; every output needs one row per input row (axis 0 = "
                    "batch). A scalar or an output reduced over the batch axis cannot be "
                    "split into per-image results: re-export the model with the batch axis "
                    "kept on every output"
                )
        return outputs

    def batch_limits(self) -> BatchLimits:
        """Batch sizes the loaded model accepts; default: the first input's batch dimension.

        A fixed (int) batch dimension means a static model that runs only at that batch.
        """
        specs = self.input_specs()
        dim = specs[0].shape[0] if specs and specs[0].shape else None
        if isinstance(dim, int) and dim > 0:
            return BatchLimits(choices=(dim,))
        return BatchLimits()

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
                isinstance(d, int) and d >= 0 and d != a
                for d, a in zip(spec.shape, arr.shape, strict=True)
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

    @classmethod
    def versions(cls) -> dict[str, str]:
        """Installed versions of :attr:`packages` (absent ones are left out)."""
        out = {}
        for dist in cls.packages:
            try:
                out[dist] = importlib.metadata.version(dist)
            except importlib.metadata.PackageNotFoundError:
                continue
        return out
