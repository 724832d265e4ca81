"""Tiny models and preprocessed sets built inside the tests (docs/formats.md §1, §2)."""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path

import numpy as np

from reidctl.artifacts import (
    ManifestEntry,
    tool_info,
    write_manifest,
    write_sidecar,
)
from reidctl.io import sha256_file, write_json_atomic
from reidctl.specs import PreprocessSpec

H, W = 16, 8


def tiny_module():
    """Conv -> pool -> two heads: ``feature`` [B, 8] and ``local`` [B, 2, 4]."""
    import torch
    from torch import nn

    class Tiny(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, padding=1)
            self.fc = nn.Linear(8, 8)

        def forward(self, x):
            y = torch.relu(self.conv(x)).mean(dim=(2, 3))
            return self.fc(y), y.reshape(-1, 2, 4)

    torch.manual_seed(0)
    return Tiny().eval()


def export_tiny(
    path: Path,
    *,
    static_batch: int | None = None,
    input_name: str = "image",
    sidecar: bool = True,
) -> Path:
    """Export the tiny model to ``path`` (dynamic batch unless ``static_batch``)."""
    import torch

    batch = static_batch or 2
    names = ["feature", "local"]
    dynamic = None if static_batch else {n: {0: "batch"} for n in [input_name, *names]}
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(
            tiny_module(),
            (torch.randn(batch, 3, H, W),),
            str(path),
            input_names=[input_name],
            output_names=names,
            dynamic_axes=dynamic,
            opset_version=17,
            dynamo=False,
        )
    if sidecar:
        b = static_batch or "batch"
        write_sidecar(
            path,
            {
                "model": "tiny",
                "weights": None,
                "preprocess": PreprocessSpec(height=H, width=W).to_dict(),
                "inputs": [{"name": input_name, "shape": [b, 3, H, W], "dtype": "float32"}],
                "outputs": [
                    {"name": "feature", "shape": [b, 8], "dtype": "float32"},
                    {"name": "local", "shape": [b, 2, 4], "dtype": "float32"},
                ],
                "feature": "feature",
                "l2_normalize": True,
                "opset": 17,
                "static_batch": static_batch,
                "model_file": path.name,
                "model_sha256": sha256_file(path),
            },
        )
    return path


def export_camera_model(
    path: Path, *, num_cameras: int = 6, sidecar: bool = False, first_camera: int = 1
) -> Path:
    """image [B, 3, H, W] float32 + camera [B] int64 -> feature [B, 8] (a camera embedding
    table of ``num_cameras`` rows added to pooled conv features). With ``sidecar`` also the
    sidecar of a camera-aware export (``camera`` block, as ``reidctl export`` writes it)."""
    import torch
    from torch import nn

    class Cam(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.conv = nn.Conv2d(3, 8, 3, padding=1)
            self.cam = nn.Embedding(num_cameras, 8)

        def forward(self, image, camera):
            return self.conv(image).mean(dim=(2, 3)) + self.cam(camera)

    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(
            Cam().eval(),
            (torch.randn(2, 3, H, W), torch.zeros(2, dtype=torch.int64)),
            str(path),
            input_names=["image", "camera"],
            output_names=["feature"],
            dynamic_axes={"image": {0: "batch"}, "camera": {0: "batch"}, "feature": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
    if sidecar:
        write_sidecar(
            path,
            {
                "model": "tiny_camera",
                "weights": None,
                "preprocess": PreprocessSpec(height=H, width=W).to_dict(),
                "inputs": [
                    {"name": "image", "shape": ["batch", 3, H, W], "dtype": "float32"},
                    {"name": "camera", "shape": ["batch"], "dtype": "int64"},
                ],
                "outputs": [{"name": "feature", "shape": ["batch", 8], "dtype": "float32"}],
                "feature": "feature",
                "l2_normalize": True,
                "camera": {
                    "num_cameras": num_cameras,
                    "sie_coefficient": 1.0,
                    "input": "camera",
                    "index": "camid - first_camera",
                    "first_camera": first_camera,
                },
                "model_file": path.name,
                "model_sha256": sha256_file(path),
            },
        )
    return path


def make_prep(
    out: Path,
    n: int = 10,
    shape: tuple[int, ...] = (3, H, W),
    dtype: str = "float32",
    seed: int = 0,
    camids: list[int] | None = None,
    meta: dict | None = None,
) -> tuple[Path, np.ndarray]:
    """A preprocessed set of ``n`` random tensors; returns the directory and the tensors.
    ``camids``: the manifest's camera per entry (default 1); ``meta``: extra ``meta.json``
    fields (e.g. ``first_camera``)."""
    rng = np.random.default_rng(seed)
    data = rng.standard_normal((n, *shape)).astype(dtype)
    out.mkdir(parents=True, exist_ok=True)
    entries = []
    for i in range(n):
        split = "query" if i < n // 2 else "gallery"
        stem = f"{split}_{i:04d}_c1s1_000000_00"
        (out / f"{stem}.bin").write_bytes(data[i].astype(f"<{data.dtype.str[1:]}").tobytes())
        cam = 1 if camids is None else camids[i]
        entries.append(
            ManifestEntry(i, f"{stem}.bin", f"{split}/{stem}.jpg", i % 3 + 1, cam, split)
        )
    write_manifest(out / "manifest.jsonl", entries)
    write_json_atomic(
        out / "meta.json",
        {
            "format": "reidctl.prep/1",
            "layout": "synthetic",
            "shape": list(shape),
            "dtype": dtype,
            "preprocess": PreprocessSpec(height=shape[1], width=shape[2]).to_dict(),
            "splits": ["query", "gallery"],
            "flip": False,
            "counts": {"query": n // 2, "gallery": n - n // 2},
            "tool": tool_info(),
            **(meta or {}),
        },
    )
    return out, data


def ort_reference(model: Path, data: np.ndarray) -> list[np.ndarray]:
    """Outputs of a bare onnxruntime session over ``data`` in one call."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: data})
