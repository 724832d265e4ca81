"""Inference scaling on Ray: 1 vs 2 local workers (one thread each) on the same tensors.

Run ``python -m reidctl.benchmarks.ray_scaling`` (512 tensors of 3x256x128 through OSNet
x0.25 with random weights, exported to ONNX in a temporary folder) or pass ``--model``
for your own ONNX (its sidecar's input size is used). A local Ray instance is started once
with ``--cpus`` CPUs; every configuration runs ``--repeats`` times and the best is kept.

Reported per configuration: shard processing wall time (``run.json`` ``wall_s``: from the
first shard submitted to the last one back, model loading excluded), images per second,
end-to-end time of the call (Ray actors started and models loaded included), and the
speed-up over the 1-worker Ray run and over a single-process ``run_inference`` with one
onnxruntime thread measured in the same run (the baseline).

Examples::

    python -m reidctl.benchmarks.ray_scaling
    python -m reidctl.benchmarks.ray_scaling --model osnet.onnx --n 2048
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

from reidctl.artifacts import ModelSidecar
from reidctl.preprocess.random_set import write_random_prep


def main(argv: list[str] | None = None) -> int:
    """Images/s of `infer --engine ray` with 1 and 2 workers, against one process."""
    ap = argparse.ArgumentParser(
        prog="python -m reidctl.benchmarks.ray_scaling",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--n", type=int, default=512, help="tensors to infer (default 512)")
    ap.add_argument("--model", type=Path, help="ONNX model (default: OSNet x0.25, random)")
    ap.add_argument("--bs", dest="batch_size", type=int, default=16, help="batch (default 16)")
    ap.add_argument("--shard-size", type=int, default=64, help="rows per shard (default 64)")
    ap.add_argument("--cpus", type=int, default=2, help="CPUs of local Ray (default 2)")
    ap.add_argument("--repeats", type=int, default=2, help="runs per configuration (default 2)")
    ap.add_argument("--quick", action="store_true", help="128 tensors, 1 repeat")
    args = ap.parse_args(argv)
    n, model, batch_size, shard_size = args.n, args.model, args.batch_size, args.shard_size
    cpus, repeats = args.cpus, args.repeats
    from reidctl.bench import cpu_model
    from reidctl.runners.infer import run_inference
    from reidctl.scale._optional import import_ray
    from reidctl.scale.ray_engine import connect, infer_ray

    ray = import_ray()
    if args.quick:
        n, repeats = 128, 1

    def log(msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr)

    with tempfile.TemporaryDirectory(prefix="reidctl-ray-bench-") as tmp:
        tmp_path = Path(tmp)
        if model is None:
            from reidctl.convert.onnx import onnx_from_torch

            model = tmp_path / "osnet_x0_25.onnx"
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                onnx_from_torch("osnet_x0_25", model, validate_batches=(1,))
            log("exported osnet_x0_25 (random weights)")
        pre = ModelSidecar.load(model).preprocess
        prep = write_random_prep(tmp_path / "prep", n, pre.height, pre.width)
        log(f"{n} tensors of 3x{pre.height}x{pre.width} written")

        rows = []
        t0 = time.perf_counter()
        best = None
        for r in range(repeats):
            run = run_inference(
                model, prep, tmp_path / f"single{r}", batch_size=batch_size, threads=1
            )
            best = run if best is None or run["wall_s"] < best["wall_s"] else best
        assert best is not None
        single_s = best["wall_s"]
        rows.append(("single process, 1 thread", 1, single_s, (time.perf_counter() - t0) / repeats))
        log(f"single process: {single_s:.2f} s")
        with connect(num_cpus=cpus, object_store_memory=200 * 2**20):
            for workers in (1, 2):
                best_s, e2e = None, None
                for r in range(repeats):
                    t0 = time.perf_counter()
                    run = infer_ray(
                        model,
                        prep,
                        tmp_path / f"ray{workers}_{r}",
                        batch_size=batch_size,
                        workers=workers,
                        shard_size=shard_size,
                    )
                    total = time.perf_counter() - t0
                    if best_s is None or run["wall_s"] < best_s:
                        best_s, e2e = run["wall_s"], total
                assert best_s is not None and e2e is not None
                rows.append((f"ray, {workers} worker(s) x 1 thread", workers, best_s, e2e))
                log(f"ray {workers} worker(s): {best_s:.2f} s")
            ray_version = ray.__version__

    one_ray = rows[1][2]
    print(
        f"\nRay {ray_version}, {cpu_model()} ({os.cpu_count()} cores); {n} tensors, "
        f"batch {batch_size}, shards of {shard_size}, best of {repeats}; model {model.name}\n"
    )
    print(
        "| configuration | workers | shards wall (s) | images/s | end-to-end (s) "
        "| speed-up vs 1 Ray worker | speed-up vs single process |"
    )
    print("|---|---|---|---|---|---|---|")
    for label, workers, wall, e2e in rows:
        print(
            f"| {label} | {workers} | {wall:.2f} | {n / wall:.1f} | {e2e:.2f} "
            f"| {one_ray / wall:.2f}x | {single_s / wall:.2f}x |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
