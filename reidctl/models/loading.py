"""Build a registered model and load its weights safely.

Files are read by :func:`reidctl.models.checkpoints.read_checkpoint`: ``torch.load(...,
weights_only=True)`` with numpy arrays and scalars allowed (AlignedReID's ``scores``), then,
for files that pickle objects of other classes (a Lightning checkpoint's yacs ``CfgNode``),
a restricted unpickler that keeps those objects as inert placeholders and refuses any
global the file would call. A full pickle needs ``allow_pickle=True``, which can run
arbitrary code and is therefore an explicit opt-in. Safetensors files load too.

Loading is strict, except that BatchNorm ``num_batches_tracked`` counters missing from a
checkpoint (PyTorch < 0.4 wrote none) keep the model's own value. When the keys do not fit,
the error says which other registered model they fit.

Builder-module protocol (see :mod:`reidctl.models.registry`): ``build(name, num_classes)``
returns an ``nn.Module`` with ``output_names``; the module may define
``num_classes(state_dict) -> int | None`` (read the class count from a checkpoint) and the
built class may define ``remap_state_dict(sd) -> sd`` (foreign key names to its own).
"""

from __future__ import annotations

import importlib
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from reidctl.errors import CheckpointError
from reidctl.io import sha256_file
from reidctl.models.checkpoints import (
    FITS_OTHER_MODEL,
    add_missing_batch_counters,
    compare_keys,
    extract_state_dict,
    read_checkpoint,
    suggest_models,
)
from reidctl.models.registry import ModelSpec, get_spec


class RandomInitWarning(UserWarning):
    """The model runs with random weights: features are meaningless for retrieval."""


@dataclass
class LoadedModel:
    """A built model in eval mode, its spec and where its weights came from."""

    module: nn.Module
    spec: ModelSpec
    output_names: tuple[str, ...]
    weights_path: str | None
    weights_sha256: str | None
    num_classes: int | None

    def weights_info(self) -> dict[str, str] | None:
        if self.weights_path is None:
            return None
        return {"path": self.weights_path, "sha256": str(self.weights_sha256)}


def load_checkpoint(path: str | Path, allow_pickle: bool = False) -> Any:
    """The object a checkpoint file holds, read on the CPU (see :func:`read_checkpoint`)."""
    return read_checkpoint(path, allow_pickle).obj


def _describe_mismatch(model: nn.Module, sd: dict[str, torch.Tensor], source: str) -> str | None:
    cmp = compare_keys(model.state_dict(), sd)
    if cmp.exact:
        return None

    def show(title: str, items: list[str]) -> str:
        if not items:
            return ""
        more = f" ... (+{len(items) - 10} more)" if len(items) > 10 else ""
        return f"\n  {title} ({len(items)}): {', '.join(items[:10])}{more}"

    return (
        f"weights {source} do not fit the model"
        + show("missing keys", cmp.missing)
        + show("unexpected keys", cmp.unexpected)
        + show("shape mismatches", cmp.shapes)
    )


def create_model(
    name: str,
    weights: str | Path | None = None,
    allow_pickle: bool = False,
    num_classes: int | None = None,
) -> LoadedModel:
    """Build registered model ``name`` in eval mode and load ``weights`` strictly.

    Without ``weights`` the model is randomly initialised (seed 0, so exports are
    reproducible) and a :class:`RandomInitWarning` is emitted.
    """
    spec = get_spec(name)
    module_name, func_name = spec.builder.split(":")
    family = importlib.import_module(module_name)
    build = getattr(family, func_name)

    sd: dict[str, torch.Tensor] | None = None
    sha = None
    if weights is not None:
        sd = extract_state_dict(load_checkpoint(weights, allow_pickle), str(weights))
        sha = sha256_file(weights)
        if num_classes is None and hasattr(family, "num_classes"):
            num_classes = family.num_classes(sd)
    else:
        warnings.warn(
            f"no --weights given: {name} runs with RANDOM weights (seed 0); its features are "
            "meaningless for retrieval",
            RandomInitWarning,
            stacklevel=2,
        )

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        module = build(name, num_classes)
    if sd is not None:
        raw = sd
        if hasattr(module, "remap_state_dict"):
            sd = module.remap_state_dict(sd)
        sd = add_missing_batch_counters(module.state_dict(), sd)
        problem = _describe_mismatch(module, sd, str(weights))
        if problem:
            hint = suggest_models(raw, name).replace("FILE", str(weights))
            if not hint.startswith(FITS_OTHER_MODEL):
                from reidctl.models.fastreid import family_hint

                hint += family_hint(raw, name)
            raise CheckpointError(f"{problem}\n  {hint}")
        module.load_state_dict(sd, strict=True)
    module.eval()
    return LoadedModel(
        module=module,
        spec=spec,
        output_names=tuple(module.output_names),
        weights_path=str(Path(weights).resolve()) if weights is not None else None,
        weights_sha256=sha,
        num_classes=num_classes,
    )
