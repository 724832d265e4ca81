"""Helpers shared by the transformer-family parity tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


def rel_diff(ref, got) -> float:
    """max |ref - got| / max |ref| (tensors or arrays)."""
    ref, got = (t.detach().numpy() if isinstance(t, torch.Tensor) else t for t in (ref, got))
    ref, got = np.asarray(ref, np.float64), np.asarray(got, np.float64)
    return float(np.max(np.abs(ref - got)) / np.max(np.abs(ref)))


def save_state_dict(tmp_path: Path, sd: dict[str, torch.Tensor], name: str) -> Path:
    """``torch.save(model.state_dict(), ...)``, as the reference projects' trainers save."""
    path = tmp_path / name
    torch.save(sd, path)
    return path
