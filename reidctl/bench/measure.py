"""Timing: alternating rounds over several models, labels, runners, the whole run."""

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
from reidctl.bench.feeds import data_feeds, synthetic_feeds
from reidctl.bench.machine import machine_info
from reidctl.bench.result import BenchRecord, BenchResult, LatencyStats
from reidctl.bench.settings import DEFAULT_MODEL, BenchSettings
from reidctl.errors import InputError
from reidctl.io import sha256_file


def interleaved_order(n_models: int, rounds: int) -> list[int]:
    """Model indices in alternating rounds: ``A B`` then ``B A`` and so on (ABBA), so that
    neither model always runs first (warm caches, frequency steps) across rounds."""
    order: list[int] = []
    for r in range(rounds):
        seq = list(range(n_models))
        order += seq if r % 2 == 0 else seq[::-1]
    return order


def measure(
    calls: Sequence[Callable[[], float]],
    settings: BenchSettings,
    clock: Callable[[], float] = time.perf_counter,
) -> list[list[float]]:
    """Time each of ``calls`` (each runs one batch and returns its latency in seconds) in
    alternating rounds; returns the latencies per call.

    Every call first gets ``settings.warmup`` untimed runs. With ``iters`` each call gets
    exactly that many timed runs, spread over the rounds; with ``seconds`` each gets about
    that much inference time (at least ``min_iters`` runs).
    """
    n = len(calls)
    for call in calls:
        for _ in range(settings.warmup):
            call()
    lat: list[list[float]] = [[] for _ in range(n)]
    rounds = settings.rounds if n > 1 else 1
    order = interleaved_order(n, rounds)
    if settings.iters is not None:
        per_round = [
            settings.iters // rounds + (1 if r < settings.iters % rounds else 0)
            for r in range(rounds)
        ]
        for k, idx in enumerate(order):
            for _ in range(per_round[k // n]):
                lat[idx].append(calls[idx]())
        return lat
    assert settings.seconds is not None
    budget = settings.seconds / rounds
    for idx in order:
        spent, done = 0.0, 0
        t_end = clock() + budget * 4 + 1.0  # wall-clock backstop against a stalled back end
        while spent < budget or done < max(1, settings.min_iters // rounds):
            dt = calls[idx]()
            lat[idx].append(dt)
            spent, done = spent + dt, done + 1
            if clock() > t_end and done >= 1:
                break
    for idx, call in enumerate(calls):
        while len(lat[idx]) < settings.min_iters:
            lat[idx].append(call())
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

    ``model_files``: one model, or two (or more) to compare in alternating rounds (the first
    is the numerator of :meth:`BenchResult.ratios`). ``runner_factory(backend, model_file,
    options)`` builds a runner (default: ``reidctl.runners.get_runner(backend)(file,
    **options)``). ``progress`` receives one line per finished measurement.
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
    for backend in backends:
        with ExitStack() as stack:
            runners = [
                stack.enter_context(factory(backend, str(f), settings.runner_options()))
                for f in files
            ]
            for lab, runner in zip(labels, runners, strict=True):
                specs = runner.input_specs()
                result.models[lab].setdefault("inputs", [s.to_dict() for s in specs])
            for bs in settings.batch_sizes:
                feeds: list[dict[str, np.ndarray]] = []
                skips: list[str | None] = []
                for side, runner in zip(sidecars, runners, strict=True):
                    specs = runner.input_specs()
                    if settings.data:
                        fd, skip = data_feeds(specs, bs, settings.data)
                    else:
                        known = side.inputs if side is not None else ()
                        fd, skip = synthetic_feeds(specs, bs, settings.seed, known)
                    feeds.append(fd or {})
                    skips.append(skip)
                live = [i for i, s in enumerate(skips) if s is None]
                calls = [_timed_call(runners[i], feeds[i]) for i in live]
                lat = measure(calls, settings) if calls else []
                for i, lab in enumerate(labels):
                    if skips[i] is not None:
                        result.records.append(BenchRecord(lab, backend, bs, None, skips[i]))
                        continue
                    stats = LatencyStats.from_latencies(bs, lat[live.index(i)])
                    result.records.append(BenchRecord(lab, backend, bs, stats))
                    if progress:
                        progress(
                            f"{backend:>9} bs {bs:>3} {lab}: {stats.images_per_s:9.1f} img/s, "
                            f"p50 {stats.p50_ms:.2f} ms"
                        )
    return result


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
