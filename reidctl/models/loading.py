"""Build a registered model and load its weights safely.

``torch.load(..., weights_only=True)`` by default, with an allow-list for what real ReID
checkpoints contain besides tensors (numpy arrays and scalars, e.g. AlignedReID's
``scores``). A legacy full pickle needs ``allow_pickle=True``, which can run arbitrary code
and is therefore an explicit opt-in.

Builder-module protocol (see :mod:`reidctl.models.registry`): ``build(name, num_classes)``
returns an ``nn.Module`` with ``output_names``; the module may define
``num_classes(state_dict) -> int | None`` (read the class count from a checkpoint) and the
built class may define ``remap_state_dict(sd) -> sd`` (foreign key names to its own).
"""

from __future__ import annotations

import importlib
import pickle
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from reidctl.errors import CheckpointError
from reidctl.io import sha256_file
from reidctl.models.registry import ModelSpec, get_spec

_PREFIXES = ("module.", "model.")


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


def _numpy_safe_globals() -> list[Any]:
    """What numpy arrays and scalars pickle as (both numpy 1.x and 2.x module paths)."""
    out: list[Any] = [np.ndarray, np.dtype]
    paths = ("numpy._core.multiarray", "numpy.core.multiarray")
    for modname in paths:  # the first that imports: numpy 2.x, else 1.x
        try:
            mod = importlib.import_module(modname)
        except ImportError:
            continue
        for attr in ("_reconstruct", "scalar"):
            if hasattr(mod, attr):
                # torch matches a global by the path written in the file, and a function
                # reports only its current module: numpy 1.x files name numpy.core, 2.x
                # files numpy._core, so allow the function under both names.
                out += [(getattr(mod, attr), f"{path}.{attr}") for path in paths]
        break
    out += [type(np.dtype(t)) for t in ("float16", "float32", "float64", "int32", "int64", "bool")]
    out += [np.float16, np.float32, np.float64, np.int32, np.int64, np.bool_]
    return out


def load_checkpoint(path: str | Path, allow_pickle: bool = False) -> Any:
    """``torch.load`` a checkpoint file on the CPU; typed errors for every failure."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file not found: {path}")
    if allow_pickle:
        warnings.warn(
            f"loading {path} with full pickle (--allow-pickle): this can execute arbitrary "
            "code; use it only for files you trust",
            stacklevel=2,
        )
        try:
            return torch.load(path, map_location="cpu", weights_only=False)
        except Exception as e:
            raise CheckpointError(f"cannot read weights file {path}: {e}") from e
    try:
        with torch.serialization.safe_globals(_numpy_safe_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if "Weights only load failed" in str(e) and "GLOBAL" in str(e):
            raise CheckpointError(
                f"{path} holds Python objects that safe loading refuses ({first}). If you "
                "trust the file, pass --allow-pickle to load it as a full pickle."
            ) from e
        raise CheckpointError(f"{path} is not a readable torch checkpoint: {first}") from e
    except Exception as e:  # a damaged file can fail anywhere inside the unpickler
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"{path} is not a readable torch checkpoint (corrupt or truncated?): {first}"
        ) from e


def extract_state_dict(obj: Any, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Find the model state dict inside the common checkpoint containers.

    Handles a bare state dict, ``{'state_dict': ...}`` (torchreid, Lightning),
    ``{'state_dicts': [model_sd, optim_sd], ...}`` (AlignedReID), ``{'model': ...}``; strips
    ``module.`` (DataParallel) and ``model.`` prefixes.
    """
    sd = obj
    for _ in range(3):
        if not isinstance(sd, dict):
            break
        if (
            "state_dicts" in sd
            and isinstance(sd["state_dicts"], list | tuple)
            and sd["state_dicts"]
        ):
            sd = sd["state_dicts"][0]
        elif "state_dict" in sd and isinstance(sd["state_dict"], dict):
            sd = sd["state_dict"]
        elif "model" in sd and isinstance(sd["model"], dict):
            sd = sd["model"]
        else:
            break
    if not isinstance(sd, dict) or not sd:
        raise CheckpointError(f"{source} holds no state dict (found {type(obj).__name__})")
    tensors = {k: v for k, v in sd.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError(f"{source} holds no tensors; is it a model checkpoint?")
    out: dict[str, torch.Tensor] = {}
    for k, v in tensors.items():
        key = str(k)
        changed = True
        while changed:
            changed = False
            for p in _PREFIXES:
                if key.startswith(p):
                    key, changed = key[len(p) :], True
        out[key] = v
    return out


def _describe_mismatch(model: nn.Module, sd: dict[str, torch.Tensor], source: str) -> str | None:
    own = model.state_dict()
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    shapes = sorted(
        f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
        for k in set(own) & set(sd)
        if tuple(own[k].shape) != tuple(sd[k].shape)
    )
    if not (missing or unexpected or shapes):
        return None

    def show(title: str, items: list[str]) -> str:
        if not items:
            return ""
        more = f" ... (+{len(items) - 10} more)" if len(items) > 10 else ""
        return f"\n  {title} ({len(items)}): {', '.join(items[:10])}{more}"

    return (
        f"weights {source} do not fit the model"
        + show("missing keys", missing)
        + show("unexpected keys", unexpected)
        + show("shape mismatches", shapes)
        + "\n  check that the checkpoint belongs to this model (see `reidctl models`)"
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
        problem = _describe_mismatch(module, sd, str(weights))
        if problem:
            from reidctl.models.fastreid import family_hint

            raise CheckpointError(problem + family_hint(raw, name))
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
