"""What a benchmark measured: per-call statistics, records and the whole result."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from reidctl.artifacts import tool_info
from reidctl.bench.settings import BENCH_FORMAT, SPREAD_LIMIT, BenchSettings
from reidctl.errors import InputError


@dataclass(frozen=True)
class LatencyStats:
    """Figures of one (model, back end, batch size) cell, measured in one or more repeats.

    Throughput is per repeat, ``batch_size * calls / summed call time`` of that repeat, in
    images per second: ``images_per_s`` is the median over the repeats,
    ``images_per_s_min`` / ``images_per_s_max`` their range and ``spread`` that range over
    the median (``None`` with a single repeat); ``unstable`` is ``spread > SPREAD_LIMIT``
    (10 %). Latencies are per call (one batch) in milliseconds over all calls of all
    repeats; ``iterations`` counts those calls and ``total_s`` sums their time in seconds.
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
    repeats: int = 1
    images_per_s_min: float = 0.0
    images_per_s_max: float = 0.0
    spread: float | None = None
    unstable: bool = False
    images_per_s_per_repeat: tuple[float, ...] = ()

    @classmethod
    def from_latencies(cls, batch_size: int, latencies_s: Sequence[float]) -> LatencyStats:
        """Summarise call times (seconds) of a single repeat."""
        return cls.from_repeats(batch_size, [latencies_s])

    @classmethod
    def from_repeats(cls, batch_size: int, repeats_s: Sequence[Sequence[float]]) -> LatencyStats:
        """Summarise call times (seconds), one sequence per repeat, each non-empty.

        Percentiles interpolate linearly (numpy's default) over all calls; the median of an
        even number of repeats is the mean of the two middle ones.
        """
        if not repeats_s or any(len(r) == 0 for r in repeats_s):
            raise InputError("no timed calls to summarise (every repeat needs one)")
        per = [np.asarray(r, dtype=np.float64) for r in repeats_s]
        lat = np.concatenate(per)
        if np.any(lat < 0):
            raise InputError("latencies must be >= 0 seconds")
        total = float(lat.sum())
        rates = [_rate(batch_size, r.size, float(r.sum())) for r in per]
        med = float(np.median(rates))
        lo, hi = float(min(rates)), float(max(rates))
        spread = (hi - lo) / med if len(rates) > 1 and 0 < med < float("inf") else None
        p50, p90, p99 = (float(v) * 1e3 for v in np.percentile(lat, [50, 90, 99]))
        return cls(
            batch_size=batch_size,
            iterations=int(lat.size),
            total_s=total,
            images_per_s=med,
            mean_ms=float(lat.mean()) * 1e3,
            min_ms=float(lat.min()) * 1e3,
            p50_ms=p50,
            p90_ms=p90,
            p99_ms=p99,
            repeats=len(per),
            images_per_s_min=lo,
            images_per_s_max=hi,
            spread=spread,
            unstable=spread is not None and spread > SPREAD_LIMIT,
            images_per_s_per_repeat=tuple(rates),
        )


def _rate(batch_size: int, calls: int, seconds: float) -> float:
    return batch_size * calls / seconds if seconds > 0 else float("inf")


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
        if self.stats is None:
            d["batch_size"] = self.batch_size
        else:
            d.update(asdict(self.stats))
            d["images_per_s_per_repeat"] = list(self.stats.images_per_s_per_repeat)
        return d


@dataclass
class BenchResult:
    """Everything one ``reidctl bench`` run measured, plus where and on what.

    ``load_average``: the machine's 1, 5 and 15 minute load averages at the ``start`` and
    ``end`` of the measurement (``None`` where the OS has none), the ``cores`` they are
    compared with and ``busy`` (the 1 minute figure exceeded the cores at either end).
    """

    models: dict[str, dict[str, Any]]  # label -> {"file", "sha256", "input"}
    backends: tuple[str, ...]
    settings: BenchSettings
    records: list[BenchRecord] = field(default_factory=list)
    machine: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    load_average: dict[str, Any] = field(default_factory=dict)

    def get(self, model: str, backend: str, batch_size: int) -> BenchRecord | None:
        for r in self.records:
            if (r.model, r.backend, r.batch_size) == (model, backend, batch_size):
                return r
        return None

    def stats(self, model: str, backend: str, batch_size: int) -> LatencyStats | None:
        r = self.get(model, backend, batch_size)
        return r.stats if r is not None else None

    def unstable(self) -> list[BenchRecord]:
        """The measured cells whose spread exceeds the limit (``LatencyStats.unstable``)."""
        return [r for r in self.records if r.stats is not None and r.stats.unstable]

    def throughput(self, model: str, backend: str, batch_size: int) -> float | None:
        """The median images/s over the repeats, ``None`` for a skipped cell."""
        r = self.get(model, backend, batch_size)
        return r.stats.images_per_s if r is not None and r.stats is not None else None

    def ratios(self, backend: str) -> dict[int, float | None]:
        """Median throughput of the first model over that of the second, per batch size
        (``--vs``)."""
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
            "load_average": self.load_average,
            "results": [r.to_dict() for r in self.records],
            "notes": list(self.notes),
        }
        if len(self.models) >= 2:
            d["ratios"] = {b: {str(k): v for k, v in self.ratios(b).items()} for b in self.backends}
        return d
