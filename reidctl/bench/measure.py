"""Timing: interleaved repeats over every cell, labels, runners, the whole run."""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np

from reidctl.artifacts import ModelSidecar, sidecar_path
from reidctl.bench.feeds import data_feeds, index_bounds, synthetic_feeds
from reidctl.bench.machine import load_average, machine_info
from reidctl.bench.result import BenchRecord, BenchResult, LatencyStats
from reidctl.bench.settings import DEFAULT_MODEL, BenchSettings
from reidctl.errors import InputError
from reidctl.io import sha256_file


def interleaved_order(n_items: int, repeats: int) -> list[int]:
    """Cell indices of ``repeats`` repeats: every cell once per repeat, the order reversed
    every other repeat (``0 1 2 | 2 1 0 | 0 1 2``, i.e. A B B A for two), so that no cell
    always runs first or last (warm caches, frequency steps, a job starting mid-run)."""
    order: list[int] = []
    for r in range(repeats):
        seq = list(range(n_items))
        order += seq if r % 2 == 0 else seq[::-1]
    return order


#: ``on_slot(cell, repeat, latencies_s)``: called after each cell's turn in a repeat
SlotCallback = Callable[[int, int, list[float]], None]


def measure(
    calls: Sequence[Callable[[], float]],
    settings: BenchSettings,
    clock: Callable[[], float] = time.perf_counter,
    on_slot: SlotCallback | None = None,
) -> list[list[list[float]]]:
    """Time each of ``calls`` (each runs one batch of one cell and returns its latency in
    seconds) in ``settings.repeat`` interleaved repeats (:func:`interleaved_order`).

    Each turn of a call starts with untimed runs: ``settings.warmup`` in its first repeat,
    one in every later repeat when ``warmup > 0``: a back end that just ran other cells is
    slower on its first call (OpenVINO's first batch-1 call after them took about twice as
    long as the next ones). Then come exactly ``settings.iters`` timed runs, or, with
    ``seconds``, timed runs until ``seconds / repeat`` of inference time is spent (at least
    one; a wall-clock backstop ends a turn whose calls stall). Returns ``lat[call][repeat]``,
    the latencies in seconds.
    """
    n, repeats = len(calls), settings.repeat
    lat: list[list[list[float]]] = [[[] for _ in range(repeats)] for _ in range(n)]
    budget = (settings.seconds or 0.0) / repeats
    for k, idx in enumerate(interleaved_order(n, repeats)):
        r = k // n if n else 0
        got = lat[idx][r]
        for _ in range(settings.warmup if r == 0 else min(settings.warmup, 1)):
            calls[idx]()
        if settings.iters is not None:
            for _ in range(settings.iters):
                got.append(calls[idx]())
        else:
            spent = 0.0
            t_end = clock() + budget * 4 + 1.0  # backstop against a stalled back end
            while not got or spent < budget:
                dt = calls[idx]()
                got.append(dt)
                spent += dt
                if clock() > t_end:
                    break
        if on_slot is not None:
            on_slot(idx, r, got)
    return lat


def model_labels(model_files: Sequence[str | os.PathLike[str]]) -> list[str]:
    """Short, distinct labels: the file names, or more of the path where names collide."""
    paths = [Path(p) for p in model_files]
    for depth in range(1, 8):
        labels = ["/".join(p.parts[-depth:]) for p in paths]
        if len(set(labels)) == len(labels):
            return labels
    # the same file twice (e.g. to measure the noise of the setup): number the copies
    return [f"{p} #{i + 1}" for i, p in enumerate(paths)]


def load_sidecars(model_files: Sequence[Path]) -> list[ModelSidecar | None]:
    """Each model's sidecar, ``None`` where it has none; a malformed sidecar (invalid JSON,
    missing fields, unknown format) is a :class:`FormatError` (exit code 2), not ignored."""
    return [ModelSidecar.load_or_none(f) for f in model_files]


def make_runner(backend: str, model_file: str, options: dict[str, Any]) -> Any:
    """``get_runner(backend)(model_file, **options)`` with only the options that back end
    declares (:func:`reidctl.runners.options.options_for`), so ``--threads`` applies to every
    back end that has threads to set; the others warn that they ignore it."""

    from reidctl.runners import get_runner
    from reidctl.runners.options import given_options, options_for

    cls = get_runner(backend)
    kept = options_for(cls, options)
    dropped = sorted(set(given_options(options)) - set(kept))
    if dropped:
        warnings.warn(
            f"back end {backend!r} ignores {', '.join(dropped)} (it accepts: "
            f"{', '.join(cls.accepted_options) or 'no options'})",
            stacklevel=2,
        )
    return cls(model_file, **kept)


def run_bench(
    model_files: Sequence[str | os.PathLike[str]],
    backends: Sequence[str],
    settings: BenchSettings,
    *,
    progress: Callable[[str], None] | None = None,
    runner_factory: Callable[[str, str, dict[str, Any]], Any] | None = None,
) -> BenchResult:
    """Measure every model on every back end at every batch size.

    Every (model, back end, batch size) cell runs in ``settings.repeat`` repeats, all cells
    interleaved (:func:`measure`): the models of one back end and batch size are adjacent
    in each repeat, so a ratio (``--vs``) compares figures taken moments apart, and drift
    in the machine's load spreads over every cell instead of spoiling one.

    ``model_files``: one model, or two (or more) to compare (the first is the numerator of
    :meth:`BenchResult.ratios`). ``runner_factory(backend, model_file, options)`` builds a
    runner (default: ``reidctl.runners.get_runner(backend)(file, **options)``); the runners
    of all back ends are open together. ``progress`` receives one line per cell and repeat.
    The machine's load average is recorded at the start and end
    (:attr:`BenchResult.load_average`); a figure above the core count is a warning.
    """
    files = [Path(f) for f in model_files]
    for f in files:
        if not f.exists():
            raise InputError(f"model file not found: {f}")
    if not backends:
        raise InputError("no back end given; e.g. --backend ort")
    labels = model_labels(files)
    sidecars = load_sidecars(files)
    if settings.data:
        from reidctl.artifacts import PrepSet, check_prep_fits_model

        prep = PrepSet.open(settings.data)
        for f, side in zip(files, sidecars, strict=True):
            fit = check_prep_fits_model(
                prep,
                f,
                side.preprocess if side is not None else None,
                allow_mismatch=settings.allow_preprocess_mismatch,
            )
            if "note" in fit:
                warnings.warn(fit["note"], stacklevel=2)
    if runner_factory is None:
        from reidctl.runners import get_runner
        from reidctl.runners.options import check_some_accepts

        check_some_accepts([get_runner(b) for b in backends], settings.runner_options())
    factory = runner_factory or make_runner
    result = BenchResult(
        models={
            lab: {
                "file": str(f.resolve()),
                "sha256": sha256_file(f) if f.is_file() else None,
                "model": side.model if side is not None else None,
            }
            for lab, f, side in zip(labels, files, sidecars, strict=True)
        },
        backends=tuple(backends),
        settings=settings,
        machine=machine_info(),
    )
    cores = int(result.machine.get("logical_cores") or 1)
    start = load_average()
    _check_load(result, start, cores, "start")
    # cells in table order: back end, then batch size, then model (adjacent in a repeat)
    cells: list[tuple[str, int, int]] = []  # (backend, batch size, model index)
    skipped: dict[tuple[str, int, int], str] = {}
    calls: list[Callable[[], float]] = []
    with ExitStack() as stack:
        for backend in backends:
            runners = [
                stack.enter_context(factory(backend, str(f), settings.runner_options()))
                for f in files
            ]
            for lab, runner in zip(labels, runners, strict=True):
                specs = runner.input_specs()
                result.models[lab].setdefault("inputs", [s.to_dict() for s in specs])
            for bs in settings.batch_sizes:
                for i, (side, runner) in enumerate(zip(sidecars, runners, strict=True)):
                    specs = runner.input_specs()
                    if settings.data:
                        fd, skip = data_feeds(specs, bs, settings.data)
                    else:
                        known = side.inputs if side is not None else ()
                        fd, skip = synthetic_feeds(
                            specs, bs, settings.seed, known, index_bounds(side)
                        )
                    if skip is not None or fd is None:
                        skipped[(backend, bs, i)] = skip or "no input"
                    else:
                        cells.append((backend, bs, i))
                        calls.append(_timed_call(runner, fd))

        def report(idx: int, r: int, got: list[float]) -> None:
            if progress is None:
                return
            backend, bs, i = cells[idx]
            rate = bs * len(got) / sum(got) if sum(got) > 0 else float("inf")
            progress(
                f"repeat {r + 1}/{settings.repeat} {backend:>9} bs {bs:>3} {labels[i]}: "
                f"{rate:9.1f} img/s, {len(got)} calls"
            )

        lat = measure(calls, settings, on_slot=report) if calls else []
    end = load_average()
    _check_load(result, end, cores, "end")
    result.load_average = {
        "cores": cores,
        "start": list(start) if start is not None else None,
        "end": list(end) if end is not None else None,
        "busy": any(x is not None and x[0] > cores for x in (start, end)),
    }
    stats = {cell: LatencyStats.from_repeats(cell[1], lat[k]) for k, cell in enumerate(cells)}
    for backend in backends:
        for bs in settings.batch_sizes:
            for i, lab in enumerate(labels):
                key = (backend, bs, i)
                if key in skipped:
                    result.records.append(BenchRecord(lab, backend, bs, None, skipped[key]))
                else:
                    result.records.append(BenchRecord(lab, backend, bs, stats[key]))
    return result


def _check_load(
    result: BenchResult, load: tuple[float, float, float] | None, cores: int, when: str
) -> None:
    import warnings

    if load is not None and load[0] > cores:
        msg = (
            f"load average {load[0]:.2f} at the {when} of the run exceeds the {cores} cores: "
            "other jobs compete for the CPU, so throughput is low and noisy; measure on a "
            "quieter machine"
        )
        result.notes.append(msg)
        warnings.warn(msg, stacklevel=3)


def _timed_call(runner: Any, feeds: dict[str, np.ndarray]) -> Callable[[], float]:
    def call() -> float:
        t0 = time.perf_counter()
        runner.infer(feeds)
        dt = runner.last_latency_s
        return float(dt) if dt is not None else time.perf_counter() - t0

    return call


# --------------------------------------------------------------------------- default model


def cache_dir() -> Path:
    """``$REIDCTL_CACHE``, else ``$XDG_CACHE_HOME/reidctl``, else ``~/.cache/reidctl``."""
    if os.environ.get("REIDCTL_CACHE"):
        return Path(os.environ["REIDCTL_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "reidctl"


def default_model_file(name: str = DEFAULT_MODEL, root: Path | None = None) -> tuple[Path, bool]:
    """The ONNX export of registered model ``name`` (random weights) in the cache; exports it
    on first use. Returns ``(path, exported_now)``."""

    path = (root or cache_dir()) / name / "model.onnx"
    if path.is_file() and sidecar_path(path).is_file():
        return path, False
    from reidctl.convert.onnx import onnx_from_torch
    from reidctl.models.loading import RandomInitWarning

    with warnings.catch_warnings():
        # random weights are the point here: throughput does not depend on them
        warnings.simplefilter("ignore", RandomInitWarning)
        onnx_from_torch(name, path, force=True)
    return path, True
