"""Overhead of :class:`reidctl.Embedder` against the bare runner fed by the same transform.

Both take the same decoded BGR uint8 crops (synthetic, of varied sizes, seeded) and run the
same ONNX model (``osnet_x0_25``, random weights: throughput does not depend on them) on one
and the same ``ort`` runner, the Embedder's own (:attr:`Embedder.runner`), at the same batch
size and threads; two sessions of one model differ by 1 to 2 % on their own (where their
weights lie in memory), which is not the Embedder's cost:

* bare: :class:`ImageTransform` into a preallocated ``[B, 3, H, W]`` buffer, then
  ``runner.infer_rows``;
* Embedder: ``Embedder.embed(crops)`` (input checks, the same transform, the runner, the
  L2 normalisation the facts ask for).

The two alternate call by call (bare then Embedder on one batch, Embedder then bare on the
next) in one process, so a change of machine speed during a repeat affects both alike; a
repeat is one pass over the crops with each side's time summed; each figure is the median
over repeats, with the spread (min..max) of the per-repeat ratio. The transform alone is
timed too: the preprocessing share of each call. Goal: Embedder within 5 % of the bare
runner at batch 1 and 32.

    python -m reidctl.benchmarks.embedder_overhead [--images 256] [--repeats 5] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np


def make_crops(n: int, seed: int = 0) -> list[np.ndarray]:
    """``n`` BGR uint8 crops of person-like sizes (96..192 x 40..96 pixels)."""
    rng = np.random.default_rng(seed)
    return [
        rng.integers(0, 256, (int(rng.integers(96, 193)), int(rng.integers(40, 97)), 3), np.uint8)
        for _ in range(n)
    ]


def measure(
    model: Path, crops: list[np.ndarray], bs: int, threads: int, repeats: int
) -> dict[str, float]:
    """Median images/s of the bare runner and of the Embedder at batch ``bs``, the
    per-repeat ratio (median, min, max) and the transform's median ms per image."""
    from reidctl import Embedder
    from reidctl.preprocess.transform import ImageTransform, TensorSettings

    emb = Embedder(model, "ort", batch_size=bs, threads=threads)
    transform = ImageTransform(TensorSettings(emb.preprocess))
    runner = emb.runner
    name = runner.input_specs()[0].name
    buf = np.empty((bs, *transform.settings.shape), np.float32)

    def bare(chunk: list[np.ndarray]) -> None:
        for j, c in enumerate(chunk):
            transform(c, buf[j])
        runner.infer_rows({name: buf[: len(chunk)]})

    def embedder(chunk: list[np.ndarray]) -> None:
        emb.embed(chunk)

    chunks = [crops[s : s + bs] for s in range(0, len(crops), bs)]
    bare(chunks[0])  # warm-up: first-run allocations
    embedder(chunks[0])
    rates: dict[str, list[float]] = {"bare": [], "emb": []}
    ratios, prep_ms = [], []
    for _ in range(repeats):
        spent = {"bare": 0.0, "emb": 0.0}
        for i, chunk in enumerate(chunks):
            order = [("bare", bare), ("emb", embedder)]
            for key, fn in order if i % 2 == 0 else order[::-1]:
                t0 = time.perf_counter()
                fn(chunk)
                spent[key] += time.perf_counter() - t0
        for key in spent:
            rates[key].append(len(crops) / spent[key])
        t0 = time.perf_counter()
        for c in crops:
            transform(c, buf[0])
        prep_ms.append((time.perf_counter() - t0) / len(crops) * 1e3)
        ratios.append(rates["emb"][-1] / rates["bare"][-1])
    emb.close()
    return {
        "bare": statistics.median(rates["bare"]),
        "embedder": statistics.median(rates["emb"]),
        "ratio": statistics.median(ratios),
        "ratio_min": min(ratios),
        "ratio_max": max(ratios),
        "preprocess_ms": statistics.median(prep_ms),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--images", type=int, default=256, help="crops per block (default 256)")
    ap.add_argument("--bs", default="1,32", help="batch sizes (default 1,32)")
    ap.add_argument("--repeats", type=int, default=5, help="alternating repeats (default 5)")
    ap.add_argument("--threads", type=int, default=1, help="intra-op threads (default 1)")
    ap.add_argument("--workdir", type=Path, default=None, help="keep the model here")
    args = ap.parse_args(argv)

    from reidctl.bench import cpu_model
    from reidctl.convert.onnx import onnx_from_torch

    with tempfile.TemporaryDirectory(prefix="reidctl-bench-") as tmp:
        work = args.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        model = work / "osnet_x0_25.onnx"
        if not model.exists():
            print("exporting osnet_x0_25 (random weights) ...", file=sys.stderr)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                onnx_from_torch("osnet_x0_25", model, validate_batches=(1,))
        crops = make_crops(args.images)
        print(f"cpu: {cpu_model()}; threads {args.threads}; {args.images} crops per block")
        print("bs  bare img/s  Embedder img/s  ratio (median, min..max)  preprocess ms/img")
        for bs in [int(b) for b in args.bs.split(",")]:
            r = measure(model, crops, bs, args.threads, args.repeats)
            print(
                f"{bs:<3} {r['bare']:>10.1f}  {r['embedder']:>14.1f}  "
                f"{r['ratio']:>6.3f} ({r['ratio_min']:.3f}..{r['ratio_max']:.3f})"
                f"{'':>14}{r['preprocess_ms']:.3f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
