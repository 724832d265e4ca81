"""Benchmark: AlignedReID local distance at Market-1501 scale (8 stripes x 128-d).

    python -m reidctl.benchmarks.local_distance [--queries 3368 --gallery 15913]

Times the chunked ``local_distance`` over the whole query x gallery matrix and the
reference (AlignedReID's ``parallel_local_dist``, whole matrices) on ``--subset`` queries,
extrapolated; checks they agree on the subset; prints peak resident memory of the process
and the float32 matrix-multiply throughput measured in the same run (the local distance is
bound by its 0.9 TFLOP of multiply).
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np

from reidctl.evaluate.distance import l2_normalize
from reidctl.evaluate.local import local_distance
from reidctl.evaluate.reference import local_dist_dense


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--queries", type=int, default=3368)
    p.add_argument("--gallery", type=int, default=15913)
    p.add_argument("--stripes", type=int, default=8)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--subset", type=int, default=16, help="queries timed with the reference")
    a = p.parse_args(argv)

    rng = np.random.default_rng(0)
    q = l2_normalize(rng.standard_normal((a.queries, a.stripes, a.dim), dtype=np.float32))
    g = l2_normalize(rng.standard_normal((a.gallery, a.stripes, a.dim), dtype=np.float32))
    a_, b_ = q[:128].reshape(-1, a.dim), g[:1024].reshape(-1, a.dim)
    ts = []
    for _ in range(5):
        t0 = time.perf_counter()
        a_ @ b_.T
        ts.append(time.perf_counter() - t0)
    gemm = 2.0 * len(a_) * len(b_) * a.dim / min(ts) / 1e9
    need = 2.0 * a.queries * a.gallery * a.stripes**2 * (a.dim + 2) / 1e9
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    d = local_distance(q, g)
    t_fast = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"set: {a.queries} x {a.gallery} items, {a.stripes} stripes x {a.dim}-d")
    print(
        f"local_distance (chunked): {t_fast:.1f} s, peak RSS {rss:.0f} MB "
        f"(inputs and the {d.nbytes / 2**20:.0f} MB result included; {rss0:.0f} MB before)"
    )

    n = min(a.subset, a.queries)
    t0 = time.perf_counter()
    ref = local_dist_dense(q[:n], g)
    t_ref = (time.perf_counter() - t0) * a.queries / n
    diff = float(np.abs(ref - d[:n]).max())
    print(
        f"reference parallel_local_dist: {t_ref:.1f} s (timed on {n} queries, extrapolated); "
        f"max abs diff on the subset {diff:.2e}"
    )
    print(
        f"matrix multiply: {need:.0f} GFLOP needed; float32 GEMM throughput measured in this run "
        f"{gemm:.0f} GFLOPS, i.e. about {need / gemm:.1f} s of the total is the multiply itself"
    )
    print(f"ratio: {t_ref / t_fast:.1f}x")


if __name__ == "__main__":
    main()
