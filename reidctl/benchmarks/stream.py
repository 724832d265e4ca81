"""Streaming from images vs preprocess + infer: wall time and peak memory, same images.

Run ``python -m reidctl.benchmarks.stream`` (a few minutes on 2 cores). It generates
``--num-images`` (default 5,000) synthetic 64x128 Market-1501-style JPEGs
(:func:`reidctl.preprocess.synthetic.make_synthetic_market`), exports each ``--model``
(default ``osnet_x0_25``; its registry initialisation: speed does not depend on the
weights) to ONNX, then runs on the same images, alternating in blocks (A B B A A B ...):

* **two-stage**: :func:`reidctl.preprocess.preprocess_dataset` (float32 tensor files on the
  work folder's disk) then :func:`reidctl.runners.infer.run_inference` (``ort``); both
  stages are timed;
* **streaming**: :func:`reidctl.runners.infer.infer_images` (decoders feeding ``ort``, no
  tensor files);
* **bare-ort** (the floor, not a pipeline): the ONNX Runtime runner alone, called as often
  as the images need, on one batch of random tensors held in memory.

Each is run with every ``--streams`` value (``ort``'s batches at once, 1 by default); the
ratio streaming / two-stage is given per value.

Each run is a fresh Python process (``--run-one``); its wall time covers the library calls
(scan, pools, model load, inference, result directory), not the interpreter start. The
parent samples the process tree every 250 ms (reading ``smaps_rollup`` of every process
costs CPU time: at 20 ms the sampler took 40 % of a core from the runs it measured) and
reports its peak memory: the sum of RSS
(pages shared between processes counted in each) and of PSS (shared pages split between
them, the fairer total). Outputs are deleted and ``os.sync()`` called between runs (not
timed). The work folder defaults to a temporary folder under ``/tmp``: give ``--workdir``
on the disk to be measured (not tmpfs). The load average is printed with every run: the
figures of a loaded machine are slower and noisier.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

PIPELINES = ("two-stage", "streaming", "bare-ort")


# --------------------------------------------------------------------------- one run


def run_one(
    pipeline: str, model: Path, root: Path, out: Path, batch_size: int, streams: int
) -> dict[str, float]:
    """Run ``pipeline`` once; returns its wall time (s), per stage for two-stage. Called in
    a fresh process."""
    from reidctl.preprocess import preprocess_dataset
    from reidctl.preprocess.config import spec_from_sidecar
    from reidctl.runners.infer import infer_images, run_inference

    options = {"streams": streams} if streams > 1 else {}
    t0 = time.perf_counter()
    if pipeline == "two-stage":
        prep = out / "prep"
        preprocess_dataset("market1501", root, prep, spec=spec_from_sidecar(model))
        t1 = time.perf_counter()
        run_inference(model, prep, out / "results", "ort", batch_size, **options)
        t2 = time.perf_counter()
        return {"wall_s": t2 - t0, "prep_s": t1 - t0, "infer_s": t2 - t1}
    if pipeline == "bare-ort":
        return {"wall_s": _bare_ort(model, root, batch_size, options)}
    infer_images(
        model, "market1501", root, out / "results", backend="ort", batch_size=batch_size, **options
    )
    return {"wall_s": time.perf_counter() - t0}


def _bare_ort(model: Path, root: Path, batch_size: int, options: dict[str, Any]) -> float:
    """Seconds the ``ort`` runner takes for as many batches as the images under ``root``
    make, fed one batch of random tensors from memory (no reading, no decoding)."""
    import numpy as np

    from reidctl.preprocess.layouts import scan_layout
    from reidctl.runners import get_runner
    from reidctl.runners.infer import run_calls

    n = len(scan_layout("market1501", root, ("query", "gallery")).records)
    with get_runner("ort")(str(model), **options) as runner:
        spec = runner.input_specs()[0]
        shape = [batch_size, *(int(d) for d in spec.shape[1:])]
        x = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
        calls = [(i, {spec.name: x[: min(batch_size, n - i)]}) for i in range(0, n, batch_size)]
        t0 = time.perf_counter()
        for _ in run_calls(runner, calls, stable=True):
            pass
        return time.perf_counter() - t0


# --------------------------------------------------------------------------- memory


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        kids.setdefault(ppid, []).append(int(d))
    return kids


def _tree(pid: int) -> list[int]:
    kids, out, todo = _children(), [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def _rss_pss_kib(pid: int) -> tuple[int, int]:
    rss = pss = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Rss:"):
                    rss = int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss = int(line.split()[1])
    except OSError:
        pass
    return rss, pss


class TreeSampler(threading.Thread):
    """Peak summed RSS and PSS (KiB) of a process and its descendants."""

    def __init__(self, pid: int, period_s: float = 0.25) -> None:
        super().__init__(daemon=True)
        self.pid, self.period_s = pid, period_s
        self.peak_rss = self.peak_pss = 0
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            rss = pss = 0
            for p in _tree(self.pid):
                r, s = _rss_pss_kib(p)
                rss, pss = rss + r, pss + s
            self.peak_rss, self.peak_pss = max(self.peak_rss, rss), max(self.peak_pss, pss)
            self._done.wait(self.period_s)

    def stop(self) -> None:
        self._done.set()
        self.join()


def measure(
    pipeline: str, model: Path, root: Path, out: Path, batch_size: int, streams: int
) -> dict:
    """One run in a child process: wall time (s), peak RSS / PSS of its tree (MiB)."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    os.sync()
    load = os.getloadavg()[0]
    cmd = [
        sys.executable,
        "-m",
        "reidctl.benchmarks.stream",
        "--run-one",
        pipeline,
        str(model),
        str(root),
        str(out),
        str(batch_size),
        str(streams),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    sampler = TreeSampler(proc.pid)
    sampler.start()
    stdout, _ = proc.communicate()
    sampler.stop()
    if proc.returncode != 0:
        raise RuntimeError(f"{pipeline} run failed (exit {proc.returncode})")
    times = json.loads(stdout.strip().splitlines()[-1])
    features = b"".join(p.read_bytes() for p in sorted((out / "results").rglob("*.npy")))
    shutil.rmtree(out, ignore_errors=True)
    os.sync()
    return {
        "pipeline": pipeline,
        "streams": streams,
        **times,
        "rss_mib": sampler.peak_rss / 1024,
        "pss_mib": sampler.peak_pss / 1024,
        "load": load,
        "features": features,
    }


# --------------------------------------------------------------------------- main


def _order(configs: list[tuple[str, int]], repeats: int) -> list[tuple[str, int]]:
    """A B C C B A A B C ...: the configurations in blocks, every other block reversed."""
    out: list[tuple[str, int]] = []
    for r in range(repeats):
        out.extend(configs if r % 2 == 0 else configs[::-1])
    return out


def _label(pipeline: str, streams: int) -> str:
    return pipeline if streams == 1 else f"{pipeline}, {streams} streams"


def bench_model(
    name: str, n: int, repeats: int, batch_size: int, work: Path, streams: list[int]
) -> list[str]:
    from reidctl.convert.onnx import onnx_from_torch
    from reidctl.preprocess.synthetic import make_synthetic_market

    ids = math.ceil(n / 5.5) + 1  # about 5.5 test images per identity
    ds = make_synthetic_market(
        work / f"data-{n}", ids, num_train_ids=0, num_distractors=0, num_junk=0
    )
    images = ds.num_query + ds.num_gallery
    model = work / f"{name}.onnx"
    if not model.exists():
        onnx_from_torch(name, model, validate_batches=(1,))
    configs = [(p, k) for k in streams for p in PIPELINES]
    print(f"\n{name}: {images} images, batch {batch_size}, {repeats} runs of each")
    runs = []
    for pipeline, k in _order(configs, repeats):
        r = measure(pipeline, model, ds.root, work / "out", batch_size, k)
        runs.append(r)
        stages = (
            f" (preprocess {r['prep_s']:.2f} + infer {r['infer_s']:.2f})" if "prep_s" in r else ""
        )
        print(
            f"  {_label(pipeline, k):24s} {r['wall_s']:7.2f} s  {images / r['wall_s']:7.1f} "
            f"img/s  peak RSS {r['rss_mib']:6.0f} MiB  PSS {r['pss_mib']:6.0f} MiB  "
            f"(load average {r['load']:.1f}){stages}",
            flush=True,
        )
    same = len({r["features"] for r in runs if r["pipeline"] != "bare-ort"}) == 1
    rows = []

    for k in streams:
        walls: dict[str, list[float]] = {}
        for p in PIPELINES:
            mine = [r for r in runs if r["pipeline"] == p and r["streams"] == k]
            w = walls[p] = [r["wall_s"] for r in mine]
            stages = ""
            if p == "two-stage":
                prep, infer = (statistics.median(r[s] for r in mine) for s in ("prep_s", "infer_s"))
                stages = f"{prep:.2f} + {infer:.2f}"
            rows.append(
                f"| {name} | {images} | {_label(p, k)} | {statistics.median(w):.2f} | "
                f"{min(w):.2f}-{max(w):.2f} | {images / statistics.median(w):.0f} | "
                f"{max(r['rss_mib'] for r in mine):.0f} | {max(r['pss_mib'] for r in mine):.0f} "
                f"| {stages} |"
            )
        ratio = statistics.median(walls["streaming"]) / statistics.median(walls["two-stage"])
        pair = [s / t for s, t in zip(walls["streaming"], walls["two-stage"], strict=True)]
        rows.append(
            f"| {name} | | **streaming / two-stage** | **{ratio:.2f}x** | "
            f"{min(pair):.2f}-{max(pair):.2f}x (per block) | | | | |"
        )
    print(f"  features identical across all pipeline runs: {same}")
    return rows


def main(argv: list[str] | None = None) -> int:
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--run-one":
        _, _, pipeline, model, root, out, bs, streams = sys.argv
        times = run_one(pipeline, Path(model), Path(root), Path(out), int(bs), int(streams))
        print(json.dumps(times))
        return 0
    parser = argparse.ArgumentParser(
        prog="python -m reidctl.benchmarks.stream", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--model", action="append", help="registered model (repeatable)")
    parser.add_argument("--num-images", type=int, action="append", help="per --model")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each pipeline")
    parser.add_argument("--bs", type=int, default=32, help="batch size")
    parser.add_argument(
        "--streams",
        type=int,
        action="append",
        help="ort streams for every pipeline (repeatable; default 1)",
    )
    parser.add_argument("--workdir", type=Path, default=None, help="default: a /tmp folder")
    args = parser.parse_args(argv)
    models = args.model or ["osnet_x0_25"]
    streams = args.streams or [1]
    if min(streams) < 1:
        parser.error("--streams must be positive")
    counts = args.num_images or [5000]
    if len(counts) == 1:
        counts = counts * len(models)
    if len(counts) != len(models):
        parser.error("give one --num-images, or one per --model")
    work = Path(tempfile.mkdtemp(prefix="reidctl-bench-stream-", dir=args.workdir))
    try:
        fs = subprocess.run(["df", "-h", str(work)], capture_output=True, text=True).stdout
        print(f"work folder {work} on:\n{fs.strip()}")
        print(f"{os.cpu_count()} cores, load average {os.getloadavg()}")
        rows = []
        for name, n in zip(models, counts, strict=True):
            rows += bench_model(name, n, args.repeats, args.bs, work, streams)
        print()
        print(
            "| model | images | pipeline | median s | range s | images/s | peak RSS MiB | "
            "peak PSS MiB | preprocess + infer s |"
        )
        print("|---|---:|---|---:|---:|---:|---:|---:|---:|")
        print("\n".join(rows))
        print(f"\nload average at the end: {os.getloadavg()}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
