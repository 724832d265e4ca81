"""A preprocessed set of seeded random tensors, for measurements that need none of the
images' content (throughput, scaling): same files as ``reidctl preprocess`` writes
(docs/formats.md section 2)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from reidctl.artifacts import ManifestEntry, finalize_prep_set, write_tensor
from reidctl.specs import PreprocessSpec


def write_random_prep(
    out: str | Path, n: int, height: int = 256, width: int = 128, seed: int = 0
) -> Path:
    """``n`` float32 tensors [3, height, width] drawn from one seeded normal stream, the
    first quarter the query split, the rest the gallery (50 identities, 6 cameras), with
    ``prep.info``, ``manifest.jsonl`` and ``meta.json``. Returns ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    entries = []
    for i in range(n):
        split = "query" if i < n // 4 else "gallery"
        name = f"{split}_{i:06d}.bin"
        entry = ManifestEntry(i, name, f"{split}/{i:06d}.jpg", 1 + i % 50, 1 + i % 6, split)
        write_tensor(out, entry, rng.standard_normal((3, height, width), dtype=np.float32).data)
        entries.append(entry)
    info = "".join(f"{e.index} {out / e.bin} {width} {height}\n" for e in entries)
    finalize_prep_set(
        out,
        entries,
        {
            "layout": "synthetic",
            "first_camera": 1,
            "root": str(out),
            "splits": ["query", "gallery"],
            "preprocess": PreprocessSpec(height=height, width=width).to_dict(),
            "flip": False,
            "dtype": "float32",
            "shape": [3, height, width],
            "num_tensors": n,
            "counts": {"query": n // 4, "gallery": n - n // 4},
        },
        info,
    )
    return out
