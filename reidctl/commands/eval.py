"""``reidctl eval``: CMC / mAP / mINP from a result directory or a vendor dump."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("eval")
@click.argument("results", type=click.Path(path_type=Path))
@click.option(
    "--prep",
    type=click.Path(path_type=Path),
    help="Preprocessed set whose labels a vendor dump RESULTS belongs to (needs --output-index).",
)
@click.option(
    "--output-index", type=int, help="K of the dump files <stem>_<K>.bin|txt (with --prep)."
)
@click.option("--dim", type=int, help="Values per raw .bin dump file (e.g. 2048).")
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
@click.option("--centroids", is_flag=True, help="Gallery identities as mean embeddings.")
@click.option("--per-camera", is_flag=True, help="With --centroids: per query, other cameras only.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the cuhk03 draws.")
@click.option(
    "--json", "json_path", type=click.Path(path_type=Path), help="Write metrics.json here."
)
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
def eval_cmd(
    results: Path,
    prep: Path | None,
    output_index: int | None,
    dim: int | None,
    feature: str | None,
    normalize: bool | None,
    distance: str,
    max_rank: int,
    ap: str,
    protocol: str,
    rerank: bool,
    k1: int,
    k2: int,
    lambda_value: float,
    local: bool,
    local_feature: str | None,
    local_weight: float | None,
    centroids: bool,
    per_camera: bool,
    seed: int,
    json_path: Path | None,
    plot: Path | None,
    visualize: tuple[int | None, Path | None],
    images: Path | None,
) -> None:
    """Compute rank-1/5/10, mAP and mINP of RESULTS (a `reidctl infer` result directory).

    Queries are the manifest's `query` split, the gallery its `gallery` split; the
    Market-1501 protocol ignores same-identity images from the query's camera and junk
    (pid -1), counts distractors (pid 0) as wrong, and leaves out (but counts) queries
    without a valid match. RESULTS must hold run.json (written last by `reidctl infer`).

    \b
    Examples:
      reidctl eval results/
      reidctl eval results/ --rerank --json metrics.json --plot cmc.png
      reidctl eval results/ --local --local-weight 1 --rerank   # AlignedReID global+local
      reidctl eval results/ --centroids --per-camera
      reidctl eval results/ --visualize 8 top10.png
      reidctl eval dumpOutput_device0/ --prep prep/ --output-index 2 --dim 2048
    """
    from reidctl.errors import InputError
    from reidctl.evaluate.report import format_table, plot_cmc
    from reidctl.evaluate.report import visualize as draw_grid
    from reidctl.evaluate.results import EvalSettings, evaluate_data, load_dump, load_results
    from reidctl.io import write_json_atomic

    settings = EvalSettings(
        feature=feature,
        normalize=normalize,
        distance=distance,
        max_rank=max_rank,
        ap=ap,
        protocol=protocol,
        rerank=rerank,
        k1=k1,
        k2=k2,
        lambda_value=lambda_value,
        local=local,
        local_feature=local_feature,
        local_weight=local_weight,
        centroids=centroids,
        per_camera=per_camera,
        seed=seed,
    )
    settings.check()
    if prep is not None:
        if output_index is None:
            raise InputError("a vendor dump needs --output-index K (the K in <stem>_<K>.bin)")
        if local:
            raise InputError("--local is not available for vendor dumps (global features only)")
        data = load_dump(results, prep, output_index, dim, normalize)
    else:
        if output_index is not None or dim is not None:
            raise InputError("--output-index and --dim apply to vendor dumps: add --prep PREP")
        data = load_results(
            results,
            feature,
            normalize,
            local=local,
            local_feature=local_feature,
            need_global=not local or local_weight is not None,
        )
    ev, q_rows, g_rows = evaluate_data(data, settings, progress=True)
    click.echo(format_table(ev.metrics))
    if json_path is not None:
        write_json_atomic(json_path, ev.metrics.to_dict())
        click.echo(f"metrics written to {json_path}")
    if plot is not None:
        plot_cmc(ev.metrics, plot)
        click.echo(f"CMC curve written to {plot}")
    n_vis, vis_path = visualize
    if vis_path is not None:
        if n_vis is None or n_vis < 1:
            raise InputError(f"--visualize needs a positive number of queries, got {n_vis}")
        draw_grid(ev, data, q_rows, g_rows, n_vis, vis_path, images)
        click.echo(f"retrieval grid written to {vis_path}")
