"""Runners: one model on one back end, behind the contract of :mod:`reidctl.runners.base`.

A registry keyed by name (``ort``, ``ort-cuda``, ``openvino``, ``trt``, ``acl``,
``ais_bench``, ``torch``) and by model file suffix (``.onnx`` -> ``ort``, ``.engine``/``.plan``
-> ``trt``, ``.om`` -> ``acl``, ``.xml`` -> ``openvino``, ``.pth`` -> ``torch``). The runner
modules import only numpy; their back-end packages load inside ``activate()``, so importing
this package never needs onnxruntime, OpenVINO, TensorRT, pyACL or CUDA.

Adding a back end: write ``reidctl/runners/<name>.py`` with a :class:`Runner` subclass and
list it in ``_BUILTIN`` below (or call :func:`register_runner` from your own code).
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path

from reidctl.errors import InputError, UnknownNameError
from reidctl.runners.base import Runner

# modules holding the built-in runners, imported on first registry use
_BUILTIN = (
    "reidctl.runners.ort",
    "reidctl.runners.ov",
    "reidctl.runners.trt",
    "reidctl.runners.acl",
    "reidctl.runners.ais_bench",
    "reidctl.runners.pytorch",
)

_BY_NAME: dict[str, type[Runner]] = {}
_BY_SUFFIX: dict[str, type[Runner]] = {}
_loaded = False


def register_runner(cls: type[Runner]) -> type[Runner]:
    """Register ``cls`` under ``cls.name`` and its ``suffixes`` (first registration of a
    suffix wins, so ``.onnx`` stays with ``ort``). Usable as a class decorator."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no registry name")
    if cls.name in _BY_NAME and _BY_NAME[cls.name] is not cls:
        raise ValueError(f"runner {cls.name!r} registered twice")
    _BY_NAME[cls.name] = cls
    for suffix in cls.suffixes:
        _BY_SUFFIX.setdefault(suffix.lower(), cls)
    return cls


def _load_builtin() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        for module in _BUILTIN:
            importlib.import_module(module)


def get_runner(name: str) -> type[Runner]:
    """The runner class registered as ``name``; :class:`UnknownNameError` lists the names."""
    _load_builtin()
    try:
        return _BY_NAME[name]
    except KeyError:
        raise UnknownNameError("back end", name, _BY_NAME) from None


def runner_for_file(path: str | os.PathLike[str]) -> type[Runner]:
    """The default runner for a model file, chosen by its suffix."""
    _load_builtin()
    suffix = Path(path).suffix.lower()
    try:
        return _BY_SUFFIX[suffix]
    except KeyError:
        raise InputError(
            f"no back end reads {suffix or 'files without a suffix'} ({path}); model files: "
            f"{', '.join(sorted(_BY_SUFFIX))}; or choose one with --backend "
            f"({', '.join(sorted(_BY_NAME))})"
        ) from None


def list_runners() -> list[str]:
    """Registered back-end names, sorted."""
    _load_builtin()
    return sorted(_BY_NAME)


__all__ = ["Runner", "get_runner", "list_runners", "register_runner", "runner_for_file"]
