"""Calibration sets made from real crops, for the INT8 benchmarks.

:func:`augmented_set` turns the crops of a Market-1501-style folder into ``n`` tensors:
the first pass over the crops is the crops themselves, every further tensor is a crop with
a random horizontal flip, a random crop of 80-100 % of each side resized back, and a random
brightness (x 0.8-1.2) and contrast (x 0.8-1.2) jitter, seeded per tensor (so re-runs give
the same bytes). Tensors go through the same :class:`ImageTransform` as ``reidctl
preprocess`` and into a normal preprocessed set (``PrepSet``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from reidctl.artifacts import ManifestEntry, finalize_prep_set, write_tensor
from reidctl.specs import PreprocessSpec


def _jitter(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    import cv2

    h, w = img.shape[:2]
    ch, cw = int(h * rng.uniform(0.8, 1.0)), int(w * rng.uniform(0.8, 1.0))
    y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    out = cv2.resize(img[y : y + ch, x : x + cw], (w, h), interpolation=cv2.INTER_LINEAR)
    if rng.random() < 0.5:
        out = out[:, ::-1]
    f = out.astype(np.float32)
    mean = f.mean()
    f = (f - mean) * rng.uniform(0.8, 1.2) + mean * rng.uniform(0.8, 1.2)
    return np.clip(np.rint(f), 0, 255).astype(np.uint8)


def augmented_set(
    crops_dir: Path, out: Path, spec: PreprocessSpec, n: int, *, seed: int = 0
) -> Path:
    """Write a preprocessed set of ``n`` float32 tensors made from the ``*.jpg`` crops of
    ``crops_dir`` to ``out`` (kept when its ``meta.json`` already holds ``n`` tensors)."""
    from reidctl.artifacts import PrepSet
    from reidctl.preprocess.transform import ImageTransform, TensorSettings, decode_image

    if (out / "meta.json").is_file():
        try:
            if len(PrepSet.open(out)) == n:
                return out
        except Exception:
            pass
    crops = sorted(crops_dir.glob("*.jpg"))
    if not crops:
        raise FileNotFoundError(f"no *.jpg crops in {crops_dir}")
    out.mkdir(parents=True, exist_ok=True)
    settings = TensorSettings(spec, "float32")
    transform = ImageTransform(settings)
    images = [decode_image(p.read_bytes(), p.name) for p in crops]
    entries = []
    for k in range(n):
        src = k % len(crops)
        img = images[src]
        if k >= len(crops):
            img = _jitter(img, np.random.default_rng([seed, k]))
        e = ManifestEntry(k, f"train_{k:05d}.bin", f"{crops[src].name}#{k}", 1, 1, "train")
        write_tensor(out, e, transform(np.ascontiguousarray(img)).data)
        entries.append(e)
    meta = {
        "layout": "augmented",
        "root": str(crops_dir),
        "splits": ["train"],
        "preprocess": spec.to_dict(),
        "flip": False,
        "dtype": "float32",
        "byte_order": "little",
        "shape": list(settings.shape),
        "num_tensors": n,
        "counts": {"train": n},
        "augmentation": {"crops": len(crops), "seed": seed},
    }
    info = "".join(f"{e.index} {e.bin} {spec.width} {spec.height}\n" for e in entries)
    finalize_prep_set(out, entries, meta, info)
    return out
