"""Benchmark: `reidctl eval --rerank` at Market-1501 scale, time and peak memory.

    python -m reidctl.benchmarks.rerank [--queries 3368 --gallery 15913 --dim 512]

Writes a synthetic Market-shaped result directory (512-d features), then runs the whole
``reidctl eval RESULTS --rerank`` process under ``/usr/bin/time -v`` (peak resident set
size of the process; ``getrusage`` of the child when the tool is absent), and the same
command without ``--rerank`` as the baseline of process start, loading and evaluation. The
authors' dense algorithm (the tests' reference) needs N x N matrices (N = 19,281: several
GB), so it is timed on a reduced set (``--ref-queries`` x ``--ref-gallery``) beside the
sparse implementation, checked for equality there, and extrapolated with its N^2 cost.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from reidctl.artifacts import ManifestEntry, ModelSidecar, ResultDir, RunRecord
from reidctl.evaluate.distance import compute_distance
from reidctl.evaluate.reference import re_ranking_dense
from reidctl.evaluate.rerank import re_ranking
from reidctl.evaluate.synthetic import market_like
from reidctl.specs import ModelFacts, PreprocessSpec, TensorSpec


def write_result_dir(out: Path, s) -> Path:
    """A minimal complete result directory (docs/formats.md section 3) for the set ``s``."""
    entries = []
    for split, pids, cams in (("query", s.q_pids, s.q_camids), ("gallery", s.g_pids, s.g_camids)):
        for k, (p, c) in enumerate(zip(pids, cams, strict=True)):
            stem = f"{split}_{p:04d}_c{c}s1_{k:06d}_00"
            entries.append(
                ManifestEntry(len(entries), f"{stem}.bin", f"{stem}.jpg", int(p), int(c), split)
            )
    dim = s.q_feat.shape[1]
    facts = ModelFacts(
        model="synthetic",
        preprocess=PreprocessSpec(mean=(0.5,) * 3, std=(0.5,) * 3),  # type: ignore[arg-type]
        inputs=(TensorSpec("image", ("batch", 3, 256, 128)),),
        outputs=(TensorSpec("feature", ("batch", dim)),),
        feature="feature",
        l2_normalize=True,
    )
    run = RunRecord(
        backend="synthetic",
        device="none",
        options={},
        model_file="",
        model_sha256="",
        prep_dir="",
        batch_size=1,
        num_images=len(entries),
        wall_s=0.0,
        setup_s=0.0,
        latencies_s=[],
        outputs=["feature"],
        feature="feature",
    )
    features = {"feature": np.concatenate([s.q_feat, s.g_feat])}
    ResultDir.write(out, entries, features, ModelSidecar(facts), run)
    return out


def run_eval(results: Path, extra: list[str], json_out: Path) -> dict[str, float]:
    """Run ``reidctl eval`` in a child process; wall seconds and peak RSS (MB)."""
    cmd = [sys.executable, "-m", "reidctl", "eval", str(results), "--json", str(json_out), *extra]
    timer = shutil.which("time") or ("/usr/bin/time" if os.path.exists("/usr/bin/time") else None)
    if timer:
        cmd = [timer, "-v", *cmd]
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"reidctl eval failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    if m:
        rss_mb, how = int(m.group(1)) / 1024, "/usr/bin/time -v"
    else:
        rss_mb = max(before, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024
        how = "getrusage(RUSAGE_CHILDREN)"
    metrics = json.loads(json_out.read_text())
    return {"wall_s": wall, "rss_mb": rss_mb, "how": how, **metrics}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--queries", type=int, default=3368)
    p.add_argument("--gallery", type=int, default=15913)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--ref-queries", type=int, default=500)
    p.add_argument("--ref-gallery", type=int, default=2400)
    p.add_argument("--workdir", type=Path, help="where to write the result directory (temp)")
    a = p.parse_args(argv)

    s = market_like(a.queries, a.gallery, a.dim)
    with tempfile.TemporaryDirectory(dir=a.workdir) as tmp:
        res = write_result_dir(Path(tmp) / "results", s)
        base = run_eval(res, [], Path(tmp) / "plain.json")
        rr = run_eval(res, ["--rerank"], Path(tmp) / "rerank.json")
    n = a.queries + a.gallery
    print(f"set: {a.queries} queries x {a.gallery} gallery (N = {n}), {a.dim}-d features")
    print(
        f"reidctl eval            : {base['wall_s']:.2f} s, peak RSS {base['rss_mb']:.0f} MB  "
        f"rank-1 {base['rank1']:.4f} mAP {base['mAP']:.4f}"
    )
    print(
        f"reidctl eval --rerank   : {rr['wall_s']:.2f} s, peak RSS {rr['rss_mb']:.0f} MB  "
        f"rank-1 {rr['rank1']:.4f} mAP {rr['mAP']:.4f}  (memory by {rr['how']})"
    )
    print(f"re-ranking cost over plain eval: {rr['wall_s'] - base['wall_s']:.2f} s")

    small = market_like(a.ref_queries, a.ref_gallery, a.dim, seed=1)
    t0 = time.perf_counter()
    fast = re_ranking(small.q_feat, small.g_feat)
    t_fast = time.perf_counter() - t0
    t0 = time.perf_counter()
    q, g = small.q_feat, small.g_feat
    ref = re_ranking_dense(compute_distance(q, g), compute_distance(q, q), compute_distance(g, g))
    t_ref = time.perf_counter() - t0
    m = a.ref_queries + a.ref_gallery
    scale = (n / m) ** 2
    print(
        f"reduced set {a.ref_queries} x {a.ref_gallery} (N = {m}): sparse {t_fast:.2f} s, "
        f"dense reference {t_ref:.2f} s, max abs diff {np.abs(fast - ref).max():.2e}"
    )
    print(
        f"dense reference extrapolated to N = {n} (x{scale:.0f}, N^2): about {t_ref * scale:.0f} s "
        f"and {3 * 4 * n * n / 2**30:.1f} GB for its three float32 N x N matrices; "
        f"ratio about {t_ref * scale / rr['wall_s']:.0f}x"
    )


if __name__ == "__main__":
    main()
