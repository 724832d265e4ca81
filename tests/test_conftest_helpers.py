"""The test helpers themselves: a missing hard dependency skips locally and fails in CI."""

from __future__ import annotations

import importlib

import pytest

from tests import conftest


def _missing(name: str):
    raise ImportError(f"No module named {name!r}")


@pytest.mark.parametrize(
    "ci,outcome", [("true", pytest.fail.Exception), ("", pytest.skip.Exception)]
)
def test_require_fails_under_ci_and_skips_otherwise(monkeypatch, ci, outcome):
    monkeypatch.setenv("CI", ci)
    monkeypatch.setattr(importlib, "import_module", _missing)
    with pytest.raises(outcome, match="hard dependency onnxruntime is not importable"):
        conftest.require("onnxruntime")


def test_require_is_only_for_hard_dependencies():
    assert conftest.require("numpy").__name__ == "numpy"
    with pytest.raises(ValueError, match="not a hard dependency"):
        conftest.require("openvino")
