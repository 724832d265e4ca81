"""Streaming from images vs preprocess + infer: wall time and peak memory, same images.

Run ``python -m reidctl.benchmarks.stream`` (a few minutes on 2 cores). It generates
``--num-images`` (default 5,000) synthetic 64x128 Market-1501-style JPEGs
(:func:`reidctl.preprocess.synthetic.make_synthetic_market`), exports each ``--model``
(default ``osnet_x0_25``; its registry initialisation: speed does not depend on the
weights) to ONNX, then runs on the same images, alternating in blocks (A B B A A B ...):

* **two-stage**: :func:`reidctl.preprocess.preprocess_dataset` (float32 tensor files on the
  work folder's disk) then :func:`reidctl.runners.infer.run_inference` (``ort``);
* **streaming**: :func:`reidctl.runners.infer.infer_images` (decoding processes feeding
  ``ort``, no tensor files).

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

PIPELINES = ("two-stage", "streaming")


# --------------------------------------------------------------------------- one run


def run_one(pipeline: str, model: Path, root: Path, out: Path, batch_size: int) -> float:
    """Run ``pipeline`` once; returns its wall time (s). Called in a fresh process."""
    from reidctl.preprocess import preprocess_dataset
    from reidctl.preprocess.config import spec_from_sidecar
    from reidctl.runners.infer import infer_images, run_inference

    t0 = time.perf_counter()
    if pipeline == "two-stage":
        prep = out / "prep"
        preprocess_dataset("market1501", root, prep, spec=spec_from_sidecar(model))
        run_inference(model, prep, out / "results", "ort", batch_size)
    else:
        infer_images(
            model, "market1501", root, out / "results", backend="ort", batch_size=batch_size
        )
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


def measure(pipeline: str, model: Path, root: Path, out: Path, batch_size: int) -> dict:
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
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    sampler = TreeSampler(proc.pid)
    sampler.start()
    stdout, _ = proc.communicate()
    sampler.stop()
    if proc.returncode != 0:
        raise RuntimeError(f"{pipeline} run failed (exit {proc.returncode})")
    wall = float(json.loads(stdout.strip().splitlines()[-1])["wall_s"])
    features = b"".join(p.read_bytes() for p in sorted((out / "results").rglob("*.npy")))
    shutil.rmtree(out, ignore_errors=True)
    os.sync()
    return {
        "pipeline": pipeline,
        "wall_s": wall,
        "rss_mib": sampler.peak_rss / 1024,
        "pss_mib": sampler.peak_pss / 1024,
        "load": load,
        "features": features,
    }


# --------------------------------------------------------------------------- main


def _order(repeats: int) -> list[str]:
    """A B B A A B ...: each pipeline first in half of the blocks."""
    out: list[str] = []
    for r in range(repeats):
        out.extend(PIPELINES if r % 2 == 0 else PIPELINES[::-1])
    return out


def bench_model(name: str, n: int, repeats: int, batch_size: int, work: Path) -> list[str]:
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
    print(f"\n{name}: {images} images, batch {batch_size}, {repeats} runs of each pipeline")
    runs = []
    for pipeline in _order(repeats):
        r = measure(pipeline, model, ds.root, work / "out", batch_size)
        runs.append(r)
        print(
            f"  {pipeline:10s} {r['wall_s']:7.2f} s  {images / r['wall_s']:7.1f} img/s  "
            f"peak RSS {r['rss_mib']:6.0f} MiB  PSS {r['pss_mib']:6.0f} MiB  "
            f"(load average {r['load']:.1f})",
            flush=True,
        )
    same = len({r["features"] for r in runs}) == 1
    rows = []
    stats = {}
    for p in PIPELINES:
        walls = [r["wall_s"] for r in runs if r["pipeline"] == p]
        stats[p] = statistics.median(walls)
        rows.append(
            f"| {name} | {images} | {p} | {stats[p]:.2f} | {min(walls):.2f}-{max(walls):.2f} | "
            f"{images / stats[p]:.0f} | "
            f"{max(r['rss_mib'] for r in runs if r['pipeline'] == p):.0f} | "
            f"{max(r['pss_mib'] for r in runs if r['pipeline'] == p):.0f} |"
        )
    ratio = stats["streaming"] / stats["two-stage"]
    pair = [
        s / t
        for s, t in zip(
            [r["wall_s"] for r in runs if r["pipeline"] == "streaming"],
            [r["wall_s"] for r in runs if r["pipeline"] == "two-stage"],
            strict=True,
        )
    ]
    rows.append(
        f"| {name} | | **streaming / two-stage** | **{ratio:.2f}x** | "
        f"{min(pair):.2f}-{max(pair):.2f}x (per block) | | | |"
    )
    print(f"  features identical across all runs: {same}")
    return rows


def main(argv: list[str] | None = None) -> int:
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--run-one":
        _, _, pipeline, model, root, out, bs = sys.argv
        wall = run_one(pipeline, Path(model), Path(root), Path(out), int(bs))
        print(json.dumps({"wall_s": wall}))
        return 0
    parser = argparse.ArgumentParser(
        prog="python -m reidctl.benchmarks.stream", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--model", action="append", help="registered model (repeatable)")
    parser.add_argument("--num-images", type=int, action="append", help="per --model")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each pipeline")
    parser.add_argument("--bs", type=int, default=32, help="batch size")
    parser.add_argument("--workdir", type=Path, default=None, help="default: a /tmp folder")
    args = parser.parse_args(argv)
    models = args.model or ["osnet_x0_25"]
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
            rows += bench_model(name, n, args.repeats, args.bs, work)
        print()
        print(
            "| model | images | pipeline | median s | range s | images/s | peak RSS MiB | "
            "peak PSS MiB |"
        )
        print("|---|---:|---|---:|---:|---:|---:|---:|")
        print("\n".join(rows))
        print(f"\nload average at the end: {os.getloadavg()}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
