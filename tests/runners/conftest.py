from __future__ import annotations

from pathlib import Path

import pytest

from tests.runners.helpers import export_tiny, make_prep


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tiny")


@pytest.fixture(scope="session")
def tiny_onnx(tiny_dir: Path) -> Path:
    """Dynamic-batch tiny ONNX with a reidctl sidecar."""
    return export_tiny(tiny_dir / "tiny.onnx")


@pytest.fixture(scope="session")
def tiny_static_foreign(tiny_dir: Path) -> Path:
    """Static batch 4, input named ``input.1``, no sidecar: an ONNX exported elsewhere."""
    return export_tiny(
        tiny_dir / "foreign.onnx", static_batch=4, input_name="input.1", sidecar=False
    )


@pytest.fixture(scope="session")
def prep(tiny_dir: Path):
    """(PREP dir, tensors) with 10 random tensors matching the tiny models."""
    return make_prep(tiny_dir / "prep", n=10)
