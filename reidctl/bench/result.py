"""What a benchmark measured: per-call statistics, records and the whole result."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from reidctl.artifacts import tool_info
from reidctl.bench.settings import BENCH_FORMAT, BenchSettings
from reidctl.errors import InputError


@dataclass(frozen=True)
class LatencyStats:
    """Figures of one (model, back end, batch size) measurement.

    Latencies are per call (one batch) in milliseconds; ``images_per_s`` is
    ``batch_size * iterations / total_s`` with ``total_s`` the summed call time in seconds.
    """

    batch_size: int
    iterations: int
    total_s: float
    images_per_s: float
    mean_ms: float
    min_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float

    @classmethod
    def from_latencies(cls, batch_size: int, latencies_s: Sequence[float]) -> LatencyStats:
        """Summarise call times (seconds); percentiles interpolate linearly (numpy default)."""
        if not latencies_s:
            raise InputError("no timed calls to summarise")
        lat = np.asarray(latencies_s, dtype=np.float64)
        if np.any(lat < 0):
            raise InputError("latencies must be >= 0 seconds")
        total = float(lat.sum())
        p50, p90, p99 = (float(v) * 1e3 for v in np.percentile(lat, [50, 90, 99]))
        return cls(
            batch_size=batch_size,
            iterations=int(lat.size),
            total_s=total,
            images_per_s=batch_size * lat.size / total if total > 0 else float("inf"),
            mean_ms=float(lat.mean()) * 1e3,
            min_ms=float(lat.min()) * 1e3,
            p50_ms=p50,
            p90_ms=p90,
            p99_ms=p99,
        )


@dataclass(frozen=True)
class BenchRecord:
    """One row of results: ``model`` is the label of the model file (see :func:`model_labels`).

    ``stats`` is ``None`` when the combination was skipped; ``skipped`` then says why (e.g. a
    model with a static batch of 8 cannot run batch 4).
    """

    model: str
    backend: str
    batch_size: int
    stats: LatencyStats | None
    skipped: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"model": self.model, "backend": self.backend, "skipped": self.skipped}
        d.update(asdict(self.stats) if self.stats else {"batch_size": self.batch_size})
        return d


@dataclass
class BenchResult:
    """Everything one ``reidctl bench`` run measured, plus where and on what."""

    models: dict[str, dict[str, Any]]  # label -> {"file", "sha256", "input"}
    backends: tuple[str, ...]
    settings: BenchSettings
    records: list[BenchRecord] = field(default_factory=list)
    machine: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def get(self, model: str, backend: str, batch_size: int) -> BenchRecord | None:
        for r in self.records:
            if (r.model, r.backend, r.batch_size) == (model, backend, batch_size):
                return r
        return None

    def throughput(self, model: str, backend: str, batch_size: int) -> float | None:
        r = self.get(model, backend, batch_size)
        return r.stats.images_per_s if r is not None and r.stats is not None else None

    def ratios(self, backend: str) -> dict[int, float | None]:
        """Throughput of the first model over the second, per batch size (``--vs``)."""
        labels = list(self.models)
        if len(labels) < 2:
            raise InputError("a ratio needs two models (--vs OTHER_MODEL_FILE)")
        out: dict[int, float | None] = {}
        for bs in self.settings.batch_sizes:
            a = self.throughput(labels[0], backend, bs)
            b = self.throughput(labels[1], backend, bs)
            out[bs] = a / b if a and b else None
        return out

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "format": BENCH_FORMAT,
            "tool": tool_info(),
            "models": self.models,
            "backends": list(self.backends),
            "settings": {**asdict(self.settings), "batch_sizes": list(self.settings.batch_sizes)},
            "machine": self.machine,
            "results": [r.to_dict() for r in self.records],
            "notes": list(self.notes),
        }
        if len(self.models) >= 2:
            d["ratios"] = {b: {str(k): v for k, v in self.ratios(b).items()} for b in self.backends}
        return d
