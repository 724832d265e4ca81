"""Synthetic Market-1501-shaped features for benchmarks and tests (no images, no model).

Market-1501's test split has 3,368 queries and 15,913 gallery images (junk removed) of 750
identities seen by 6 cameras, 2,793 of the gallery images being distractors (pid 0). The
generator draws an identity centre per pid, a shift per (pid, camera) and per-image noise,
then L2-normalises, so retrieval is neither trivial nor random (rank-1 around 0.8 at the
default ``noise``), like a trained model's features.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MARKET_NUM_QUERY = 3368
MARKET_NUM_GALLERY = 15913
MARKET_NUM_IDS = 750
MARKET_NUM_DISTRACTORS = 2793


@dataclass
class SyntheticSet:
    q_feat: np.ndarray  # [Nq, D] float32, L2-normalised
    g_feat: np.ndarray  # [Ng, D]
    q_pids: np.ndarray
    g_pids: np.ndarray
    q_camids: np.ndarray
    g_camids: np.ndarray


def market_like(
    num_query: int = MARKET_NUM_QUERY,
    num_gallery: int = MARKET_NUM_GALLERY,
    dim: int = 512,
    num_ids: int = MARKET_NUM_IDS,
    num_distractors: int | None = None,
    num_cams: int = 6,
    noise: float = 2.0,
    seed: int = 0,
) -> SyntheticSet:
    """Draw a query and gallery set shaped like Market-1501 (default sizes are Market's)."""
    rng = np.random.default_rng(seed)
    if num_distractors is None:
        num_distractors = round(num_gallery * MARKET_NUM_DISTRACTORS / MARKET_NUM_GALLERY)
    centres = rng.standard_normal((num_ids + 1, dim)).astype(np.float32)
    cam_shift = rng.standard_normal((num_ids + 1, num_cams, dim)).astype(np.float32) * 0.5

    def draw(n: int, pids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        cams = rng.integers(1, num_cams + 1, n)
        x = centres[pids] + cam_shift[pids, cams - 1]
        x += noise * rng.standard_normal((n, dim)).astype(np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        return x.astype(np.float32), cams

    q_pids = np.sort(rng.integers(1, num_ids + 1, num_query))
    g_pids = np.concatenate(
        [
            np.zeros(num_distractors, np.int64),
            rng.integers(1, num_ids + 1, num_gallery - num_distractors),
        ]
    )
    g_pids = np.sort(g_pids)
    q_feat, q_cams = draw(num_query, q_pids)
    # distractors: each its own random direction
    g_feat, g_cams = draw(num_gallery, g_pids)
    dis = g_pids == 0
    g_feat[dis] = rng.standard_normal((int(dis.sum()), dim)).astype(np.float32)
    g_feat[dis] /= np.linalg.norm(g_feat[dis], axis=1, keepdims=True)
    return SyntheticSet(q_feat, g_feat, q_pids, g_pids, q_cams, g_cams)
