"""AlignedReID's local distance (Zhang et al. 2017; huanghoujing's re-implementation).

Each image has S horizontal stripe features [S, D]. For a pair of images the S x S stripe
Euclidean distances ``d`` are squashed as ``(e^d - 1) / (e^d + 1)`` (= ``tanh(d / 2)``, the
form used here because it cannot overflow), and the local distance is the length of the
shortest monotone path from the top-left to the bottom-right cell of that S x S matrix
(moves right or down, summing the cells visited). Computed in float32, in row chunks, so the
memory stays bounded at any gallery size.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
from tqdm import tqdm

from reidctl.errors import ShapeMismatchError
from reidctl.progress import bar_disable


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
        rows_per_chunk: int = 128,
        tile: int = 1024,
        progress: bool = False,
        threads: int = 2,
    ) -> np.ndarray:
        """Local distances of items ``rows`` to items ``c0..c1-1``: float32 [len(rows), c1-c0].

        Works on ``rows_per_chunk`` x ``tile`` items at a time (a few MB, so every pass stays
        in cache).
        """
        rows = np.asarray(rows)
        m = c1 - c0
        out = np.empty((len(rows), m), dtype=np.float32)
        s = self.s
        # d^2 / 4 = left . right with left = [x, |x|^2, 1], right = [-x / 2, 1 / 4, |y|^2 / 4]:
        # the matrix multiply yields the squared distance (halved under the root) directly
        left = np.concatenate(
            [self.x[rows], self.sq[rows][..., None], np.ones((len(rows), s, 1), np.float32)],
            axis=2,
        )
        g = self.x[c0:c1]
        right = np.concatenate(
            [-0.5 * g, np.full((m, s, 1), 0.25, np.float32), 0.25 * self.sq[c0:c1][..., None]],
            axis=2,
        ).astype(np.float32)
        tiles = [
            np.ascontiguousarray(right[t : t + tile].transpose(1, 0, 2)).reshape(-1, self.d + 2)
            for t in range(0, m, tile)
        ]  # stripe-major: row j * width + k is stripe j of item t + k

        def work(a: int) -> None:
            qa = left[a : a + rows_per_chunk]
            b = len(qa)
            # buffers reused across tiles: fresh multi-MB arrays would cost page faults
            bufs = (
                np.empty((b * s, s * min(tile, m)), dtype=np.float32),
                np.empty((s, b, min(tile, m)), dtype=np.float32),
                np.empty((s, b, min(tile, m)), dtype=np.float32),
            )
            for n, t in enumerate(range(0, m, tile)):
                width = min(tile, m - t)
                out[a : a + b, t : t + width] = self._dp(qa, tiles[n], width, bufs)

        chunks = range(0, len(rows), rows_per_chunk)
        # numpy releases the GIL: a second thread runs the element-wise passes of one chunk
        # while the matrix multiply of another uses the BLAS threads
        with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
            done = pool.map(work, chunks)
            for _ in tqdm(
                done, total=len(chunks), desc="local distance", disable=bar_disable(progress)
            ):
                pass
        return out

    def _dp(self, qa: np.ndarray, g: np.ndarray, m: int, bufs: tuple) -> np.ndarray:
        b, s = len(qa), self.s
        # every query stripe against every gallery stripe in one multiply: [b, s, s, m]
        buf = bufs[0][:, : s * m]
        if m * s != bufs[0].shape[1]:
            buf = np.empty((b * s, s * m), dtype=np.float32)
        np.matmul(qa.reshape(b * s, -1), g.T, out=buf)
        np.maximum(buf, 0.0, out=buf)
        np.sqrt(buf, out=buf)
        np.tanh(buf, out=buf)
        v = buf.reshape(b, s, s, m)
        prev, cur = bufs[1][:, :, :m], bufs[2][:, :, :m]
        for i in range(s):
            for j in range(s):
                cell = v[:, i, j, :]
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
    progress: bool = False,
) -> np.ndarray:
    """AlignedReID local distance matrix [Nq, Ng] (float32, values in [0, 2 * S - 1]).

    ``q_local`` [Nq, S, D] and ``g_local`` [Ng, S, D] are the stripe features (normalise
    them along D first, as AlignedReID does, if the model's features are normalised).
    Computed in cache-sized tiles; extra memory is one stripe-major copy of the gallery.
    """
    q = _check_local(q_local, "query local features")
    g = _check_local(g_local, "gallery local features")
    if q.shape[1:] != g.shape[1:]:
        raise ShapeMismatchError(
            f"query local features {q.shape[1:]} and gallery {g.shape[1:]} differ in shape"
        )
    loc = LocalDistance(np.concatenate([q, g]))
    nq, ng = len(q), len(g)
    return loc.block(np.arange(nq), nq, nq + ng, progress=progress)
