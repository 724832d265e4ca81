"""``reidctl index build`` and ``reidctl search``: FAISS gallery indexes and top-k lists."""

from __future__ import annotations

import time
from pathlib import Path

import click

from reidctl.commands._options import force_option, threads_option
from reidctl.io import refuse_existing
from reidctl.scale.faiss_index import KINDS, METRICS


def _set_threads(threads: int | None) -> None:
    if threads:
        from reidctl.scale._optional import import_faiss

        import_faiss().omp_set_num_threads(threads)


@click.group()
def index() -> None:
    """Build FAISS indexes over the gallery features of a result directory.

    \b
    Example:
      reidctl index build results/ -o gallery.index --kind hnsw
      reidctl search gallery.index results/ -k 100 -o topk.npz
    """


@index.command("build")
@click.argument("results", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Index file to write; its sidecar goes to OUTPUT.json.",
)
@click.option(
    "--kind",
    type=click.Choice(KINDS),
    default="flat",
    show_default=True,
    help="flat: exact; ivf: k-means cells; hnsw: graph; ivfpq: compressed IVF.",
)
@click.option(
    "--metric",
    type=click.Choice(METRICS),
    default="ip",
    show_default=True,
    help="ip: inner product (cosine on normalised features); l2: squared Euclidean.",
)
@click.option("--nlist", type=int, help="ivf/ivfpq cells [default: 4*sqrt(rows), <= rows/39].")
@click.option(
    "--nprobe", type=int, help="ivf/ivfpq cells scanned per query [default: max(8, nlist/32)]."
)
@click.option(
    "--m",
    "m",
    type=int,
    help="hnsw: links per node [default: 32]; ivfpq: sub-quantizers, divides dim [dim/8].",
)
@click.option("--nbits", type=int, default=8, show_default=True, help="ivfpq bits per code.")
@click.option("--ef-construction", type=int, default=40, show_default=True, help="hnsw build.")
@click.option("--ef-search", type=int, default=64, show_default=True, help="hnsw search.")
@click.option("--feature", help="Output to index [default: model.json's feature].")
@click.option(
    "--normalize/--no-normalize",
    default=None,
    help="L2-normalise rows first [default: model.json's l2_normalize].",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Training-sample seed.")
@threads_option("FAISS threads [default: all cores].")
@force_option("Overwrite OUTPUT if it exists.")
def build(
    results: Path,
    output: Path,
    kind: str,
    metric: str,
    nlist: int | None,
    nprobe: int | None,
    m: int | None,
    nbits: int,
    ef_construction: int,
    ef_search: int,
    feature: str | None,
    normalize: bool | None,
    seed: int,
    threads: int | None,
    force: bool,
) -> None:
    """Index the gallery rows (manifest split "gallery") of RESULTS.

    Writes the FAISS index to OUTPUT and, last, the sidecar OUTPUT.json: kind, metric,
    parameters, feature, normalisation, sha256 of the features, and the row mapping (FAISS
    id i -> result-manifest index, pid, camid, source image).

    \b
    Examples:
      reidctl index build results/ -o gallery.index                  # exact
      reidctl index build results/ -o gallery.index --kind ivf --nlist 1024 --nprobe 32
      reidctl index build results/ -o gallery.index --kind hnsw --m 32 --ef-search 128
    """
    from reidctl.scale.faiss_index import build_gallery_index, save_gallery_index

    refuse_existing(output, force=force)
    _set_threads(threads)
    t0 = time.perf_counter()
    gi = build_gallery_index(
        results,
        kind,
        metric,
        feature=feature,
        normalize=normalize,
        progress=True,
        nlist=nlist,
        nprobe=nprobe,
        m=m,
        nbits=nbits,
        ef_construction=ef_construction,
        ef_search=ef_search,
        seed=seed,
    )
    save_gallery_index(gi, output, force=force)
    s = gi.sidecar
    params = {k: v for k, v in s["params"].items() if v is not None and k not in ("kind", "metric")}
    click.echo(
        f"wrote {output} ({s['kind']}, {s['metric']}, {s['num_rows']} gallery rows x "
        f"{s['dim']} {s['feature']!r}, normalised: {s['normalized']}) in "
        f"{time.perf_counter() - t0:.2f} s; params {params}"
    )


@click.command()
@click.argument("index_file", metavar="INDEX", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("query_results", type=click.Path(file_okay=False, path_type=Path))
@click.option("-k", type=int, default=100, show_default=True, help="Hits per query.")
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Top-k lists to write (.npz).",
)
@click.option("--nprobe", type=int, help="Override the ivf/ivfpq cells scanned per query.")
@click.option("--ef-search", type=int, help="Override the hnsw search list size.")
@threads_option("FAISS threads [default: all cores].")
@force_option("Overwrite OUTPUT if it exists.")
def search(
    index_file: Path,
    query_results: Path,
    k: int,
    output: Path,
    nprobe: int | None,
    ef_search: int | None,
    threads: int | None,
    force: bool,
) -> None:
    """Search the query rows (manifest split "query") of QUERY_RESULTS in INDEX.

    Queries get the index's feature and normalisation. OUTPUT (.npz) holds `indices`
    [Q, k] (gallery rows of the index: -1 for none), `distances` [Q, k] (similarity for
    ip, squared distance for l2), `query_index` [Q] (result-manifest index of each query),
    `gallery_index` [G] (result-manifest index of each gallery row) and the query and
    gallery pids and camids. k is capped at the number of gallery rows.

    \b
    Example:
      reidctl search gallery.index results/ -k 100 -o topk.npz
    """
    from reidctl.scale.faiss_index import search_gallery_index, write_topk

    refuse_existing(output, force=force)
    _set_threads(threads)
    t0 = time.perf_counter()
    topk = search_gallery_index(
        index_file, query_results, k, nprobe=nprobe, ef_search=ef_search, progress=True
    )
    write_topk(topk, output)
    q, kk = topk.indices.shape
    click.echo(
        f"wrote {output}: {q} queries x top-{kk} of {len(topk.gallery_index)} gallery rows "
        f"({topk.metric}) in {time.perf_counter() - t0:.2f} s"
    )
