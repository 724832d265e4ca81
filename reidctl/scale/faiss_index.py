"""FAISS indexes over gallery features: build, save with a sidecar, load, search, recall.

A dense query x gallery distance matrix stops fitting in memory somewhere past a few hundred
thousand gallery crops; a FAISS index answers top-k queries instead. Four kinds are offered:

==========  =====================================================  ==========================
kind        what it is                                             memory per gallery row
==========  =====================================================  ==========================
``flat``    exact brute force (``IndexFlat``)                      ``4 * d`` bytes
``ivf``     k-means cells, scans ``nprobe`` of ``nlist`` cells     ``4 * d + 8`` bytes
``hnsw``    navigable small-world graph, ``M`` links per node      ``4 * d + ~8 * M`` bytes
``ivfpq``   IVF with product-quantised codes (``m`` bytes at 8b)   ``m * nbits / 8 + 8`` bytes
==========  =====================================================  ==========================

Metric ``ip`` ranks by inner product (cosine similarity on L2-normalised features; FAISS
returns similarities, larger is closer); ``l2`` ranks by *squared* Euclidean distance
(smaller is closer). Features are L2-normalised before indexing when the model's facts say
so (``model.json`` ``l2_normalize``), for either metric, so both rank like cosine distance.

An index ``gallery.index`` is saved with the sidecar ``gallery.index.json`` (written last)
holding the facts (format ``reidctl.index/1``, kind, metric, resolved parameters, feature
name, dimension, normalisation, sha256 of the features file and of the index file) and the
row mapping: FAISS id ``i`` is gallery row ``i``, whose result-manifest index, pid, camid and
source image are ``rows[...][i]``.
"""

from __future__ import annotations

import math
import os
import zipfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from reidctl.artifacts import (
    ManifestEntry,
    ModelSidecar,
    ResultDir,
    read_tagged,
    tool_info,
    write_npz_deterministic,
)
from reidctl.errors import FormatError, InputError, ShapeMismatchError, UnknownNameError
from reidctl.io import atomic_path, refuse_existing, sha256_file, write_json_atomic
from reidctl.progress import bar_disable
from reidctl.scale._optional import import_faiss

INDEX_FORMAT = "reidctl.index/1"
TOPK_FORMAT = "reidctl.topk/1"
KINDS = ("flat", "ivf", "hnsw", "ivfpq")
METRICS = ("ip", "l2")
# FAISS warns below 39 training points per k-means centroid; a cell count above N/39 gives
# poorly trained cells, so the default nlist stays under it.
_MIN_POINTS_PER_CELL = 39
# k-means in FAISS samples at most 256 points per centroid; 50 per cell trains cells well at a
# fifth of that cost (k-means costs rows * nlist * d per iteration).
_TRAIN_POINTS_PER_CELL = 50
_MAX_POINTS_PER_CELL = 256


# --------------------------------------------------------------------------- parameters


@dataclass(frozen=True)
class IndexParams:
    """How to build (and, by default, search) an index.

    ``nlist`` (ivf, ivfpq): number of k-means cells; default ``4 * sqrt(N)`` capped at
    ``N / 39``. ``nprobe`` (ivf, ivfpq): cells scanned per query; default ``max(8, nlist //
    32)`` capped at ``nlist``. ``m``: for hnsw the links per node (default 32); for ivfpq the
    number of sub-quantizers, which must divide the feature dimension (default ``d / 8``).
    ``nbits`` (ivfpq): bits per sub-quantizer code (default 8). ``ef_construction`` /
    ``ef_search`` (hnsw): candidate list sizes while building / searching (defaults 40 / 64).
    ``train_size``: vectors sampled (seeded) to train ivf/ivfpq; default ``50 * nlist``
    (ivfpq: at least ``256 * 2**nbits`` for its codebooks). ``niter``: k-means iterations
    (default 10). ``seed``: seed of the training sample and of k-means.
    """

    kind: str = "flat"
    metric: str = "ip"
    nlist: int | None = None
    nprobe: int | None = None
    m: int | None = None
    nbits: int = 8
    ef_construction: int = 40
    ef_search: int = 64
    train_size: int | None = None
    niter: int | None = 10
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise UnknownNameError("index kind", self.kind, KINDS)
        if self.metric not in METRICS:
            raise UnknownNameError("metric", self.metric, METRICS)
        for name in ("nlist", "nprobe", "m", "train_size", "niter"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise InputError(f"--{name.replace('_', '-')} must be at least 1, got {v}")
        if not 1 <= self.nbits <= 16:
            raise InputError(f"--nbits must be in 1..16, got {self.nbits}")
        if self.ef_construction < 1 or self.ef_search < 1:
            raise InputError("ef_construction and ef_search must be at least 1")

    def resolved(self, n: int, d: int) -> IndexParams:
        """Fill in the defaults for ``n`` gallery rows of dimension ``d`` and check the fit."""
        if n < 1:
            raise InputError("cannot build an index over 0 gallery rows")
        if self.kind in ("flat", "hnsw"):
            m = (self.m or 32) if self.kind == "hnsw" else None
            return replace(self, nlist=None, nprobe=None, m=m, train_size=None, niter=None)
        nlist = self.nlist or max(1, min(round(4 * math.sqrt(n)), n // _MIN_POINTS_PER_CELL))
        if nlist > n:
            raise InputError(
                f"--nlist {nlist} exceeds the {n} gallery rows; use --nlist <= {n} "
                "(about 4*sqrt(rows)) or --kind flat for a small gallery"
            )
        nprobe = min(nlist, self.nprobe or max(8, nlist // 32))
        m = None
        if self.kind == "ivfpq":
            m = self.m or (d // 8 if d % 8 == 0 else None)
            if m is None or d % m:
                divisors = [v for v in (4, 8, 16, 32, 48, 64, 96, 128) if d % v == 0]
                raise InputError(
                    f"--m {m} does not divide the feature dimension {d}; "
                    f"valid sub-quantizer counts include: {', '.join(map(str, divisors))}"
                )
            if n < 2**self.nbits:
                raise InputError(
                    f"ivfpq with --nbits {self.nbits} needs at least {2**self.nbits} gallery "
                    f"rows to train its codebooks, got {n}; use --kind ivf or flat"
                )
        train = min(n, self.train_size or _TRAIN_POINTS_PER_CELL * nlist)
        if self.kind == "ivfpq":
            train = max(train, min(n, _MAX_POINTS_PER_CELL * 2**self.nbits))
        return replace(self, nlist=nlist, nprobe=nprobe, m=m, train_size=train)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _faiss_metric(faiss: Any, metric: str) -> int:
    return faiss.METRIC_INNER_PRODUCT if metric == "ip" else faiss.METRIC_L2


def _as_matrix(x: np.ndarray, what: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[1] < 1:
        raise ShapeMismatchError(f"{what} must be a 2-D [rows, dim] array, got shape {x.shape}")
    return np.ascontiguousarray(x, dtype=np.float32)


def l2_normalize(x: np.ndarray, chunk: int = 65536) -> np.ndarray:
    """Row-wise L2 normalisation to float32 (zero rows stay zero); ``[N, d] -> [N, d]``."""
    x = _as_matrix(x, "features")
    out = np.empty_like(x)
    for s in range(0, x.shape[0], chunk):
        block = x[s : s + chunk]
        norms = np.linalg.norm(block, axis=1, keepdims=True)
        out[s : s + chunk] = block / np.maximum(norms, 1e-12)
    return out


def build_index(
    gallery_features: np.ndarray,
    kind: str = "flat",
    metric: str = "ip",
    *,
    progress: bool = False,
    **options: Any,
) -> Any:
    """Build a FAISS index over ``gallery_features`` (``[N, d]``, any float dtype).

    ``options`` are the other :class:`IndexParams` fields (``nlist``, ``nprobe``, ``m``,
    ``nbits``, ``ef_construction``, ``ef_search``, ``train_size``, ``seed``). The features
    are indexed as given (normalise them first for cosine ranking). FAISS id ``i`` is row
    ``i``. The resolved parameters are set on the index as its search defaults.
    """
    params = IndexParams(kind=kind, metric=metric, **options)
    return build_index_from_params(gallery_features, params, progress=progress)[0]


def build_index_from_params(
    gallery_features: np.ndarray, params: IndexParams, *, progress: bool = False
) -> tuple[Any, IndexParams]:
    """Like :func:`build_index`; returns ``(index, resolved parameters)``."""
    faiss = import_faiss()
    x = _as_matrix(gallery_features, "gallery features")
    n, d = x.shape
    p = params.resolved(n, d)
    metric = _faiss_metric(faiss, p.metric)
    if p.kind == "flat":
        index = faiss.IndexFlat(d, metric)
    elif p.kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, p.m, metric)
        index.hnsw.efConstruction = p.ef_construction
        index.hnsw.efSearch = p.ef_search
    else:
        quantizer = faiss.IndexFlat(d, metric)
        if p.kind == "ivf":
            index = faiss.IndexIVFFlat(quantizer, d, p.nlist, metric)
        else:
            index = faiss.IndexIVFPQ(quantizer, d, p.nlist, p.m, p.nbits, metric)
            index.pq.cp.seed = p.seed
            index.pq.cp.niter = p.niter
        index.cp.seed = p.seed
        index.cp.niter = p.niter
        # Spherical k-means keeps centroids on the unit sphere, as the features are for ip.
        index.cp.spherical = p.metric == "ip"
        index.nprobe = p.nprobe
        index.train(_training_sample(x, p.train_size or n, p.seed))
    _add_in_chunks(index, x, progress)
    return index, p


def _training_sample(x: np.ndarray, size: int, seed: int) -> np.ndarray:
    if size >= x.shape[0]:
        return x
    rows = np.sort(np.random.default_rng(seed).choice(x.shape[0], size, replace=False))
    return np.ascontiguousarray(x[rows])


def _add_in_chunks(index: Any, x: np.ndarray, progress: bool, chunk: int = 65536) -> None:
    from tqdm import tqdm

    with tqdm(
        total=x.shape[0], desc="index add", unit="row", disable=bar_disable(progress), leave=False
    ) as bar:
        for s in range(0, x.shape[0], chunk):
            block = x[s : s + chunk]
            index.add(block)
            bar.update(block.shape[0])


def search(
    index: Any,
    queries: np.ndarray,
    k: int,
    *,
    nprobe: int | None = None,
    ef_search: int | None = None,
    chunk: int = 4096,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` search of ``queries`` (``[Q, d]``) in ``index``.

    Returns ``(distances, indices)``, both ``[Q, k']`` with ``k' = min(k, index.ntotal)``:
    float32 similarities (ip, descending) or squared L2 distances (l2, ascending), and int64
    row ids (``-1`` where an approximate index found fewer than ``k'`` rows). ``nprobe``
    (ivf, ivfpq) and ``ef_search`` (hnsw) override the index's own settings for this call;
    both must be at least 1 and fit the index kind (:class:`InputError` otherwise).
    """
    from tqdm import tqdm

    faiss = import_faiss()
    if k < 1:
        raise InputError(f"-k must be at least 1, got {k}")
    for name, value in (("--nprobe", nprobe), ("--ef-search", ef_search)):
        if value is not None and value < 1:
            raise InputError(f"{name} must be at least 1, got {value}")
    if nprobe is not None and not _is_ivf(faiss, index):
        raise InputError("--nprobe applies to ivf and ivfpq indexes only; this index is not one")
    if ef_search is not None and not isinstance(index, faiss.IndexHNSW):
        raise InputError("--ef-search applies to hnsw indexes only; this index is not one")
    q = _as_matrix(queries, "query features")
    if q.shape[1] != index.d:
        raise ShapeMismatchError(
            f"query features have dimension {q.shape[1]}, the index holds dimension {index.d}"
        )
    k = min(k, int(index.ntotal))
    params = None
    if nprobe is not None:
        params = faiss.SearchParametersIVF(nprobe=int(nprobe))
    elif ef_search is not None:
        params = faiss.SearchParametersHNSW(efSearch=int(ef_search))
    if k == 0:
        return np.zeros((q.shape[0], 0), np.float32), np.zeros((q.shape[0], 0), np.int64)
    dist = np.empty((q.shape[0], k), np.float32)
    ids = np.empty((q.shape[0], k), np.int64)
    with tqdm(total=q.shape[0], desc="search", unit="query", disable=bar_disable(progress)) as bar:
        for s in range(0, q.shape[0], chunk):
            block = q[s : s + chunk]
            dist[s : s + chunk], ids[s : s + chunk] = index.search(block, k, params=params)
            bar.update(block.shape[0])
    return dist, ids


def _is_ivf(faiss: Any, index: Any) -> bool:
    return faiss.try_extract_index_ivf(index) is not None


def exact_search(
    gallery: np.ndarray, queries: np.ndarray, k: int, metric: str = "ip", chunk: int = 1024
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` with numpy (no FAISS): the reference for flat-index tests and recall.

    Same conventions as :func:`search`: ``ip`` returns similarities in descending order,
    ``l2`` squared distances in ascending order; ties go to the lower row id. Memory is
    ``chunk * N`` floats at a time.
    """
    if metric not in METRICS:
        raise UnknownNameError("metric", metric, METRICS)
    g = _as_matrix(gallery, "gallery features")
    q = _as_matrix(queries, "query features")
    if q.shape[1] != g.shape[1]:
        raise ShapeMismatchError(f"query dim {q.shape[1]} != gallery dim {g.shape[1]}")
    k = min(k, g.shape[0])
    g_sq = np.einsum("ij,ij->i", g, g) if metric == "l2" else None
    dist = np.empty((q.shape[0], k), np.float32)
    ids = np.empty((q.shape[0], k), np.int64)
    for s in range(0, q.shape[0], chunk):
        block = q[s : s + chunk]
        if metric == "ip":
            cost = -(block @ g.T)  # rank by smallest cost in both metrics
        else:
            cost = np.einsum("ij,ij->i", block, block)[:, None] - 2 * (block @ g.T) + g_sq
        part = np.argpartition(cost, k - 1, axis=1)[:, :k] if k < g.shape[0] else None
        if part is None:
            part = np.broadcast_to(np.arange(g.shape[0]), cost.shape)
        part_cost = np.take_along_axis(cost, part, axis=1)
        order = np.lexsort((part, part_cost), axis=1)
        top = np.take_along_axis(part, order, axis=1)
        top_cost = np.take_along_axis(part_cost, order, axis=1)
        ids[s : s + chunk] = top
        dist[s : s + chunk] = -top_cost if metric == "ip" else np.maximum(top_cost, 0)
    return dist, ids


def recall_at_k(found: np.ndarray, truth: np.ndarray, k: int | None = None) -> float:
    """Mean fraction of the exact top-``k`` (``truth``) that ``found`` also returns in its top-k.

    Both are ``[Q, >=k]`` row-id arrays (``-1`` entries in ``found`` never match). This is
    the "k-recall@k" of the ANN literature: 1.0 when the approximate lists hold the same
    rows as the exact ones, in any order. ``k`` defaults to ``truth.shape[1]``.
    """
    found, truth = np.asarray(found), np.asarray(truth)
    k = truth.shape[1] if k is None else k
    if found.shape[0] != truth.shape[0] or min(found.shape[1], truth.shape[1]) < k or k < 1:
        raise ShapeMismatchError(
            f"recall@{k} needs two [Q, >={k}] arrays, got {found.shape} and {truth.shape}"
        )
    if found.shape[0] == 0:
        return 0.0
    hits = 0
    for s in range(0, found.shape[0], 1024):
        f = found[s : s + 1024, :k]
        t = truth[s : s + 1024, :k]
        match = (f[:, :, None] == t[:, None, :]) & (f[:, :, None] >= 0)
        hits += int(match.any(axis=2).sum())
    return hits / (found.shape[0] * k)


# --------------------------------------------------------------------------- result dirs


@dataclass
class ResultFeatures:
    """One split of a result directory: its manifest rows and their (float32) features."""

    results_dir: Path
    entries: list[ManifestEntry]
    features: np.ndarray  # [rows, dim], float32, normalised when `normalized`
    feature: str
    normalized: bool
    features_sha256: str
    features_file: str
    model: ModelSidecar

    @property
    def manifest_index(self) -> np.ndarray:
        return np.array([e.index for e in self.entries], dtype=np.int64)

    @property
    def pids(self) -> np.ndarray:
        return np.array([e.pid for e in self.entries], dtype=np.int64)

    @property
    def camids(self) -> np.ndarray:
        return np.array([e.camid for e in self.entries], dtype=np.int64)


def load_result_features(
    results_dir: str | os.PathLike[str],
    split: str,
    feature: str | None = None,
    normalize: bool | None = None,
) -> ResultFeatures:
    """Read the ``split`` rows of a result directory (docs/formats.md section 3).

    ``feature`` defaults to ``model.json``'s ``feature``; ``normalize`` (L2, per row)
    defaults to ``model.json``'s ``l2_normalize``. Raises :class:`FormatError` for an
    incomplete directory (no ``run.json``), a missing feature file or a row-count mismatch,
    :class:`BadDataError` (exit code 1) when a chosen row holds NaN or inf.
    """
    rd = ResultDir.open(results_dir)
    entries = rd.manifest
    name = feature or rd.model.feature
    if name not in rd.outputs:
        raise UnknownNameError("feature", name, rd.outputs)
    arr = rd.features(name, mmap=True)
    chosen = [e for e in entries if e.split == split]
    if not chosen:
        splits = sorted({e.split for e in entries})
        raise FormatError(
            f"{rd.path} has no {split!r} rows (splits present: {', '.join(splits) or 'none'}); "
            f"preprocess with the {split} split included"
        )
    rows = np.array([e.index for e in chosen], dtype=np.int64)
    x = np.asarray(arr[rows], dtype=np.float32).reshape(len(chosen), -1)
    _check_finite_rows(x, f"{rd.path / rd.features_file(name)} ({split} rows)", chosen)
    do_norm = rd.model.l2_normalize if normalize is None else normalize
    if do_norm:
        x = l2_normalize(x)
    return ResultFeatures(
        results_dir=rd.path.resolve(),
        entries=chosen,
        features=np.ascontiguousarray(x),
        feature=name,
        normalized=do_norm,
        features_sha256=rd.features_sha256(name),
        features_file=rd.features_file(name),
        model=rd.model,
    )


def _check_finite_rows(
    x: np.ndarray, what: str, entries: list[ManifestEntry], chunk: int = 65536
) -> None:
    """:class:`BadDataError` naming the rows of ``x`` ``[N, d]`` that hold NaN or inf
    (checked ``chunk`` rows at a time, so a large gallery needs no ``N x d`` mask)."""
    from reidctl.evaluate.distance import check_finite

    bad = np.concatenate(
        [~np.isfinite(x[s : s + chunk]).all(axis=1) for s in range(0, len(x), chunk)]
        or [np.zeros(0, bool)]
    )
    if bad.any():
        rows = np.flatnonzero(bad)
        check_finite(x[rows], what, [entries[i].stem for i in rows])


# --------------------------------------------------------------------------- saved index


def index_sidecar_path(index_path: str | os.PathLike[str]) -> Path:
    """``gallery.index`` -> ``gallery.index.json``."""
    p = Path(index_path)
    return p.with_name(p.name + ".json")


@dataclass
class GalleryIndex:
    """A FAISS index plus its sidecar facts and row mapping (see the module docstring)."""

    index: Any
    sidecar: dict[str, Any]

    @property
    def params(self) -> IndexParams:
        return IndexParams(**self.sidecar["params"])

    @property
    def metric(self) -> str:
        return str(self.sidecar["metric"])

    def rows(self, column: str) -> np.ndarray:
        """A row-mapping column (``manifest_index``, ``pid``, ``camid`` or ``source``)."""
        values = self.sidecar["rows"][column]
        return np.array(values) if column == "source" else np.array(values, dtype=np.int64)


def build_gallery_index(
    results_dir: str | os.PathLike[str],
    kind: str = "flat",
    metric: str = "ip",
    *,
    feature: str | None = None,
    normalize: bool | None = None,
    split: str = "gallery",
    progress: bool = False,
    **options: Any,
) -> GalleryIndex:
    """Index the ``split`` rows (manifest ``split == "gallery"``) of a result directory.

    ``feature`` / ``normalize`` default to ``model.json``'s ``feature`` / ``l2_normalize``;
    ``options`` are :class:`IndexParams` fields. Returns the index with its sidecar; save it
    with :func:`save_gallery_index`.
    """
    gal = load_result_features(results_dir, split, feature, normalize)
    index, params = build_index_from_params(
        gal.features, IndexParams(kind=kind, metric=metric, **options), progress=progress
    )
    sidecar = {
        "format": INDEX_FORMAT,
        "tool": tool_info(),
        "kind": params.kind,
        "metric": params.metric,
        "params": params.to_dict(),
        "feature": gal.feature,
        "dim": int(gal.features.shape[1]),
        "normalized": gal.normalized,
        "num_rows": len(gal.entries),
        "split": split,
        "results_dir": str(gal.results_dir),
        "features_file": gal.features_file,
        "features_sha256": gal.features_sha256,
        "model": gal.model.model,
        "model_sha256": gal.model.model_sha256,
        "rows": {
            "manifest_index": [e.index for e in gal.entries],
            "pid": [e.pid for e in gal.entries],
            "camid": [e.camid for e in gal.entries],
            "source": [e.source for e in gal.entries],
        },
    }
    return GalleryIndex(index=index, sidecar=sidecar)


def save_gallery_index(
    gallery_index: GalleryIndex, path: str | os.PathLike[str], force: bool = False
) -> Path:
    """Write ``path`` (the FAISS index) then ``path.json`` (the sidecar, last), atomically.

    Raises :class:`OutputExistsError` when ``path`` exists and ``force`` is false.
    """
    faiss = import_faiss()
    path = Path(path)
    refuse_existing(path, force=force)
    # A stale sidecar must never describe the new index while it is being written.
    index_sidecar_path(path).unlink(missing_ok=True)
    with atomic_path(path) as tmp:
        faiss.write_index(gallery_index.index, str(tmp))
    sidecar = dict(gallery_index.sidecar, index_file=path.name, index_sha256=sha256_file(path))
    write_json_atomic(index_sidecar_path(path), sidecar)
    gallery_index.sidecar = sidecar
    return path


def load_gallery_index(path: str | os.PathLike[str], verify: bool = True) -> GalleryIndex:
    """Read an index and its sidecar; with ``verify`` check the index file's sha256."""
    faiss = import_faiss()
    path = Path(path)
    if not path.is_file():
        raise FormatError(f"index not found: {path}; build it with `reidctl index build`")
    sidecar = read_tagged(
        index_sidecar_path(path),
        "index sidecar",
        INDEX_FORMAT,
        "rebuild the index with `reidctl index build`",
    )
    if verify and sidecar.get("index_sha256") != sha256_file(path):
        raise FormatError(
            f"{path} does not match its sidecar (sha256 differs): the index was replaced or "
            "truncated; rebuild it with `reidctl index build`"
        )
    try:
        index = faiss.read_index(str(path))
    except RuntimeError as e:
        raise FormatError(f"{path} is not a readable FAISS index: {e}") from e
    rows = sidecar.get("rows", {})
    if index.ntotal != sidecar.get("num_rows") or any(
        len(rows.get(c, ())) != index.ntotal for c in ("manifest_index", "pid", "camid")
    ):
        raise FormatError(
            f"{path} holds {index.ntotal} rows but its sidecar maps {sidecar.get('num_rows')}; "
            "rebuild the index"
        )
    return GalleryIndex(index=index, sidecar=sidecar)


# --------------------------------------------------------------------------- top-k lists


@dataclass
class TopK:
    """Top-k lists of query rows against a gallery index.

    ``indices[i, j]``: gallery row (FAISS id, position in the index sidecar's rows) of the
    j-th hit of query ``i`` (``-1``: none); ``distances``: its similarity (ip) or squared
    distance (l2); ``query_index``: result-manifest index of each query row. The gallery
    and query pids/camids travel along so the lists can be scored without other files.
    """

    indices: np.ndarray  # [Q, k] int64
    distances: np.ndarray  # [Q, k] float32
    query_index: np.ndarray  # [Q] int64
    query_pids: np.ndarray
    query_camids: np.ndarray
    gallery_index: np.ndarray  # [G] int64: result-manifest index of each gallery row
    gallery_pids: np.ndarray
    gallery_camids: np.ndarray
    metric: str

    def arrays(self) -> dict[str, np.ndarray]:
        d = {k: v for k, v in asdict(self).items() if k != "metric"}
        d["metric"] = np.array(self.metric)
        d["format"] = np.array(TOPK_FORMAT)
        return d


def search_gallery_index(
    gallery_index: GalleryIndex | str | os.PathLike[str],
    query_results: str | os.PathLike[str],
    k: int = 100,
    *,
    split: str = "query",
    nprobe: int | None = None,
    ef_search: int | None = None,
    progress: bool = False,
) -> TopK:
    """Search the ``split`` rows of ``query_results`` in a gallery index.

    The queries use the index's feature and normalisation (from its sidecar); a dimension
    or feature-name mismatch raises :class:`ShapeMismatchError` / :class:`UnknownNameError`.
    """
    gi = (
        gallery_index
        if isinstance(gallery_index, GalleryIndex)
        else load_gallery_index(gallery_index)
    )
    q = load_result_features(
        query_results, split, feature=gi.sidecar["feature"], normalize=gi.sidecar["normalized"]
    )
    if q.features.shape[1] != gi.sidecar["dim"]:
        raise ShapeMismatchError(
            f"{query_results}: feature {q.feature!r} has dimension {q.features.shape[1]}, "
            f"the index was built on dimension {gi.sidecar['dim']}; use results of the same model"
        )
    dist, ids = search(
        gi.index, q.features, k, nprobe=nprobe, ef_search=ef_search, progress=progress
    )
    return TopK(
        indices=ids,
        distances=dist,
        query_index=q.manifest_index,
        query_pids=q.pids,
        query_camids=q.camids,
        gallery_index=gi.rows("manifest_index"),
        gallery_pids=gi.rows("pid"),
        gallery_camids=gi.rows("camid"),
        metric=gi.metric,
    )


def write_topk(topk: TopK, path: str | os.PathLike[str]) -> Path:
    """Save top-k lists as ``.npz`` (arrays of :class:`TopK` plus ``metric`` and ``format``)."""
    write_npz_deterministic(path, topk.arrays())
    return Path(path)


def read_topk(path: str | os.PathLike[str]) -> TopK:
    """Read a file written by :func:`write_topk`."""
    path = Path(path)
    if not path.is_file():
        raise FormatError(f"top-k file not found: {path}; create it with `reidctl search`")
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["format"]) != TOPK_FORMAT:
                raise FormatError(f"{path} is not a {TOPK_FORMAT} file")
            fields = {k: z[k] for k in z.files if k not in ("format", "metric")}
            return TopK(metric=str(z["metric"]), **fields)
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as e:
        raise FormatError(f"{path} is not a readable top-k file ({e})") from e
