"""Shared fixtures. Real data lives in ../shared (or $REIDCTL_SAMPLE_DIR), never in the repo."""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent


def shared_dir() -> Path:
    return Path(os.environ.get("REIDCTL_SAMPLE_DIR", ROOT.parent / "shared")).resolve()


# What reidctl cannot work without; every other package (openvino, faiss, ray, h5py,
# tensorrt, acl) is an optional back end that tests may skip with a reason.
HARD_DEPENDENCIES = ("torch", "onnx", "onnxruntime", "numpy", "cv2", "click")


def require(module: str) -> ModuleType:
    """Import a hard dependency for a test. When it is missing the test is skipped with the
    reason, except under ``CI=true``, where the test fails: CI must never pass by skipping."""
    if module not in HARD_DEPENDENCIES:
        raise ValueError(f"{module} is not a hard dependency; skip optional back ends directly")
    try:
        return importlib.import_module(module)
    except ImportError as e:
        msg = f"hard dependency {module} is not importable ({e}); install reidctl's requirements"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg)
        pytest.skip(msg)


def _require(path: Path) -> Path:
    if not path.exists():
        msg = f"{path} is missing (set REIDCTL_SAMPLE_DIR to the shared/ folder)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    return path


@pytest.fixture(scope="session")
def market_mini() -> Path:
    """The 96 real Market-1501 crops (query / bounding_box_test / bounding_box_train)."""
    return _require(shared_dir() / "data" / "market1501-mini")


@pytest.fixture(scope="session")
def osnet_weights() -> Path:
    """The real OSNet x0.25 Market-1501 checkpoint (torchreid key names)."""
    return _require(shared_dir() / "weights" / "osnet_x0_25_market1501.pth")
