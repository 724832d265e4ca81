"""``reidctl eval``: CMC / mAP / mINP from a result directory or a vendor dump."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from reidctl.commands._options import force_option, json_path_option


@click.command("eval")
@click.argument("results", type=click.Path(path_type=Path))
@click.option(
    "--prep",
    type=click.Path(path_type=Path),
    help="Preprocessed set whose labels a vendor dump RESULTS belongs to (with "
    "--output-index K or --model).",
)
@click.option(
    "--output-index",
    type=int,
    help="K of the dump files <stem>_<K>.bin|txt|npy holding the global feature (with --prep).",
)
@click.option(
    "--model",
    "model_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="With --prep: the model whose sidecar numbers the dump's outputs (prints which K "
    "holds which output; allows --output NAME).",
)
@click.option("--output", "output_name", help="With --prep --model: the dump output by name.")
@click.option(
    "--dump-dtype",
    type=click.Choice(["float32", "float16"]),
    default="float32",
    show_default=True,
    help="Value type of raw .bin dump files.",
)
@click.option(
    "--dim", type=int, help="With --prep: check that every dump file holds D values (optional)."
)
@click.option("--local-index", type=int, help="With --prep --local: K of the stripe output.")
@click.option(
    "--local-shape",
    metavar="SxD",
    help="With --prep --local: stripes x dims of the stripe output, e.g. 8x128 (default: "
    "from --model's sidecar).",
)
@click.option("--feature", help="Output to evaluate (default: model.json's retrieval feature).")
@click.option(
    "--normalize/--no-normalize",
    default=None,
    help="L2-normalise the features (default: as model.json says; on for vendor dumps).",
)
@click.option(
    "--distance",
    type=click.Choice(["euclidean", "sqeuclidean", "cosine"]),
    default="euclidean",
    show_default=True,
    help="Distance. Euclidean ranks like cosine on normalised features and is what "
    "re-ranking expects.",
)
@click.option(
    "--max-rank", type=int, default=50, show_default=True, help="Length of the CMC curve."
)
@click.option(
    "--ap",
    type=click.Choice(["step", "interpolated"]),
    default="step",
    show_default=True,
    help="step: torchreid's AP; interpolated: the official Market-1501 code's trapezoid AP.",
)
@click.option(
    "--protocol",
    type=click.Choice(["market1501", "cuhk03"]),
    default="market1501",
    show_default=True,
    help="cuhk03: single-gallery-shot CMC (10 seeded random draws, see --seed).",
)
@click.option("--rerank", is_flag=True, help="k-reciprocal re-ranking (Zhong et al. 2017).")
@click.option("--k1", type=int, default=20, show_default=True, help="Re-ranking k1.")
@click.option("--k2", type=int, default=6, show_default=True, help="Re-ranking k2.")
@click.option(
    "--lambda",
    "lambda_value",
    type=float,
    default=0.3,
    show_default=True,
    help="Re-ranking lambda.",
)
@click.option("--local", is_flag=True, help="AlignedReID local distance (stripe features).")
@click.option("--local-feature", help="Local output [N, S, D] (default: local_feat).")
@click.option(
    "--local-weight",
    type=float,
    help="Use global + W * local distance (default with --local: the local distance alone).",
)
@click.option(
    "--centroids",
    is_flag=True,
    help="Centroids-ReID: each gallery identity as the mean of its raw embeddings.",
)
@click.option(
    "--per-camera",
    is_flag=True,
    help="With --centroids: one centroid per query camera of the identity, from its other "
    "cameras (the reference's camera-respecting protocol).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the cuhk03 draws.")
@click.option(
    "--index",
    "index_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Score the top-k lists of this FAISS gallery index (`reidctl index build`) instead "
    "of the full distance matrix (pip install 'reidctl[faiss]').",
)
@click.option(
    "-k",
    "k",
    type=click.IntRange(min=1),
    default=None,
    help="With --index: gallery rows searched per query (capped at the gallery size).  "
    "[default: 100]",
)
@click.option(
    "--exact-check",
    is_flag=True,
    help="With --index: also report the index's recall@k against exact search and the "
    "exact top-k metrics.",
)
@json_path_option("Write metrics.json here.")
@click.option("--plot", type=click.Path(path_type=Path), help="Write the CMC curve (PNG) here.")
@click.option(
    "--visualize",
    type=(int, click.Path(path_type=Path)),
    default=(None, None),
    metavar="N OUT.png",
    help="Write N queries with their top-10 gallery images (green = correct, red = wrong).",
)
@click.option(
    "--images",
    type=click.Path(path_type=Path),
    help="Dataset root for --visualize (default: the root recorded in PREP/meta.json).",
)
@force_option("Overwrite existing --json, --plot and --visualize files.")
def eval_cmd(
    results: Path,
    prep: Path | None,
    output_index: int | None,
    model_file: Path | None,
    output_name: str | None,
    dump_dtype: str,
    dim: int | None,
    local_index: int | None,
    local_shape: str | None,
    index_path: Path | None,
    k: int | None,
    exact_check: bool,
    json_path: Path | None,
    plot: Path | None,
    visualize: tuple[int | None, Path | None],
    images: Path | None,
    force: bool,
    **settings: Any,
) -> None:
    """Compute rank-1/5/10, mAP and mINP of RESULTS (a `reidctl infer` result directory).

    Queries are the manifest's `query` split, the gallery its `gallery` split; the
    Market-1501 protocol ignores same-identity images from the query's camera and junk
    (pid -1), counts distractors (pid 0) as wrong, and leaves out (but counts) queries
    without a valid match. RESULTS must hold run.json (written last by `reidctl infer`).

    With --index, each query's top k gallery rows come from a FAISS index built over
    RESULTS's gallery (`reidctl index build`): no query x gallery matrix is held in memory.
    mAP then counts only the positives found within k (a lower bound, exact when every
    match is within k) and CMC is known up to rank k; --exact-check measures what the
    approximate index loses against exact search.

    \b
    Examples:
      reidctl eval results/
      reidctl eval results/ --rerank --json metrics.json --plot cmc.png
      reidctl eval results/ --local --local-weight 1 --rerank   # AlignedReID global+local
      reidctl eval results/ --centroids --per-camera
      reidctl eval results/ --visualize 8 top10.png
      reidctl eval result/dumpOutput_device0/ --prep prep/ --output-index 1
      reidctl eval ais_out/ --prep prep/ --model aligned.om --local --local-weight 1
      reidctl eval results/ --index gallery.index -k 100 --exact-check --json metrics.json
    """
    from reidctl.errors import InputError
    from reidctl.io import refuse_existing

    # Refuse an unusable output before the evaluation runs, not after.
    refuse_existing(json_path, plot, visualize[1], force=force)
    if index_path is not None:
        _refuse_dense_options()
        _eval_index(results, index_path, k or 100, exact_check, settings, json_path, plot)
        return
    if k is not None or exact_check:
        raise InputError("-k and --exact-check apply to FAISS index search: add --index FILE")
    from reidctl.evaluate.pipeline import evaluate_dir
    from reidctl.evaluate.report import format_table, plot_cmc
    from reidctl.evaluate.report import visualize as draw_grid
    from reidctl.evaluate.results import EvalSettings

    n_vis, vis_path = visualize
    if vis_path is not None and (n_vis is None or n_vis < 1):
        raise InputError(f"--visualize needs a positive number of queries, got {n_vis}")
    from reidctl.evaluate.dumps import parse_shape

    ev = evaluate_dir(
        results,
        EvalSettings(**settings),
        prep=prep,
        output_index=output_index,
        dim=dim,
        progress=True,
        output=output_name,
        model=model_file,
        dtype=dump_dtype,
        local_index=local_index,
        local_shape=parse_shape(local_shape) if local_shape else None,
    )
    if ev.data is not None and ev.data.dump is not None:
        for line in ev.data.dump.lines():
            click.echo(line)
    click.echo(format_table(ev.metrics))
    if json_path is not None:
        ev.metrics.save(json_path)
        click.echo(f"metrics written to {json_path}")
    if plot is not None:
        plot_cmc(ev.metrics, plot)
        click.echo(f"CMC curve written to {plot}")
    if vis_path is not None:
        draw_grid(ev, ev.data, ev.q_rows, ev.g_rows, n_vis, vis_path, images)
        click.echo(f"retrieval grid written to {vis_path}")


# What top-k lists from an index can be evaluated with; every other option is dense-only.
_WITH_INDEX = (
    "results",
    "index_path",
    "k",
    "exact_check",
    "max_rank",
    "ap",
    "json_path",
    "plot",
    "force",
)


def _refuse_dense_options() -> None:
    """Refuse options given on the command line that top-k lists from an index ignore."""
    from click.core import ParameterSource

    from reidctl.errors import InputError

    ctx = click.get_current_context()
    given = [
        p.opts[0]
        for p in ctx.command.params
        if p.name not in _WITH_INDEX
        and ctx.get_parameter_source(p.name) not in (None, ParameterSource.DEFAULT)
    ]
    if given:
        raise InputError(
            f"{', '.join(given)} cannot be used with --index: the index fixes the feature, "
            "normalisation and metric, and its top-k lists allow neither re-ranking, local "
            "distances, centroids nor vendor dumps; evaluate without --index for those"
        )


def _eval_index(
    results: Path,
    index_path: Path,
    k: int,
    exact_check: bool,
    settings: dict[str, Any],
    json_path: Path | None,
    plot: Path | None,
) -> None:
    """``eval --index``: metrics from the index's top-k lists (faiss imported lazily)."""
    from reidctl.evaluate.report import format_table, plot_cmc
    from reidctl.evaluate.results import Metrics
    from reidctl.scale.index_eval import eval_with_index

    m = eval_with_index(
        results, index_path, k, exact_check, max_rank=settings["max_rank"], ap=settings["ap"]
    )
    info = m["index"]
    metrics = Metrics(**{key: v for key, v in m.items() if key != "index"})
    click.echo(format_table(metrics))
    click.echo(f"{info['kind']} index, {info['metric']} metric, top {info['k']}: {info['note']}")
    if exact_check:
        ex = info["exact"]
        click.echo(
            f"recall@{info['k']} against exact search: {info['recall_at_k']:.4f} (exact top-"
            f"{info['k']}: rank-1 {100 * ex['rank1']:.2f}%, mAP {100 * ex['mAP']:.2f}%)"
        )
    if json_path is not None:
        metrics.save(json_path, index=info)
        click.echo(f"metrics written to {json_path}")
    if plot is not None:
        plot_cmc(metrics, plot)
        click.echo(f"CMC curve written to {plot}")
