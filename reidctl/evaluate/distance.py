"""Distances between feature vectors, computed in float32 with one matrix multiply.

``euclidean`` is the default everywhere: on L2-normalised features it ranks exactly like
``cosine`` (``d^2 = 2 - 2 cos``), it is what the Ascend port's accuracy script and the
k-reciprocal re-ranking code were written for (re-ranking squares it), and it stays right
for embeddings trained with a Euclidean triplet loss and used without normalisation
(TriNet).
"""

from __future__ import annotations

import numpy as np

from reidctl.errors import BadDataError, ShapeMismatchError, UnknownNameError

METRICS = ("euclidean", "sqeuclidean", "cosine")
DEFAULT_METRIC = "euclidean"


def check_metric(metric: str) -> str:
    if metric not in METRICS:
        raise UnknownNameError("distance", metric, METRICS)
    return metric


def l2_normalize(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """``x / ||x||`` along ``axis`` in float32 (zero vectors stay zero)."""
    x = np.asarray(x, dtype=np.float32)
    norm = np.sqrt(np.einsum("...i,...i->...", x, x) if axis == -1 else (x * x).sum(axis))
    return x / np.maximum(np.expand_dims(norm, axis), 1e-12)


def check_finite(x: np.ndarray, what: str, names: list[str] | None = None) -> None:
    """Raise :class:`BadDataError` naming the first rows of ``x`` holding NaN or inf."""
    bad = ~np.isfinite(x.reshape(len(x), -1)).all(axis=1)
    if bad.any():
        rows = np.flatnonzero(bad)
        shown = [names[i] if names else str(i) for i in rows[:5]]
        more = f" (+{len(rows) - 5} more)" if len(rows) > 5 else ""
        raise BadDataError(
            f"{what}: {len(rows)} rows hold NaN or inf values: {', '.join(shown)}{more}; "
            "the model or back end produced invalid outputs for them"
        )


def _as_matrix(x: np.ndarray, what: str) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ShapeMismatchError(f"{what} must be a [N, D] matrix, got shape {x.shape}")
    return x


def finish_distance(dot: np.ndarray, sq_a: np.ndarray, sq_b: np.ndarray, metric: str) -> np.ndarray:
    """Turn the dot products ``dot`` [A, B] into distances, in place (returns ``dot``).

    ``sq_a`` [A] and ``sq_b`` [B] are squared norms (ignored for ``cosine``, whose inputs
    must already be L2-normalised).
    """
    if metric == "cosine":
        np.subtract(np.float32(1.0), dot, out=dot)
        return dot
    dot *= np.float32(-2.0)
    dot += sq_a[:, None]
    dot += sq_b[None, :]
    # rounding can make the squared distance of near-identical vectors slightly negative
    np.maximum(dot, 0.0, out=dot)
    if metric == "euclidean":
        np.sqrt(dot, out=dot)
    return dot


def compute_distance(q: np.ndarray, g: np.ndarray, metric: str = DEFAULT_METRIC) -> np.ndarray:
    """Distance matrix [Nq, Ng] (float32) between the rows of ``q`` [Nq, D] and ``g`` [Ng, D].

    ``metric``: ``euclidean`` (default), ``sqeuclidean`` or ``cosine`` (``1 - cos``; the
    inputs are L2-normalised for it).
    """
    check_metric(metric)
    q, g = _as_matrix(q, "query features"), _as_matrix(g, "gallery features")
    if q.shape[1] != g.shape[1]:
        raise ShapeMismatchError(
            f"query features have {q.shape[1]} dims but gallery features {g.shape[1]}"
        )
    return DistanceFn(np.concatenate([q, g]), metric=metric).block(
        np.arange(len(q)), len(q), len(q) + len(g)
    )


class DistanceFn:
    """Distances among the rows of one item set (queries then gallery), in blocks.

    Combines an optional global feature [N, D] under ``metric`` with an optional AlignedReID
    local feature [N, S, D] (see :mod:`reidctl.evaluate.local`):
    ``global + local_weight * local``, or the local distance alone when no global feature
    is given. Used by the chunked evaluation and the re-ranking, which never hold an N x N
    matrix.
    """

    def __init__(
        self,
        global_feat: np.ndarray | None,
        metric: str = DEFAULT_METRIC,
        local_feat: np.ndarray | None = None,
        local_weight: float = 1.0,
    ) -> None:
        check_metric(metric)
        if global_feat is None and local_feat is None:
            raise ValueError("DistanceFn needs a global or a local feature")
        self.metric = metric
        self.local_weight = np.float32(local_weight)
        self.x = None
        self.sq = None
        if global_feat is not None:
            x = _as_matrix(global_feat, "features")
            if metric == "cosine":
                x = l2_normalize(x)
            self.x = np.ascontiguousarray(x)
            self.sq = np.einsum("ij,ij->i", self.x, self.x)
        self.local = None
        if local_feat is not None:
            from reidctl.evaluate.local import LocalDistance

            self.local = LocalDistance(local_feat)
        self.n = len(self.x) if self.x is not None else self.local.n

    def block(
        self,
        rows: np.ndarray,
        c0: int,
        c1: int,
        out: np.ndarray | None = None,
        squared: bool = False,
    ) -> np.ndarray:
        """Distances of items ``rows`` to items ``c0..c1-1``: float32 [len(rows), c1 - c0].

        With ``squared`` the distances are squared afterwards (as the re-ranking code squares
        the distances it is given: same rounding, so the same ties).
        """
        rows = np.asarray(rows)
        if out is None:
            out = np.empty((len(rows), c1 - c0), dtype=np.float32)
        if self.x is not None:
            np.matmul(self.x[rows], self.x[c0:c1].T, out=out)
            finish_distance(out, self.sq[rows], self.sq[c0:c1], self.metric)
            if self.local is not None:
                loc = self.local.block(rows, c0, c1)
                loc *= self.local_weight
                out += loc
        else:
            out[...] = self.local.block(rows, c0, c1)
        if squared:
            np.square(out, out=out)
        return out

    def pairs(self, i: np.ndarray, j: np.ndarray, chunk: int = 1 << 16) -> np.ndarray:
        """Distances of the item pairs ``(i[p], j[p])``: float32 [P]."""
        out = np.empty(len(i), dtype=np.float32)
        for a in range(0, len(i), chunk):
            ii, jj = i[a : a + chunk], j[a : a + chunk]
            if self.x is not None:
                dot = np.einsum("ij,ij->i", self.x[ii], self.x[jj])
                if self.metric == "cosine":
                    d = np.float32(1.0) - dot
                else:
                    d = np.maximum(self.sq[ii] + self.sq[jj] - np.float32(2.0) * dot, 0.0)
                    if self.metric == "euclidean":
                        d = np.sqrt(d)
                if self.local is not None:
                    d = d + self.local_weight * self.local.pairs(ii, jj)
            else:
                d = self.local.pairs(ii, jj)
            out[a : a + chunk] = d
        return out
