"""Human-facing outputs of an evaluation: the terminal table, the CMC plot, the retrieval grid.

The plot and the grid are PNG files written atomically; the grid shows each query beside
its top-10 gallery images (ignored items skipped, as the protocol ranks them), correct
matches framed green and wrong ones red.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from reidctl.errors import FormatError, InputError
from reidctl.evaluate.results import EvalData, Evaluation, Metrics
from reidctl.io import atomic_path, write_bytes_atomic

THUMB_W, THUMB_H, BORDER, GAP = 64, 128, 4, 12
GREEN, RED, GREY = (40, 170, 40), (40, 40, 220), (150, 150, 150)  # BGR


def format_table(m: Metrics) -> str:
    """The metrics as a small fixed-width table (percentages) and a settings line."""
    head = ["rank-1", "rank-5", "rank-10", "mAP", "mINP", "valid queries", "gallery"]
    vals = [
        *(f"{100 * v:.2f}%" for v in (m.rank1, m.rank5, m.rank10, m.mAP, m.mINP)),
        f"{m.num_valid_query} / {m.num_query}",
        str(m.num_gallery),
    ]
    widths = [max(len(h), len(v)) for h, v in zip(head, vals, strict=True)]
    line1 = "  ".join(h.rjust(w) for h, w in zip(head, widths, strict=True))
    line2 = "  ".join(v.rjust(w) for v, w in zip(vals, widths, strict=True))
    st = m.settings
    parts = [
        f"feature {st.get('feature')!r}",
        "L2-normalised" if st.get("normalize") else "not normalised",
        f"{st.get('distance')} distance",
        f"{st.get('ap')} AP",
        f"protocol {st.get('protocol')}",
    ]
    rr = st.get("rerank")
    if rr:
        parts.append(f"re-ranking k1={rr['k1']} k2={rr['k2']} lambda={rr['lambda']}")
    loc = st.get("local")
    if loc:
        w = loc.get("weight")
        how = f" x{w} + global" if w is not None else " only"
        parts.append(f"local {loc.get('feature')!r}{how}")
    if st.get("centroids"):
        parts.append(f"centroids ({st['centroids']})")
    return f"{line1}\n{line2}\n" + ", ".join(parts)


def plot_cmc(m: Metrics, path: str | os.PathLike[str]) -> Path:
    """Write the CMC curve (rank 1..max_rank) as a PNG to ``path``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ranks = np.arange(1, len(m.cmc) + 1)
    ax.plot(ranks, 100 * np.asarray(m.cmc), marker="o", markersize=3)
    ax.set_xlabel("rank")
    ax.set_ylabel("matching rate (%)")
    ax.set_title(f"CMC: rank-1 {100 * m.rank1:.2f}%, mAP {100 * m.mAP:.2f}%")
    ax.set_xlim(1, max(2, len(m.cmc)))
    ax.set_ylim(0, 100.5)
    ax.grid(True, alpha=0.3)
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", metadata={"Software": None})
    return path


def _thumb(path: Path, color: tuple[int, int, int]) -> np.ndarray:
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise FormatError(
            f"cannot read image {path}; pass --images ROOT pointing at the dataset root"
        )
    img = cv2.resize(img, (THUMB_W, THUMB_H), interpolation=cv2.INTER_AREA)
    return cv2.copyMakeBorder(img, BORDER, BORDER, BORDER, BORDER, cv2.BORDER_CONSTANT, value=color)


def visualize(
    ev: Evaluation,
    data: EvalData,
    q_rows: np.ndarray,
    g_rows: np.ndarray,
    num_queries: int,
    path: str | os.PathLike[str],
    images_root: str | os.PathLike[str] | None = None,
    top: int = 10,
) -> Path:
    """Write a grid of the first ``num_queries`` valid queries and their top ``top`` matches.

    ``q_rows`` / ``g_rows``: manifest indices of the query and gallery rows of ``ev``.
    Images are ``images_root / source`` (default: the dataset root recorded by preprocess).
    """
    import cv2

    if ev.distmat is None or ev.g_members is not None:
        raise InputError("--visualize is not available with --centroids (no single images)")
    root = Path(images_root) if images_root else data.image_root
    if root is None:
        raise InputError(
            "--visualize cannot find the images: the preprocessed set's meta.json is not "
            "reachable; pass --images ROOT (the dataset root)"
        )
    valid = np.flatnonzero(ev.result.valid)[:num_queries]
    if len(valid) == 0:
        raise InputError("no valid query to visualise")
    q_pids = np.array([data.entries[i].pid for i in q_rows])
    q_cams = np.array([data.entries[i].camid for i in q_rows])
    rows = []
    for q in valid:
        d = ev.distmat[q]
        ignored = (ev.g_pids == -1) | ((ev.g_pids == q_pids[q]) & (ev.g_camids == q_cams[q]))
        cand = np.flatnonzero(~ignored)
        order = cand[np.argsort(d[cand], kind="stable")[:top]]
        tiles = [_thumb(root / data.entries[q_rows[q]].source, GREY)]
        tiles.append(np.full((THUMB_H + 2 * BORDER, GAP, 3), 255, np.uint8))
        for j in order:
            ok = ev.g_pids[j] == q_pids[q]
            tiles.append(_thumb(root / data.entries[g_rows[j]].source, GREEN if ok else RED))
        while len(tiles) < top + 2:
            tiles.append(np.full((THUMB_H + 2 * BORDER, THUMB_W + 2 * BORDER, 3), 255, np.uint8))
        rows.append(np.concatenate(tiles, axis=1))
        rows.append(np.full((GAP // 2, rows[-1].shape[1], 3), 255, np.uint8))
    grid = np.concatenate(rows[:-1], axis=0)
    ok, buf = cv2.imencode(".png", grid)
    if not ok:
        raise FormatError(f"could not encode the retrieval grid for {path}")
    path = Path(path)
    write_bytes_atomic(path, buf.tobytes())
    return path
