"""Batch planning shared by every runner: split, pad and trim, as pure functions.

An engine accepts a set of batch sizes: any size in ``[min_batch, max_batch]`` (a TensorRT
optimisation profile, a dynamic ONNX model), or only a few fixed ``choices`` (an Ascend OM
model built with ``--dynamic_batch_size``, a static-batch ONNX or engine). :func:`plan_batches`
turns "run these ``n`` rows, at most ``batch_size`` at a time" into calls the engine accepts;
rows added as padding are trimmed from the outputs afterwards.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from reidctl.errors import InputError
from reidctl.parsing import parse_int_list


@dataclass(frozen=True)
class BatchLimits:
    """The batch sizes an engine accepts.

    ``choices`` (sorted, non-empty) lists the only sizes it runs at; otherwise any size from
    ``min_batch`` to ``max_batch`` (``None``: unbounded) is accepted.
    """

    min_batch: int = 1
    max_batch: int | None = None
    choices: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.choices is not None:
            if not self.choices or any(c < 1 for c in self.choices):
                raise InputError(f"batch choices must be positive integers, got {self.choices}")
            object.__setattr__(self, "choices", tuple(sorted(set(self.choices))))
        if self.min_batch < 1 or (self.max_batch is not None and self.max_batch < self.min_batch):
            raise InputError(
                f"invalid batch range [{self.min_batch}, {self.max_batch}]: need 1 <= min <= max"
            )

    @property
    def largest(self) -> int | None:
        """The largest batch one call may run, ``None`` when unbounded."""
        return self.choices[-1] if self.choices else self.max_batch

    def describe(self) -> str:
        if self.choices:
            return "batch sizes " + ",".join(map(str, self.choices))
        hi = "any" if self.max_batch is None else str(self.max_batch)
        return f"batch sizes {self.min_batch}..{hi}"


@dataclass(frozen=True)
class BatchStep:
    """One engine call: rows ``[start, start + count)`` run at batch ``run`` (>= count).

    ``run - count`` rows of padding are appended before the call and trimmed afterwards.
    """

    start: int
    count: int
    run: int

    @property
    def padding(self) -> int:
        return self.run - self.count


def run_size(count: int, limits: BatchLimits) -> int:
    """The batch a call of ``count`` rows runs at: the smallest accepted size >= ``count``.

    ``count`` must not exceed ``limits.largest``; :func:`plan_batches` guarantees it.
    """
    if limits.choices:
        for c in limits.choices:
            if c >= count:
                return c
        raise InputError(f"{count} rows exceed the largest accepted batch {limits.choices[-1]}")
    if limits.max_batch is not None and count > limits.max_batch:
        raise InputError(f"{count} rows exceed the largest accepted batch {limits.max_batch}")
    return max(count, limits.min_batch)


def plan_batches(n: int, batch_size: int, limits: BatchLimits | None = None) -> list[BatchStep]:
    """Split ``n`` rows into engine calls of at most ``batch_size`` rows each.

    A ``batch_size`` above the engine's largest accepted batch is lowered to it (the batch is
    split). With fixed ``choices`` the step is the largest choice <= ``batch_size``, so only
    the last call may need padding; it is padded up to the smallest choice that holds it
    (one padded call rather than several small ones). Below ``min_batch`` a call is padded.

    >>> [(s.start, s.count, s.run) for s in plan_batches(10, 4, BatchLimits(choices=(1, 4, 8)))]
    [(0, 4, 4), (4, 4, 4), (8, 2, 4)]
    """
    if batch_size < 1:
        raise InputError(f"batch size must be a positive integer, got {batch_size}")
    if n < 0:
        raise InputError(f"row count must be >= 0, got {n}")
    limits = limits or BatchLimits()
    step = batch_size
    if limits.choices:
        fitting = [c for c in limits.choices if c <= batch_size]
        step = fitting[-1] if fitting else min(batch_size, limits.choices[-1])
    elif limits.max_batch is not None:
        step = min(step, limits.max_batch)
    plan = []
    for start in range(0, n, step):
        count = min(step, n - start)
        plan.append(BatchStep(start, count, run_size(count, limits)))
    return plan


def parse_batch_sizes(value: str | Sequence[int], option: str = "--bs") -> list[int]:
    """``"1,4,8"`` (or a list) -> sorted unique positive batch sizes; :class:`InputError` else."""
    return list(parse_int_list(value, option, sort=True))
