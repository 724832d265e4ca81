"""Builders for tiny result directories, preprocessed sets and vendor dumps (in tmp_path)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from reidctl.artifacts import ManifestEntry, write_manifest
from reidctl.io import write_json_atomic


def make_entries(pids_q, cams_q, pids_g, cams_g) -> list[ManifestEntry]:
    entries = []
    for split, pids, cams in (("query", pids_q, cams_q), ("gallery", pids_g, cams_g)):
        for k, (p, c) in enumerate(zip(pids, cams, strict=True)):
            stem = f"{split}_{p:04d}_c{c}s1_{k:06d}_00"
            folder = "query" if split == "query" else "bounding_box_test"
            src = f"{folder}/{stem[len(split) + 1 :]}.png"
            entries.append(ManifestEntry(len(entries), f"{stem}.bin", src, int(p), int(c), split))
    return entries


def write_prep(prep: Path, entries: list[ManifestEntry], root: Path | None = None) -> Path:
    prep.mkdir(parents=True, exist_ok=True)
    write_manifest(prep / "manifest.jsonl", entries)
    write_json_atomic(
        prep / "meta.json",
        {"format": "reidctl.prep/1", "root": str(root) if root else None, "shape": [3, 256, 128]},
    )
    return prep


def write_results(
    out: Path,
    entries: list[ManifestEntry],
    outputs: dict[str, np.ndarray],
    feature: str = "feature",
    l2_normalize: bool = True,
    prep_dir: Path | None = None,
    complete: bool = True,
) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    model = {
        "format": "reidctl.model/1",
        "model": "test",
        "preprocess": {
            "height": 256,
            "width": 128,
            "mean": [0.485, 0.456, 0.406],
            "std": [0.229, 0.224, 0.225],
        },
        "inputs": [{"name": "image", "shape": ["batch", 3, 256, 128], "dtype": "float32"}],
        "outputs": [
            {"name": n, "shape": ["batch", *a.shape[1:]], "dtype": "float32"}
            for n, a in outputs.items()
        ],
        "feature": feature,
        "l2_normalize": l2_normalize,
    }
    write_json_atomic(out / "model.json", model)
    write_manifest(out / "manifest.jsonl", entries)
    (out / "features").mkdir(exist_ok=True)
    for n, a in outputs.items():
        np.save(out / "features" / f"{n}.npy", a)
    if complete:
        write_json_atomic(
            out / "run.json",
            {
                "format": "reidctl.results/1",
                "backend": "ort",
                "prep_dir": str(prep_dir) if prep_dir else None,
                "outputs": list(outputs),
            },
        )
    return out


def clustered(pids, dim=16, noise=0.6, seed=0) -> np.ndarray:
    """Features near a per-identity centre (distractors and junk: random directions)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((int(max(pids)) + 2, dim))
    x = centres[np.maximum(pids, 0)] + noise * rng.standard_normal((len(pids), dim))
    x[np.asarray(pids) <= 0] = rng.standard_normal((int((np.asarray(pids) <= 0).sum()), dim))
    return x.astype(np.float32)


@pytest.fixture(scope="module")
def small_set():
    """20 identities x 3 cameras: 40 queries, 100 gallery items incl. distractors and junk."""
    rng = np.random.default_rng(1)
    pids_q = np.repeat(np.arange(1, 21), 2)
    cams_q = np.tile([1, 2], 20)
    pids_g = np.concatenate([np.repeat(np.arange(1, 21), 4), np.zeros(12, int), -np.ones(8, int)])
    cams_g = rng.integers(1, 4, len(pids_g))
    feats = clustered(np.concatenate([pids_q, pids_g]), noise=1.1, seed=2)
    local = np.random.default_rng(3).standard_normal((len(feats), 4, 8)).astype(np.float32)
    local += feats[:, None, :8]
    return {
        "entries": make_entries(pids_q, cams_q, pids_g, cams_g),
        "feature": feats,
        "local_feat": local,
        "pids_q": pids_q,
        "cams_q": cams_q,
        "pids_g": pids_g,
        "cams_g": cams_g,
    }
