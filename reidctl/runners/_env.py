"""Cheap environment probes for ``availability()``: no back-end package is imported."""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import shutil
from pathlib import Path
from types import ModuleType

from reidctl.errors import BackendUnavailableError


def has_module(name: str) -> bool:
    """Whether ``import name`` would find a module (without importing it)."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def has_distribution(name: str) -> bool:
    try:
        importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def has_nvidia_gpu() -> bool:
    """An NVIDIA driver is loaded (the kernel module reports a version) or nvidia-smi exists."""
    return Path("/proc/driver/nvidia/version").exists() or shutil.which("nvidia-smi") is not None


def has_ascend_npu() -> bool:
    """An Ascend driver is installed (``/dev/davinci*`` device nodes or npu-smi)."""
    return any(Path("/dev").glob("davinci[0-9]*")) or shutil.which("npu-smi") is not None


def import_backend(module: str, backend: str, hint: str) -> ModuleType:
    """Import ``module`` or raise :class:`BackendUnavailableError` with the install hint."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise BackendUnavailableError(
            f"back end {backend!r} needs the {module!r} module, which cannot be imported ({e}); "
            f"install: {hint}"
        ) from e
