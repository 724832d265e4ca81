"""AlignedReID's local distance (Zhang et al. 2017; huanghoujing's re-implementation).

Each image has S horizontal stripe features [S, D]. For a pair of images the S x S stripe
Euclidean distances ``d`` are squashed as ``(e^d - 1) / (e^d + 1)`` (= ``tanh(d / 2)``, the
form used here because it cannot overflow), and the local distance is the length of the
shortest monotone path from the top-left to the bottom-right cell of that S x S matrix
(moves right or down, summing the cells visited). Computed in float32, in row chunks, so the
memory stays bounded at any gallery size.
"""

from __future__ import annotations

import numpy as np
from tqdm import tqdm

from reidctl.errors import ShapeMismatchError


def _check_local(x: np.ndarray, what: str) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 3:
        raise ShapeMismatchError(
            f"{what} must be [N, stripes, D] (e.g. AlignedReID's local_feat [N, 8, 128]), "
            f"got shape {x.shape}"
        )
    return x


def _squash_inplace(sq: np.ndarray) -> None:
    """Squared stripe distances -> (e^d - 1) / (e^d + 1), in place."""
    np.maximum(sq, 0.0, out=sq)
    np.sqrt(sq, out=sq)
    sq *= np.float32(0.5)
    np.tanh(sq, out=sq)


class LocalDistance:
    """Local distances among the rows of one item set ``local_feat`` [N, S, D]."""

    def __init__(self, local_feat: np.ndarray) -> None:
        self.x = _check_local(local_feat, "local features")
        self.n, self.s, self.d = self.x.shape
        self.sq = np.einsum("nsd,nsd->ns", self.x, self.x)

    def block(
        self,
        rows: np.ndarray,
        c0: int,
        c1: int,
        chunk_cells: int = 1 << 21,
        progress: bool = False,
    ) -> np.ndarray:
        """Local distances of items ``rows`` to items ``c0..c1-1``: float32 [len(rows), c1-c0].

        ``chunk_cells`` bounds the rows x columns handled at once (memory about
        ``3 * S * chunk_cells * 4`` bytes).
        """
        rows = np.asarray(rows)
        m = c1 - c0
        out = np.empty((len(rows), m), dtype=np.float32)
        s = self.s
        # stripe-major gallery layout makes every [B, M] slice below contiguous
        g = np.ascontiguousarray(self.x[c0:c1].transpose(1, 0, 2)).reshape(s * m, self.d)
        gsq = np.ascontiguousarray(self.sq[c0:c1].T)  # [S, M]
        step = max(1, chunk_cells // max(m, 1))
        chunks = range(0, len(rows), step)
        for a in tqdm(chunks, desc="local distance", unit="chunk", disable=not progress):
            r = rows[a : a + step]
            out[a : a + len(r)] = self._dp(self.x[r], self.sq[r], g, gsq, m)
        return out

    def _dp(self, qa, qsq, g, gsq, m):
        b, s = len(qa), self.s
        buf = np.empty((b, s * m), dtype=np.float32)
        prev = np.empty((s, b, m), dtype=np.float32)
        cur = np.empty((s, b, m), dtype=np.float32)
        for i in range(s):
            np.matmul(qa[:, i, :], g.T, out=buf)
            v = buf.reshape(b, s, m)
            v *= np.float32(-2.0)
            v += qsq[:, i, None, None]
            v += gsq[None, :, :]
            _squash_inplace(v)
            for j in range(s):
                cell = v[:, j, :]
                if i == 0 and j == 0:
                    cur[0] = cell
                elif i == 0:
                    np.add(cur[j - 1], cell, out=cur[j])
                elif j == 0:
                    np.add(prev[0], cell, out=cur[0])
                else:
                    np.minimum(prev[j], cur[j - 1], out=cur[j])
                    cur[j] += cell
            prev, cur = cur, prev
        return prev[s - 1].copy()

    def pairs(self, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        """Local distances of the item pairs ``(i[p], j[p])``: float32 [P]."""
        a, b = self.x[i], self.x[j]
        sq = np.einsum("psd,ptd->pst", a, b)
        sq *= np.float32(-2.0)
        sq += self.sq[i][:, :, None]
        sq += self.sq[j][:, None, :]
        _squash_inplace(sq)
        return _shortest_path(sq)


def _shortest_path(dist: np.ndarray) -> np.ndarray:
    """Shortest top-left -> bottom-right path through ``dist`` [P, m, n] (right/down moves)."""
    _, m, n = dist.shape
    acc = np.empty_like(dist)
    acc[:, 0, 0] = dist[:, 0, 0]
    for j in range(1, n):
        acc[:, 0, j] = acc[:, 0, j - 1] + dist[:, 0, j]
    for i in range(1, m):
        acc[:, i, 0] = acc[:, i - 1, 0] + dist[:, i, 0]
        for j in range(1, n):
            acc[:, i, j] = np.minimum(acc[:, i - 1, j], acc[:, i, j - 1]) + dist[:, i, j]
    return acc[:, m - 1, n - 1].copy()


def local_distance(
    q_local: np.ndarray,
    g_local: np.ndarray,
    chunk_cells: int = 1 << 21,
    progress: bool = False,
) -> np.ndarray:
    """AlignedReID local distance matrix [Nq, Ng] (float32, values in [0, 2 * S - 1]).

    ``q_local`` [Nq, S, D] and ``g_local`` [Ng, S, D] are the stripe features (normalise
    them along D first, as AlignedReID does, if the model's features are normalised).
    ``chunk_cells`` bounds the query x gallery cells computed at once; peak extra memory is
    about ``3 * S * chunk_cells * 4`` bytes (200 MB for 8 stripes at the default).
    """
    q = _check_local(q_local, "query local features")
    g = _check_local(g_local, "gallery local features")
    if q.shape[1:] != g.shape[1:]:
        raise ShapeMismatchError(
            f"query local features {q.shape[1:]} and gallery {g.shape[1:]} differ in shape"
        )
    loc = LocalDistance(np.concatenate([q, g]))
    nq, ng = len(q), len(g)
    return loc.block(np.arange(nq), nq, nq + ng, chunk_cells=chunk_cells, progress=progress)
