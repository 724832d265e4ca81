"""Gallery search at scale: flat vs IVF vs HNSW (vs IVF-PQ) FAISS indexes.

Run ``python -m reidctl.benchmarks.faiss_search`` (full: 1,000,000 x 512 gallery, 10,000
queries; about 5 GB of RAM at its peak and several minutes on 2 cores) or with ``--quick``
(100,000 x 512, 2,000 queries).

The data is a seeded Gaussian mixture shaped like ReID features: ``--clusters`` random unit
centres ("identities"), each point ``normalize(centre + spread * z / sqrt(d))`` with ``z``
standard normal, so two crops of one identity have a cosine similarity of about
``1 / (1 + spread**2)`` (0.74 at the default 0.6) and crops of different identities about 0.
Queries come from the same mixture. Metric: inner product on the L2-normalised features.

For each index the benchmark reports its build time (training + adding), the wall time to
answer all queries (top-``k``), queries per second, the speed-up of that search over the
exact flat search measured in the same run, recall@k against the exact (flat) top-k, the
serialised index size, and the resident memory the index added to the process (peak RSS
while building and searching, minus the RSS before; the shared gallery array, ``4 * N * d``
bytes, is counted once in the "before"). Ground truth is the flat index's search over all
queries (FAISS exact search), unless ``--gt-queries`` limits it to the first queries.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from reidctl.bench import cpu_model
from reidctl.errors import InputError
from reidctl.io import write_json_atomic
from reidctl.parsing import parse_int_list
from reidctl.scale._optional import import_faiss
from reidctl.scale.faiss_index import IndexParams, build_index_from_params, recall_at_k, search


def gaussian_mixture(
    n: int, dim: int, clusters: int, spread: float, seed: int, chunk: int = 65536
) -> np.ndarray:
    """``[n, dim]`` float32 L2-normalised points of a seeded mixture (see module docstring)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    out = np.empty((n, dim), np.float32)
    scale = np.float32(spread / np.sqrt(dim))
    for s in range(0, n, chunk):
        rows = min(chunk, n - s)
        labels = rng.integers(0, clusters, rows)
        block = centres[labels] + rng.standard_normal((rows, dim), dtype=np.float32) * scale
        out[s : s + rows] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def rss_bytes() -> int:
    """Current resident set size of this process (bytes), from /proc."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakRss:
    """Samples RSS every ``interval`` seconds in a thread; ``peak`` is the highest seen."""

    def __init__(self, interval: float = 0.02) -> None:
        self.interval, self.peak = interval, rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, rss_bytes())

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())


def serialized_size(index: Any) -> int:
    """Bytes ``faiss.write_index`` produces, counted without keeping them."""
    faiss = import_faiss()
    total = [0]

    def count(buf: bytes) -> None:
        total[0] += len(buf)

    writer = faiss.PyCallbackIOWriter(count)
    faiss.write_index(index, writer)
    del writer
    return total[0]


@dataclass
class Row:
    kind: str
    params: str
    build_s: float
    search_s: float
    qps: float
    speedup_vs_flat: float
    recall: float
    index_mb: float
    rss_added_mb: float


def _measure(
    label: str,
    make: Callable[[], Any],
    settings: list[tuple[str, dict[str, int]]],
    queries: np.ndarray,
    k: int,
    truth: np.ndarray | None,
    gt_rows: int,
    flat_search_s: float | None,
    log: Callable[[str], None],
) -> tuple[list[Row], np.ndarray | None, float | None]:
    base = rss_bytes()
    rows: list[Row] = []
    with PeakRss() as mem:
        t0 = time.perf_counter()
        index = make()
        build_s = time.perf_counter() - t0
        log(f"{label}: built in {build_s:.1f} s")
        size = serialized_size(index)
        for desc, override in settings:
            t0 = time.perf_counter()
            _, ids = search(index, queries, k, **override)
            search_s = time.perf_counter() - t0
            if truth is None:  # this is the exact index: it defines the ground truth
                truth, flat_search_s = ids[:gt_rows], search_s
            rec = recall_at_k(ids[:gt_rows], truth, k)
            rows.append(
                Row(
                    kind=label,
                    params=desc,
                    build_s=build_s,
                    search_s=search_s,
                    qps=queries.shape[0] / search_s,
                    speedup_vs_flat=(flat_search_s or search_s) / search_s,
                    recall=rec,
                    index_mb=size / 2**20,
                    rss_added_mb=0.0,
                )
            )
            log(f"{label} {desc}: search {search_s:.2f} s, recall@{k} {rec:.4f}")
    del index
    for r in rows:
        r.rss_added_mb = (mem.peak - base) / 2**20
    return rows, truth, flat_search_s


def format_table(rows: list[Row], k: int, n_queries: int) -> str:
    head = (
        f"| index | parameters | build (s) | search {n_queries:,} queries (s) | queries/s "
        f"| speed-up vs flat | recall@{k} | index size (MiB) | RSS added (MiB) |"
    )
    lines = [head, "|" + "---|" * 9]
    for r in rows:
        lines.append(
            f"| {r.kind} | {r.params} | {r.build_s:.1f} | {r.search_s:.2f} | {r.qps:,.0f} "
            f"| {r.speedup_vs_flat:.1f}x | {r.recall:.4f} | {r.index_mb:,.0f} "
            f"| {r.rss_added_mb:,.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Build time, search time, memory and recall@k of FAISS indexes on a synthetic gallery."""
    ap = argparse.ArgumentParser(
        prog="python -m reidctl.benchmarks.faiss_search",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--n", type=int, default=1_000_000, help="gallery rows (default 1000000)")
    ap.add_argument("--dim", type=int, default=512, help="feature size (default 512)")
    ap.add_argument("--queries", type=int, default=10_000, help="queries (default 10000)")
    ap.add_argument("-k", type=int, default=10, help="recall@k and top-k (default 10)")
    ap.add_argument("--clusters", type=int, default=10_000, help="identities (default 10000)")
    ap.add_argument("--spread", type=float, default=0.6, help="cluster spread (default 0.6)")
    ap.add_argument("--seed", type=int, default=0, help="data seed (default 0)")
    ap.add_argument("--gt-queries", type=int, help="score recall on the first N queries only")
    ap.add_argument("--kinds", default="flat,ivf,hnsw,ivfpq", help="indexes to measure")
    ap.add_argument("--nlist", type=int, default=1024, help="IVF cells (default 1024)")
    ap.add_argument("--nprobe", default="4,8,16,32", help="IVF probes to try (default 4,8,16,32)")
    ap.add_argument("--hnsw-m", type=int, default=32, help="HNSW links (default 32)")
    ap.add_argument("--ef-construction", type=int, default=40, help="HNSW build (default 40)")
    ap.add_argument("--ef-search", default="32,64,128", help="HNSW efSearch (default 32,64,128)")
    ap.add_argument("--pq-m", type=int, default=64, help="IVF-PQ sub-quantizers (default 64)")
    ap.add_argument("--threads", type=int, help="FAISS threads (default: all cores)")
    ap.add_argument("--quick", action="store_true", help="100,000 x 512, 2,000 queries, 1,000 ids")
    ap.add_argument("--json", dest="json_path", help="also write the rows here")
    a = ap.parse_args(argv)
    n, dim, n_queries, k, clusters, spread, seed = (
        a.n, a.dim, a.queries, a.k, a.clusters, a.spread, a.seed
    )  # fmt: skip
    nlist, hnsw_m, ef_construction, pq_m = a.nlist, a.hnsw_m, a.ef_construction, a.pq_m
    try:
        nprobe = parse_int_list(a.nprobe, "--nprobe")
        ef_search = parse_int_list(a.ef_search, "--ef-search")
    except InputError as e:
        ap.error(str(e))
    faiss = import_faiss()
    if a.quick:
        n, n_queries, clusters = 100_000, 2_000, 1_000
        nlist = min(nlist, 256)
    if a.threads:
        faiss.omp_set_num_threads(a.threads)

    def log(msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr)

    wanted = [s.strip() for s in a.kinds.split(",") if s.strip()]
    if "flat" not in wanted:
        ap.error("--kinds: flat is needed: it is the exact ground truth")
    t0 = time.perf_counter()
    # Gallery and queries come from one stream so the queries share the gallery's centres.
    data = gaussian_mixture(n + n_queries, dim, clusters, spread, seed)
    gallery, queries = data[:n], data[n:]
    log(f"data: {n:,} x {dim} gallery + {n_queries:,} queries in {time.perf_counter() - t0:.1f} s")
    gt_rows = min(a.gt_queries or n_queries, n_queries)

    rows: list[Row] = []
    truth, flat_s = None, None
    plans: dict[str, tuple[Callable[[], Any], list[tuple[str, dict[str, int]]]]] = {
        "flat": (lambda: build_index_from_params(gallery, IndexParams("flat"))[0], [("", {})]),
        "ivf": (
            lambda: build_index_from_params(gallery, IndexParams("ivf", nlist=nlist))[0],
            [(f"nlist={nlist}, nprobe={p}", {"nprobe": p}) for p in nprobe],
        ),
        "hnsw": (
            lambda: build_index_from_params(
                gallery, IndexParams("hnsw", m=hnsw_m, ef_construction=ef_construction)
            )[0],
            [
                (f"M={hnsw_m}, efC={ef_construction}, efSearch={e}", {"ef_search": e})
                for e in ef_search
            ],
        ),
        "ivfpq": (
            lambda: build_index_from_params(gallery, IndexParams("ivfpq", nlist=nlist, m=pq_m))[0],
            # PQ error, not the probe count, bounds its recall here: one setting is enough.
            [(f"nlist={nlist}, m={pq_m}x8b, nprobe=16", {"nprobe": 16})],
        ),
    }
    for kind in ["flat", *[w for w in wanted if w != "flat"]]:
        if kind not in plans:
            ap.error(f"--kinds: unknown kind {kind!r}; valid: {', '.join(plans)}")
        make, settings = plans[kind]
        new_rows, truth, flat_s = _measure(
            kind, make, settings, queries, k, truth, gt_rows, flat_s, log
        )
        rows.extend(new_rows)

    cpu = f"{cpu_model()} ({os.cpu_count()} cores)"
    print(
        f"\nFAISS {faiss.__version__}, {faiss.omp_get_max_threads()} threads, {cpu}; gallery "
        f"{n:,} x {dim} float32 ({clusters:,} clusters, spread {spread}, seed {seed}), "
        f"{n_queries:,} queries, recall@{k} against exact flat search on "
        f"{'all' if gt_rows == n_queries else f'the first {gt_rows:,}'} queries; process peak "
        f"RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB\n"
    )
    print(format_table(rows, k, n_queries))
    goal = [r for r in rows if r.kind != "flat" and r.search_s < 10 and r.recall >= 0.95]
    if goal:
        best = min(goal, key=lambda r: r.search_s)
        print(
            f"\ngoal met (all queries < 10 s, recall@{k} >= 0.95): {best.kind} {best.params}: "
            f"{best.search_s:.2f} s, recall {best.recall:.4f}, index {best.index_mb:,.0f} MiB"
        )
    else:
        print(f"\ngoal NOT met: no index answered in < 10 s with recall@{k} >= 0.95")
    if a.json_path:
        write_json_atomic(a.json_path, {"cpu": cpu, "rows": [asdict(r) for r in rows]})
    return 0


if __name__ == "__main__":
    sys.exit(main())
