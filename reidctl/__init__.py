"""reidctl: offline inference and deployment toolkit for person re-identification models.

The Python API: ``from reidctl import Embedder`` (see :mod:`reidctl.embedder` and
docs/python-api.md). It is imported on first use, so ``import reidctl`` loads no numerical
or back-end package.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.2.0"
__all__ = ["Embedder", "__version__"]

if TYPE_CHECKING:
    from reidctl.embedder import Embedder


def __getattr__(name: str) -> Any:
    if name == "Embedder":
        from reidctl.embedder import Embedder

        return Embedder
    raise AttributeError(f"module 'reidctl' has no attribute {name!r}")
