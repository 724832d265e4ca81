"""What to measure and how long: :class:`BenchSettings` and the option parsers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from reidctl.errors import InputError
from reidctl.parsing import parse_int_list as parse_int_list  # re-exported

BENCH_FORMAT = "reidctl.bench/1"
DEFAULT_BATCH_SIZES: tuple[int, ...] = (1, 4, 8, 16, 32)
DEFAULT_MODEL = "aligned_reid"
#: packages whose versions go into bench.json (absent ones are left out)


def parse_name_list(text: str) -> tuple[str, ...]:
    """``"ort, openvino"`` -> ``("ort", "openvino")`` (order kept, duplicates dropped)."""
    names = tuple(dict.fromkeys(n.strip() for n in str(text).split(",") if n.strip()))
    if not names:
        raise InputError(f"expected a comma-separated list of names, got {text!r}")
    return names


@dataclass(frozen=True)
class BenchSettings:
    """How long and how to measure.

        ``seconds`` bounds the timed calls per (model, back end, batch size) in seconds of
        inference time; ``iters`` fixes the number of calls instead (it wins when both are set).
        ``warmup`` untimed calls precede the timed ones. ``min_iters`` calls are always timed so
        percentiles exist even for very slow models. ``threads`` is passed to the runner
        (``None``: the back end's default). ``rounds`` is the number of alternations when several
        models are compared. ``seed`` fixes the synthetic inputs. ``data`` is a preprocessed set
    to time instead; its preprocessing must match each model's sidecar unless
    ``allow_preprocess_mismatch``.
    """

    batch_sizes: tuple[int, ...] = DEFAULT_BATCH_SIZES
    seconds: float | None = 3.0
    iters: int | None = None
    warmup: int = 3
    min_iters: int = 3
    threads: int | None = None
    rounds: int = 6
    seed: int = 0
    data: str | None = None
    allow_preprocess_mismatch: bool = False

    def __post_init__(self) -> None:
        if not self.batch_sizes or any(b <= 0 for b in self.batch_sizes):
            raise InputError(f"batch sizes must be positive, got {list(self.batch_sizes)}")
        if self.iters is None and (self.seconds is None or self.seconds <= 0):
            raise InputError("give --seconds S (> 0) or --iters N to bound each measurement")
        if self.iters is not None and self.iters <= 0:
            raise InputError(f"--iters must be positive, got {self.iters}")
        if self.warmup < 0 or self.min_iters < 1 or self.rounds < 1:
            raise InputError("--warmup must be >= 0; min_iters and rounds >= 1")
        if self.threads is not None and self.threads <= 0:
            raise InputError(f"--threads must be positive, got {self.threads}")

    def runner_options(self) -> dict[str, Any]:
        return {} if self.threads is None else {"threads": self.threads}
