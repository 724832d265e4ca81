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

import json
import os
import resource
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import click
import numpy as np

from reidctl.bench import cpu_model
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


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--n", "n", type=int, default=1_000_000, show_default=True, help="Gallery rows.")
@click.option("--dim", type=int, default=512, show_default=True)
@click.option("--queries", "n_queries", type=int, default=10_000, show_default=True)
@click.option("-k", "k", type=int, default=10, show_default=True, help="Recall@k and top-k.")
@click.option("--clusters", type=int, default=10_000, show_default=True, help="Identities.")
@click.option("--spread", type=float, default=0.6, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--gt-queries", type=int, help="Score recall on the first N queries only [default: all]."
)
@click.option(
    "--kinds", default="flat,ivf,hnsw,ivfpq", show_default=True, help="Indexes to measure."
)
@click.option("--nlist", type=int, default=1024, show_default=True, help="IVF cells.")
@click.option("--nprobe", default="4,8,16,32", show_default=True, help="IVF probes to try.")
@click.option("--hnsw-m", type=int, default=32, show_default=True)
@click.option("--ef-construction", type=int, default=40, show_default=True)
@click.option("--ef-search", default="32,64,128", show_default=True, help="HNSW efSearch.")
@click.option("--pq-m", type=int, default=64, show_default=True, help="IVF-PQ sub-quantizers.")
@click.option("--threads", type=int, help="FAISS threads [default: all cores].")
@click.option("--quick", is_flag=True, help="100,000 x 512 gallery, 2,000 queries, 1,000 ids.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Also write rows.")
def main(
    n: int,
    dim: int,
    n_queries: int,
    k: int,
    clusters: int,
    spread: float,
    seed: int,
    gt_queries: int | None,
    kinds: str,
    nlist: int,
    nprobe: str,
    hnsw_m: int,
    ef_construction: int,
    ef_search: str,
    pq_m: int,
    threads: int | None,
    quick: bool,
    json_path: str | None,
) -> None:
    """Build time, search time, memory and recall@k of FAISS indexes on a synthetic gallery.

    \b
    Examples:
      python -m reidctl.benchmarks.faiss_search --quick
      python -m reidctl.benchmarks.faiss_search --kinds flat,ivf --nprobe 8,16
    """
    faiss = import_faiss()
    if quick:
        n, n_queries, clusters = 100_000, 2_000, 1_000
        nlist = min(nlist, 256)
    if threads:
        faiss.omp_set_num_threads(threads)

    def log(msg: str) -> None:
        click.echo(f"[{time.strftime('%H:%M:%S')}] {msg}", err=True)

    wanted = [s.strip() for s in kinds.split(",") if s.strip()]
    if "flat" not in wanted:
        raise click.BadParameter("flat is needed: it is the exact ground truth", param_hint="kinds")
    t0 = time.perf_counter()
    # Gallery and queries come from one stream so the queries share the gallery's centres.
    data = gaussian_mixture(n + n_queries, dim, clusters, spread, seed)
    gallery, queries = data[:n], data[n:]
    log(f"data: {n:,} x {dim} gallery + {n_queries:,} queries in {time.perf_counter() - t0:.1f} s")
    gt_rows = min(gt_queries or n_queries, n_queries)

    rows: list[Row] = []
    truth, flat_s = None, None
    plans: dict[str, tuple[Callable[[], Any], list[tuple[str, dict[str, int]]]]] = {
        "flat": (lambda: build_index_from_params(gallery, IndexParams("flat"))[0], [("", {})]),
        "ivf": (
            lambda: build_index_from_params(gallery, IndexParams("ivf", nlist=nlist))[0],
            [(f"nlist={nlist}, nprobe={p}", {"nprobe": p}) for p in _ints(nprobe)],
        ),
        "hnsw": (
            lambda: build_index_from_params(
                gallery, IndexParams("hnsw", m=hnsw_m, ef_construction=ef_construction)
            )[0],
            [
                (f"M={hnsw_m}, efC={ef_construction}, efSearch={e}", {"ef_search": e})
                for e in _ints(ef_search)
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
            raise click.BadParameter(f"unknown kind {kind!r}; valid: {', '.join(plans)}")
        make, settings = plans[kind]
        new_rows, truth, flat_s = _measure(
            kind, make, settings, queries, k, truth, gt_rows, flat_s, log
        )
        rows.extend(new_rows)

    cpu = f"{cpu_model()} ({os.cpu_count()} cores)"
    click.echo(
        f"\nFAISS {faiss.__version__}, {faiss.omp_get_max_threads()} threads, {cpu}; gallery "
        f"{n:,} x {dim} float32 ({clusters:,} clusters, spread {spread}, seed {seed}), "
        f"{n_queries:,} queries, recall@{k} against exact flat search on "
        f"{'all' if gt_rows == n_queries else f'the first {gt_rows:,}'} queries; process peak "
        f"RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB\n"
    )
    click.echo(format_table(rows, k, n_queries))
    goal = [r for r in rows if r.kind != "flat" and r.search_s < 10 and r.recall >= 0.95]
    if goal:
        best = min(goal, key=lambda r: r.search_s)
        click.echo(
            f"\ngoal met (all queries < 10 s, recall@{k} >= 0.95): {best.kind} {best.params}: "
            f"{best.search_s:.2f} s, recall {best.recall:.4f}, index {best.index_mb:,.0f} MiB"
        )
    else:
        click.echo(f"\ngoal NOT met: no index answered in < 10 s with recall@{k} >= 0.95")
    if json_path:
        with open(json_path, "w") as f:
            json.dump({"cpu": cpu, "rows": [asdict(r) for r in rows]}, f, indent=2)


if __name__ == "__main__":
    sys.exit(main())
