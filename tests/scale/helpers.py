"""Tiny models and result directories (docs/formats.md section 3) built inside tests."""

from __future__ import annotations

import contextlib
import io
import json
import warnings
from pathlib import Path

import numpy as np

from reidctl.artifacts import ManifestEntry, write_manifest
from reidctl.io import write_json_atomic
from reidctl.specs import PreprocessSpec


def clustered(n: int, dim: int, n_clusters: int, seed: int, spread: float = 0.3) -> np.ndarray:
    """``n`` points around ``n_clusters`` random unit centres (float32, not normalised)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_clusters, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    labels = rng.integers(0, n_clusters, n)
    noise = rng.standard_normal((n, dim)).astype(np.float32) * (spread / np.sqrt(dim))
    return (centres[labels] + noise).astype(np.float32)


def make_results(
    root: Path,
    n_query: int = 12,
    n_gallery: int = 40,
    dim: int = 16,
    seed: int = 0,
    l2_normalize: bool = True,
    feature: str = "feature",
    extra_train: int = 3,
) -> tuple[Path, np.ndarray]:
    """A complete result directory; returns it and the raw ``[N, dim]`` feature array.

    Rows are query, then gallery, then train (as preprocess orders splits); pids repeat
    every 5 rows and camids alternate 1..3, so every query has gallery matches.
    """
    root.mkdir(parents=True, exist_ok=True)
    splits = ["query"] * n_query + ["gallery"] * n_gallery + ["train"] * extra_train
    entries = []
    for i, split in enumerate(splits):
        stem = f"{split}_{i:04d}"
        entries.append(
            ManifestEntry(
                index=i,
                bin=f"{stem}.bin",
                source=f"{split}/{stem}.jpg",
                pid=1 + i % 5,
                camid=1 + i % 3,
                split=split,
            )
        )
    feats = clustered(len(entries), dim, 5, seed) * 3.0
    (root / "features").mkdir(exist_ok=True)
    np.save(root / "features" / f"{feature}.npy", feats)
    write_manifest(root / "manifest.jsonl", entries)
    write_json_atomic(
        root / "model.json",
        {
            "format": "reidctl.model/1",
            "model": "tiny",
            "preprocess": PreprocessSpec().to_dict(),
            "inputs": [{"name": "image", "shape": ["batch", 3, 256, 128], "dtype": "float32"}],
            "feature": feature,
            "l2_normalize": l2_normalize,
            "outputs": [{"name": feature, "shape": ["batch", dim], "dtype": "float32"}],
            "model_sha256": "0" * 64,
        },
    )
    (root / "run.json").write_text(
        json.dumps({"format": "reidctl.results/1", "backend": "test", "outputs": [feature]})
    )
    return root, feats


def export_tiny_onnx(path: Path) -> Path:
    """A small conv net on 256x128 inputs, ``image`` -> ``feature`` [B, 16], seeded."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 8, stride=8),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 16),
    ).eval()
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net,
            (torch.randn(2, 3, 256, 128),),
            str(path),
            input_names=["image"],
            output_names=["feature"],
            dynamic_axes={"image": {0: "batch"}, "feature": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
    return path
