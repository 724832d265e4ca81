"""Model zoo. ``registry`` holds the specs (no torch); ``create_model`` builds and loads.

Importing this package does not import torch: ``create_model``, ``LoadedModel``,
``RandomInitWarning``, ``load_checkpoint`` and ``extract_state_dict`` are loaded from
:mod:`reidctl.models.loading` on first use.

Example::

    from reidctl.models import create_model, get_spec
    loaded = create_model("osnet_x0_25", weights="osnet_x0_25_market1501.pth")
    (feature,) = loaded.module(images)  # [N, 512], images normalised as get_spec(...).preprocess
"""

from __future__ import annotations

from typing import Any

from reidctl.models.registry import ModelSpec, get_spec, list_models, register_model

_LAZY = (
    "create_model",
    "LoadedModel",
    "RandomInitWarning",
    "load_checkpoint",
    "extract_state_dict",
)

__all__ = ["ModelSpec", "get_spec", "list_models", "register_model", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from reidctl.models import loading

        return getattr(loading, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
