"""Overhead of ``reidctl infer`` (``run_inference`` with ``ort``) against a bare loop.

Both read the same preprocessed tensor files and run the same ONNX model (``aligned_reid``,
ResNet-50, random weights: throughput does not depend on them) with onnxruntime at the same
batch size and thread settings; the two are measured alternately in one process, so machine
load affects both alike. Two figures per repeat:

* loop: images/s of the read + infer loop (``run.json``'s ``images_per_s`` vs the bare
  loop's own loop);
* end to end: images over the whole call, including session creation, the model hash and
  writing the result directory (vs the bare loop plus its session creation).

Goal: ``reidctl infer`` >= 95 % of the bare loop's images/s.

    python -m reidctl.benchmarks.infer_overhead [--images 512] [--bs 32] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

from reidctl.bench import cpu_model
from reidctl.preprocess.random_set import write_random_prep


def bare_loop(model: Path, prep: Path, batch_size: int, threads: int) -> tuple[float, float, int]:
    """The baseline: read a batch of tensor files, ``InferenceSession.run``, no read-ahead,
    no result directory. Returns (loop s, total s, n)."""
    import onnxruntime as ort

    from reidctl.artifacts import PrepSet

    t_total = time.perf_counter()
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(model), so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    tensors = PrepSet.open(prep)
    n = len(tensors)
    t0 = time.perf_counter()
    for i in range(0, n, batch_size):
        sess.run(None, {name: tensors.read_batch(range(i, min(i + batch_size, n)))})
    t1 = time.perf_counter()
    return t1 - t0, t1 - t_total, n


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--images", type=int, default=512, help="tensors to run (default 512)")
    ap.add_argument("--bs", type=int, default=32, help="batch size (default 32)")
    ap.add_argument("--repeats", type=int, default=3, help="alternating repeats (default 3)")
    ap.add_argument(
        "--threads", type=int, default=os.cpu_count() or 1, help="intra-op threads (default: cores)"
    )
    ap.add_argument("--workdir", type=Path, default=None, help="keep files here (default: temp)")
    args = ap.parse_args(argv)

    from reidctl.convert.onnx import onnx_from_torch
    from reidctl.runners.infer import run_inference

    with tempfile.TemporaryDirectory(prefix="reidctl-bench-") as tmp:
        work = args.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        model = work / "aligned_reid.onnx"
        if not model.exists():
            print("exporting aligned_reid (ResNet-50, random weights) ...", file=sys.stderr)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                onnx_from_torch("aligned_reid", model, validate_batches=(1,))
        prep = work / "prep"
        if not (prep / "meta.json").exists():
            write_random_prep(prep, args.images)

        rows = []

        def ours() -> tuple[dict, float]:
            t0 = time.perf_counter()
            run = run_inference(
                model, prep, work / "results", batch_size=args.bs, force=True, threads=args.threads
            )
            return run, time.perf_counter() - t0

        for r in range(args.repeats):
            # swap the order every repeat so a load change on the machine hits both alike
            if r % 2:
                run, ours_total = ours()
                loop_s, total_s, n = bare_loop(model, prep, args.bs, args.threads)
            else:
                loop_s, total_s, n = bare_loop(model, prep, args.bs, args.threads)
                run, ours_total = ours()
            rows.append((n / loop_s, run["images_per_s"], n / total_s, n / ours_total))
            print(
                f"repeat {r + 1}: bare {rows[-1][0]:.1f} img/s, reidctl infer {rows[-1][1]:.1f} "
                f"img/s (loop); end to end {rows[-1][2]:.1f} vs {rows[-1][3]:.1f}",
                file=sys.stderr,
            )

    med = [statistics.median(c) for c in zip(*rows, strict=True)]
    print(f"machine: {cpu_model()}, {os.cpu_count()} cores; onnxruntime, {args.threads} threads")
    print(f"model: aligned_reid (ResNet-50) ONNX, batch {args.bs}, {n} tensors 3x256x128 float32")
    print(f"{'':<22}{'bare loop':>12}{'reidctl infer':>16}{'ratio':>9}")
    print(f"{'loop (img/s)':<22}{med[0]:>12.1f}{med[1]:>16.1f}{med[1] / med[0]:>9.1%}")
    print(f"{'end to end (img/s)':<22}{med[2]:>12.1f}{med[3]:>16.1f}{med[3] / med[2]:>9.1%}")
    print(f"median of {args.repeats} alternating repeats; goal: ratio >= 95%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
