"""What to measure and how long: :class:`BenchSettings` and the option parsers."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from reidctl.errors import InputError
from reidctl.parsing import parse_int_list as parse_int_list  # re-exported

BENCH_FORMAT = "reidctl.bench/2"
DEFAULT_BATCH_SIZES: tuple[int, ...] = (1, 4, 8, 16, 32)
DEFAULT_MODEL = "aligned_reid"
#: default number of repeats of every (model, back end, batch size) cell
DEFAULT_REPEAT = 3
#: a cell whose per-repeat throughput spreads by more than this ((max - min) / median) is
#: flagged as unstable
SPREAD_LIMIT = 0.10


def parse_name_list(text: str) -> tuple[str, ...]:
    """``"ort, openvino"`` -> ``("ort", "openvino")`` (order kept, duplicates dropped)."""
    names = tuple(dict.fromkeys(n.strip() for n in str(text).split(",") if n.strip()))
    if not names:
        raise InputError(f"expected a comma-separated list of names, got {text!r}")
    return names


@dataclass(frozen=True)
class BenchSettings:
    """How long and how to measure.

    Every (model, back end, batch size) cell is measured in ``repeat`` repeats; each repeat
    visits every cell once, in an interleaved order (see
    :func:`reidctl.bench.measure.interleaved_order`). ``seconds`` is the inference time per
    cell in all, split evenly over the repeats; ``iters`` fixes the number of timed calls
    of a cell in each repeat instead (it wins when both are set; ``iters * repeat`` calls in
    all). ``warmup`` untimed calls precede a cell's first repeat. ``threads`` is passed to
    the runner (``None``: the back end's default). ``seed`` fixes the synthetic inputs.

    Each field is the CLI option of the same name (``batch_sizes`` is ``--bs``); an invalid
    value is an :class:`InputError` that names the option and its valid range.
    ``data`` is a preprocessed set to time instead; its preprocessing must match each
    model's sidecar unless ``allow_preprocess_mismatch``.
    """

    batch_sizes: tuple[int, ...] = DEFAULT_BATCH_SIZES
    seconds: float | None = 3.0
    iters: int | None = None
    warmup: int = 3
    repeat: int = DEFAULT_REPEAT
    threads: int | None = None
    seed: int = 0
    data: str | None = None
    allow_preprocess_mismatch: bool = False

    def __post_init__(self) -> None:
        if not self.batch_sizes or any(not _is_int(b) or b < 1 for b in self.batch_sizes):
            raise InputError(
                "--bs must be comma-separated integers >= 1 such as 1,4,8,16,32; "
                f"got {list(self.batch_sizes)}"
            )
        if self.iters is not None:
            if not _is_int(self.iters) or self.iters < 1:
                raise InputError(
                    f"--iters must be an integer >= 1 (timed calls per repeat), got {self.iters}"
                )
        elif self.seconds is None:
            raise InputError("give --seconds S (a number > 0) or --iters N (>= 1)")
        if self.seconds is not None and not (
            isinstance(self.seconds, int | float)
            and math.isfinite(self.seconds)
            and self.seconds > 0
        ):
            raise InputError(
                f"--seconds must be a number > 0 (inference time per cell), got {self.seconds}"
            )
        if not _is_int(self.warmup) or self.warmup < 0:
            raise InputError(f"--warmup must be an integer >= 0, got {self.warmup}")
        if not _is_int(self.repeat) or self.repeat < 1:
            raise InputError(
                f"--repeat must be an integer >= 1 (3 or more to see the spread), got {self.repeat}"
            )
        if self.threads is not None and (not _is_int(self.threads) or self.threads < 1):
            raise InputError(f"--threads must be an integer >= 1, got {self.threads}")

    def runner_options(self) -> dict[str, Any]:
        return {} if self.threads is None else {"threads": self.threads}


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)
