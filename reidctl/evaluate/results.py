"""Evaluate a result directory or a vendor dump: load features and labels, compute metrics.

Entry points for other stages:

* :func:`evaluate_results` ``(results_dir, **settings) -> Evaluation``: a ``reidctl infer``
  result directory (docs/formats.md section 3).
* :func:`evaluate_dump` ``(dump_dir, prep_dir, output_index, dim=None, **settings)``: the
  Ascend ``benchmark`` / ``ais_bench`` output (``<stem>_<k>.bin|txt``) with the labels of
  the preprocessed set.
* :func:`evaluate_features` ``(q_feat, g_feat, q_pids, g_pids, q_camids, g_camids, ...)``.

``settings`` are the fields of :class:`EvalSettings`, validated when it is built. The steps
of an evaluation are in :mod:`reidctl.evaluate.pipeline`. Nothing here imports torch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from reidctl.artifacts import (
    ManifestEntry,
    Metrics,
    ModelSidecar,
    PrepSet,
    ResultDir,
    read_prep_meta,
)
from reidctl.errors import (
    FormatError,
    InputError,
    ShapeMismatchError,
    UnknownNameError,
)
from reidctl.evaluate.distance import (
    DEFAULT_METRIC,
    check_finite,
    check_metric,
)
from reidctl.evaluate.dumps import DumpLayout, find_dump_layout, read_dump_output
from reidctl.evaluate.pipeline import evaluate_features_detailed
from reidctl.evaluate.rank import AP_KINDS, PROTOCOLS, RankResult

DEFAULT_LOCAL_FEATURE = "local_feat"


@dataclass(frozen=True)
class EvalSettings:
    """How to evaluate. ``None`` for ``feature`` / ``normalize`` means: as ``model.json``
    says (for a vendor dump: normalise, as the Ascend accuracy script did).

    ``distance``: ``euclidean`` (default), ``sqeuclidean`` or ``cosine``. ``ap``: ``step``
    or ``interpolated``. ``protocol``: ``market1501`` or ``cuhk03``. ``rerank`` with ``k1``,
    ``k2``, ``lambda_value``. ``local``: AlignedReID local distance from output
    ``local_feature`` (default ``local_feat``), alone (``local_weight`` None) or added to the
    global distance with weight ``local_weight``. ``centroids`` (``per_camera``): gallery
    identities as mean embeddings. ``seed``: the CUHK03 single-shot draws.

    Invalid values and combinations raise :class:`InputError` when the settings are built.
    """

    feature: str | None = None
    normalize: bool | None = None
    distance: str = DEFAULT_METRIC
    max_rank: int = 50
    ap: str = "step"
    protocol: str = "market1501"
    rerank: bool = False
    k1: int = 20
    k2: int = 6
    lambda_value: float = 0.3
    local: bool = False
    local_feature: str | None = None
    local_weight: float | None = None
    centroids: bool = False
    per_camera: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        check_metric(self.distance)
        if self.ap not in AP_KINDS:
            raise UnknownNameError("AP kind", self.ap, AP_KINDS)
        if self.protocol not in PROTOCOLS:
            raise UnknownNameError("protocol", self.protocol, PROTOCOLS)
        if self.max_rank < 1:
            raise InputError(f"--max-rank must be >= 1, got {self.max_rank}")
        if self.per_camera and not self.centroids:
            raise InputError("--per-camera needs --centroids")
        if self.centroids and (self.local or self.protocol == "cuhk03"):
            raise InputError("--centroids cannot be combined with --local or --protocol cuhk03")
        if self.centroids and self.per_camera and self.rerank:
            raise InputError("--per-camera centroids cannot be combined with --rerank")
        if self.local_weight is not None and not self.local:
            raise InputError("--local-weight needs --local")

    @property
    def uses_global(self) -> bool:
        """Whether the global features enter the distance (all but local distance alone)."""
        return not self.local or self.local_weight is not None

    def describe(self) -> dict[str, Any]:
        """The settings as written to metrics.json."""
        return {
            "feature": self.feature,
            "normalize": self.normalize,
            "distance": self.distance,
            "max_rank": self.max_rank,
            "ap": self.ap,
            "protocol": self.protocol,
            "rerank": (
                {"k1": self.k1, "k2": self.k2, "lambda": self.lambda_value} if self.rerank else None
            ),
            "local": (
                {"feature": self.local_feature, "weight": self.local_weight} if self.local else None
            ),
            "centroids": (
                ("per-camera" if self.per_camera else "global") if self.centroids else None
            ),
        }


@dataclass
class Evaluation:
    """Everything an evaluation produced: metrics, per-query results, and (unless per-camera
    centroids) the query x gallery-entry distance matrix with the entries' labels.

    From a result directory or dump it also keeps the loaded ``data`` and the manifest rows
    of the queries and the gallery (``q_rows``, ``g_rows``). The metric fields read through:
    ``evaluation.mAP`` is ``evaluation.metrics.mAP``, ``to_dict()`` the metrics.json fields.
    """

    metrics: Metrics
    result: RankResult
    distmat: np.ndarray | None
    g_pids: np.ndarray
    g_camids: np.ndarray
    g_members: list[np.ndarray] | None  # gallery indices per entry (centroids), else None
    data: EvalData | None = None
    q_rows: np.ndarray | None = None
    g_rows: np.ndarray | None = None

    def __getattr__(self, name: str) -> Any:
        if name in _METRIC_FIELDS:
            return getattr(self.metrics, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def to_dict(self) -> dict[str, Any]:
        """The metrics.json fields (:meth:`Metrics.to_dict`)."""
        return self.metrics.to_dict()


_METRIC_FIELDS = frozenset(f.name for f in fields(Metrics))


@dataclass
class EvalData:
    """Features and labels of every manifest entry, in manifest order."""

    feat: np.ndarray | None  # [N, D] (None with --local alone)
    local: np.ndarray | None  # [N, S, D]
    entries: list[ManifestEntry]
    feature: str | None
    local_feature: str | None
    normalize: bool
    image_root: Path | None
    dump: DumpOutputs | None = None  # a vendor dump's layout and output numbering

    def split(self, name: str) -> np.ndarray:
        return np.array([i for i, e in enumerate(self.entries) if e.split == name], np.int64)


# --------------------------------------------------------------------------- loading


def _features(rd: ResultDir, name: str) -> np.ndarray:
    return np.asarray(rd.features(name)).astype(np.float32, copy=False)


def _prep_root(prep_dir: str | os.PathLike[str] | None) -> Path | None:
    if not prep_dir:
        return None
    try:
        root = read_prep_meta(prep_dir).get("root")
    except FormatError:
        return None
    return Path(root) if root else None


def load_results(
    results_dir: str | os.PathLike[str],
    feature: str | None = None,
    normalize: bool | None = None,
    local: bool = False,
    local_feature: str | None = None,
    need_global: bool = True,
) -> EvalData:
    """Read a result directory (:class:`ResultDir`: ``run.json`` must exist, ``model.json``,
    the manifest, the feature arrays). Raises :class:`FormatError` for an incomplete directory,
    :class:`UnknownNameError` (listing the outputs) for an unknown feature name and
    :class:`ShapeMismatchError` when the rows disagree with the manifest."""
    rd = ResultDir.open(results_dir)
    facts = rd.model
    outputs = rd.outputs
    entries = list(rd.manifest)
    norm = facts.l2_normalize if normalize is None else normalize
    feat = None
    name = None
    if need_global:
        name = feature or facts.feature
        feat = _features(rd, name)
        if feat.ndim != 2:
            raise ShapeMismatchError(
                f"output {name!r} has per-item shape {feat.shape[1:]}, not a vector; pick a "
                f"[N, D] output with --feature (outputs: {', '.join(outputs)}) or use it as "
                "--local-feature"
            )
    loc = None
    lname = None
    if local:
        lname = local_feature or DEFAULT_LOCAL_FEATURE
        loc = _features(rd, lname)
        if loc.ndim != 3:
            raise ShapeMismatchError(
                f"local output {lname!r} must be [N, stripes, D], got {loc.shape}"
            )
    images = rd.run.get("images") or {}
    root = Path(images["root"]) if images.get("root") else _prep_root(rd.run.get("prep_dir"))
    return EvalData(feat, loc, entries, name, lname, norm, root)


@dataclass(frozen=True)
class DumpOutputs:
    """What a dump's numbered files hold: ``layout`` (tool, folder, first index), the
    model's outputs by number (``names[k]``, from ``--model``'s sidecar, else empty) and
    the numbers read (``global_index``, ``local_index``; None when not read)."""

    layout: DumpLayout
    names: dict[int, str]
    shapes: dict[int, tuple[int | str, ...]]
    global_index: int | None
    local_index: int | None

    def lines(self) -> list[str]:
        """One line per output, for the terminal."""
        out = [f"dump: {self.layout.describe()}"]
        for k, name in self.names.items():
            used = {self.global_index: "  <- global feature", self.local_index: "  <- local"}
            out.append(f"  output {k}: {name} {list(self.shapes[k])}{used.get(k, '')}")
        return out


def _model_sidecar(model: str | os.PathLike[str]) -> ModelSidecar:
    p = Path(model)
    if p.suffix == ".json":
        return ModelSidecar.read(p)
    return ModelSidecar.load(p)


def _row_shape(spec_shape: tuple[int | str, ...]) -> tuple[int, ...] | None:
    row = spec_shape[1:]
    return tuple(int(d) for d in row) if all(isinstance(d, int) for d in row) else None


def load_dump(
    dump_dir: str | os.PathLike[str],
    prep_dir: str | os.PathLike[str],
    output_index: int | None = None,
    dim: int | None = None,
    normalize: bool | None = None,
    *,
    output: str | None = None,
    model: str | os.PathLike[str] | None = None,
    dtype: str = "float32",
    local: bool = False,
    local_index: int | None = None,
    local_shape: tuple[int, ...] | None = None,
    local_feature: str | None = None,
    need_global: bool = True,
    max_listed: int = 5,
) -> EvalData:
    """Read a vendor dump (:mod:`reidctl.evaluate.dumps`: ais_bench, Ascend ``benchmark``,
    ``reidctl infer --dump`` or a plain folder) for every entry of ``PREP/manifest.jsonl``.

    The global feature is output ``output_index`` (the ``k`` in ``<stem>_<k>.bin``), or
    with ``model`` (a model file with a sidecar, or the sidecar itself) the output named
    ``output`` (default: the sidecar's retrieval feature), numbered from the layout's index
    base in the sidecar's output order. Values per file follow from the file size and
    ``dtype`` (``float32`` or ``float16``); ``dim`` (optional) is checked. With ``local`` the
    stripe features [N, S, D] come from ``local_index`` (or, with ``model``, the output
    ``local_feature``, default ``local_feat``), shaped by the sidecar or ``local_shape``.
    ``normalize`` defaults to the sidecar's ``l2_normalize``, else True (the Ascend
    accuracy script L2-normalised). The layout and numbering are kept in ``EvalData.dump``.
    """
    layout = find_dump_layout(dump_dir)
    prep = PrepSet.open(prep_dir)
    entries = list(prep.entries)
    stems = [e.stem for e in entries]
    if dim is not None and dim < 1:
        raise InputError(f"--dim must be positive, got {dim}")
    sidecar = _model_sidecar(model) if model is not None else None
    names: dict[int, str] = {}
    shapes: dict[int, tuple[int | str, ...]] = {}
    if sidecar is not None:
        for i, o in enumerate(sidecar.outputs):
            names[layout.index_base + i] = o.name
            shapes[layout.index_base + i] = tuple(o.shape[1:])
    by_name = {n: k for k, n in names.items()}

    def index_of(name: str, what: str) -> int:
        if sidecar is None:
            raise InputError(
                f"{what} {name!r} needs --model MODEL_FILE (its sidecar numbers the outputs)"
            )
        if name not in by_name:
            raise UnknownNameError("output", name, list(by_name))
        return by_name[name]

    feat = None
    gk = None
    if need_global:
        if output is not None and output_index is not None:
            raise InputError("give --output NAME or --output-index K, not both")
        if output is not None:
            gk = index_of(output, "--output")
        elif output_index is not None:
            gk = output_index
        elif sidecar is not None:
            gk = index_of(sidecar.feature, "the retrieval feature")
        else:
            raise InputError(
                "a vendor dump needs --output-index K (the K in <stem>_<K>.bin), or --model "
                "MODEL_FILE to number its outputs"
            )
        shape = _row_shape(tuple(["batch", *shapes[gk]])) if gk in shapes else None
        if shape is not None and len(shape) != 1:
            raise ShapeMismatchError(
                f"output {gk} ({names[gk]}) has per-item shape {list(shape)}, not a vector; "
                "pick a vector output, or use it with --local"
            )
        feat = read_dump_output(layout.root, stems, gk, dtype, shape, "output", max_listed)
        if dim is not None and feat.shape[1] != dim:
            raise ShapeMismatchError(
                f"the files of output {gk} in {layout.root} hold {feat.shape[1]} {dtype} "
                f"values, expected --dim {dim}; check --dim, --output-index and --dump-dtype"
            )
    loc = None
    lk = None
    lname = None
    if local:
        lname = local_feature or DEFAULT_LOCAL_FEATURE
        lk = local_index if local_index is not None else index_of(lname, "local feature")
        lshape = local_shape
        if lshape is None and lk in shapes:
            lshape = _row_shape(tuple(["batch", *shapes[lk]]))
        if lshape is None or len(lshape) != 2:
            raise InputError(
                f"the local output {lk} needs its [stripes, D] shape: pass --local-shape SxD "
                "(e.g. 8x128) or --model MODEL_FILE"
            )
        loc = read_dump_output(layout.root, stems, lk, dtype, lshape, "local output", max_listed)
        lname = names.get(lk, f"output {lk}")
    norm = normalize
    if norm is None:
        norm = sidecar.l2_normalize if sidecar is not None else True
    return EvalData(
        feat,
        loc,
        entries,
        (names.get(gk) or f"output {gk}") if gk is not None else None,
        lname,
        norm,
        prep.root,
        DumpOutputs(layout, names, shapes, gk, lk),
    )


# --------------------------------------------------------------------------- evaluation


def evaluate_features(
    q_feat: np.ndarray | None,
    g_feat: np.ndarray | None,
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    q_camids: np.ndarray,
    g_camids: np.ndarray,
    settings: EvalSettings | None = None,
    q_local: np.ndarray | None = None,
    g_local: np.ndarray | None = None,
    progress: bool = False,
) -> Metrics:
    """Metrics for query features [Nq, D] against gallery features [Ng, D].

    Labels are pids (-1 junk, 0 distractor) and camera ids per row. ``settings``
    (:class:`EvalSettings`, defaults: normalise, Euclidean, Market-1501, step AP) picks the
    distance, re-ranking, local distance and centroids; ``q_local`` / ``g_local``
    [N, S, D] are needed with ``settings.local``.
    """
    return evaluate_features_detailed(
        q_feat, g_feat, q_pids, g_pids, q_camids, g_camids, settings, q_local, g_local, progress
    ).metrics


def _settings(settings: EvalSettings | None, overrides: dict[str, Any]) -> EvalSettings:
    names = {f.name for f in fields(EvalSettings)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise UnknownNameError("setting", unknown[0], names)
    return replace(settings or EvalSettings(), **overrides)


def evaluate_data(
    data: EvalData, settings: EvalSettings, progress: bool = False
) -> tuple[Evaluation, np.ndarray, np.ndarray]:
    """Evaluate loaded data; returns (evaluation, query row indices, gallery row indices)."""
    qi, gi = data.split("query"), data.split("gallery")
    if len(qi) == 0 or len(gi) == 0:
        raise InputError(
            f"the manifest holds {len(qi)} query and {len(gi)} gallery entries; evaluation "
            "needs both (preprocess the query and gallery splits)"
        )
    names = [e.stem for e in data.entries]
    if data.feat is not None:
        check_finite(data.feat, f"features {data.feature!r}", names)
    if data.local is not None:
        check_finite(data.local, f"local features {data.local_feature!r}", names)
    pids = np.array([e.pid for e in data.entries], np.int64)
    cams = np.array([e.camid for e in data.entries], np.int64)
    s = replace(
        settings,
        feature=data.feature,
        normalize=data.normalize,
        local_feature=data.local_feature if settings.local else None,
    )
    f = data.feat
    loc = data.local
    ev = evaluate_features_detailed(
        f[qi] if f is not None else None,
        f[gi] if f is not None else None,
        pids[qi],
        pids[gi],
        cams[qi],
        cams[gi],
        s,
        loc[qi] if loc is not None else None,
        loc[gi] if loc is not None else None,
        progress,
    )
    ev.data, ev.q_rows, ev.g_rows = data, qi, gi
    return ev, qi, gi


def evaluate_results(
    results_dir: str | os.PathLike[str],
    settings: EvalSettings | None = None,
    progress: bool = False,
    **overrides: Any,
) -> Evaluation:
    """The evaluation of a ``reidctl infer`` result directory; ``overrides`` are
    :class:`EvalSettings` fields, e.g. ``evaluate_results("results/", rerank=True).mAP``."""
    s = _settings(settings, overrides)
    data = load_results(
        results_dir,
        s.feature,
        s.normalize,
        local=s.local,
        local_feature=s.local_feature,
        need_global=s.uses_global,
    )
    return evaluate_data(data, s, progress)[0]


def evaluate_dump(
    dump_dir: str | os.PathLike[str],
    prep_dir: str | os.PathLike[str],
    output_index: int | None = None,
    dim: int | None = None,
    settings: EvalSettings | None = None,
    progress: bool = False,
    *,
    output: str | None = None,
    model: str | os.PathLike[str] | None = None,
    dtype: str = "float32",
    local_index: int | None = None,
    local_shape: tuple[int, ...] | None = None,
    **overrides: Any,
) -> Evaluation:
    """The evaluation of a vendor dump directory (see :func:`load_dump` for the options);
    ``overrides`` are :class:`EvalSettings` fields."""
    s = _settings(settings, overrides)
    if s.feature is not None:
        raise InputError(
            "--feature names an output of a result directory; for a vendor dump give "
            "--output-index K, or --model MODEL_FILE --output NAME"
        )
    data = load_dump(
        dump_dir,
        prep_dir,
        output_index,
        dim,
        s.normalize,
        output=output,
        model=model,
        dtype=dtype,
        local=s.local,
        local_index=local_index,
        local_shape=local_shape,
        local_feature=s.local_feature,
        need_global=s.uses_global,
    )
    return evaluate_data(data, s, progress)[0]


__all__ = [
    "DumpOutputs",
    "EvalData",
    "EvalSettings",
    "Evaluation",
    "Metrics",
    "evaluate_data",
    "evaluate_dump",
    "evaluate_features",
    "evaluate_features_detailed",
    "evaluate_results",
    "load_dump",
    "load_results",
]
