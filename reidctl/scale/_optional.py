"""Lazy imports of the optional engines, with install hints instead of ImportError."""

from __future__ import annotations

from types import ModuleType

from reidctl.errors import BackendUnavailableError

FAISS_HINT = "pip install 'reidctl[faiss]'  (or: pip install faiss-cpu)"
RAY_HINT = "pip install 'reidctl[ray]'  (or: pip install 'ray[data]')"


def import_faiss() -> ModuleType:
    """The ``faiss`` module, or :class:`BackendUnavailableError` naming the package to install."""
    try:
        import faiss
    except ImportError as e:
        raise BackendUnavailableError(
            f"FAISS is not installed ({e}); install it with: {FAISS_HINT}"
        ) from e
    return faiss


def import_ray() -> ModuleType:
    """The ``ray`` module, or :class:`BackendUnavailableError` naming the package to install."""
    try:
        import ray
    except ImportError as e:
        raise BackendUnavailableError(
            f"Ray is not installed ({e}); --engine ray needs it: {RAY_HINT}"
        ) from e
    return ray
