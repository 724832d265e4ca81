"""Read checkpoint files safely and describe them: file format, container layout, key fit.

File formats (:func:`sniff_format`, by magic bytes, not by name): ``zip`` (``torch.save``
since PyTorch 1.6, whatever the file is called: ``model.pth.tar-60`` is one), ``legacy``
(the pickle stream of PyTorch <= 1.5, e.g. PyTorch 0.3 files) and ``safetensors``.

Safe reading (:func:`read_checkpoint`) is ``torch.load(weights_only=True)`` first, with
numpy arrays and scalars allowed. When that refuses a global, the file is read again by a
restricted unpickler in which

* only the globals torch's weights-only loader allows (tensor rebuild functions, storages,
  dtypes, ``OrderedDict`` ...), numpy's array and scalar constructors and a few inert
  standard-library value types (``pathlib`` paths, ``argparse.Namespace``, ``datetime``)
  resolve to the real objects; no module is ever imported by name;
* every other global becomes an inert :class:`Placeholder` subclass that records its name:
  an object pickled *by class* (``NEWOBJ``, ``BUILD``, items: yacs ``CfgNode``, Lightning
  ``AttributeDict``, ``argparse`` configs) becomes a placeholder holding the pickled state
  as plain data, so it never blocks reading the weights;
* a global the file *calls* while it is read (``REDUCE``: what ``__reduce__`` payloads such
  as ``os.system`` use) is refused: the read stops before anything runs, and the error names
  the global and the ``--allow-pickle`` opt-in.

A full pickle (``allow_pickle=True``) runs whatever the file says and is an explicit
opt-in.

Key fit (:func:`fit_models`): every registered model is built on the CPU with weight
initialisation skipped (allocation only), its builder module's ``num_classes(sd)`` and its
module's ``remap_state_dict(sd)`` are applied as :func:`reidctl.models.create_model` does,
and the checkpoint's key names and shapes are compared with the model's. A family may add
``looks_like(state_dict) -> bool | float`` (module level or on the built class) to vouch for
files whose key set it cannot describe statically, and ``checkpoint_facts(state_dict) ->
dict[str, int]`` for facts read from shapes; a built module's integer ``num_cameras`` and
``num_stripes`` attributes are reported too. New families are covered without changes here.
"""

from __future__ import annotations

import _compat_pickle
import contextlib
import importlib
import inspect as _inspect
import pickle
import re
import struct
import types
import warnings
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from reidctl.errors import CheckpointError

FORMATS = ("zip", "legacy", "safetensors")
WRAPPER_PREFIXES = ("module.", "model.")
_FACT_ATTRIBUTES = ("num_cameras", "num_stripes")
#: how :func:`suggest_models` starts when another registered model fits exactly
FITS_OTHER_MODEL = "the checkpoint's keys fit"
ALLOW_PICKLE_HINT = "If you trust the file, pass --allow-pickle to load it as a full pickle."


# --------------------------------------------------------------------------- file format


def sniff_format(path: str | Path) -> str | None:
    """``zip``, ``legacy`` or ``safetensors`` from the first bytes of ``path``; else None."""
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(16)
    size = path.stat().st_size
    if head[:4] == b"PK\x03\x04":
        return "zip"
    if len(head) >= 9:
        (header_len,) = struct.unpack("<Q", head[:8])
        if 2 <= header_len <= size - 8 and head[8:9] == b"{":
            return "safetensors"
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:  # pickle PROTO opcode
        return "legacy"
    return None


# --------------------------------------------------------------------------- placeholders


class RefusedGlobalError(pickle.UnpicklingError):
    """The pickle calls a global that safe loading does not allow (nothing was called)."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"Unsupported global: GLOBAL {name}")


class Placeholder(dict):
    """Stands in for an object of a class safe loading does not import.

    It holds what the pickle stored and nothing runs: pickled items land in the dict,
    ``BUILD`` state in :attr:`pickled_state`, appended items in :attr:`pickled_items`.
    Calling the class (a pickled ``REDUCE``) raises :class:`RefusedGlobalError`.
    """

    pickled_global: str = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> Placeholder:
        return dict.__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise RefusedGlobalError(type(self).pickled_global)

    __hash__ = object.__hash__  # type: ignore[assignment]

    def __setstate__(self, state: Any) -> None:
        self.__dict__["pickled_state"] = state

    def append(self, item: Any) -> None:
        self.__dict__.setdefault("pickled_items", []).append(item)

    def extend(self, items: Any) -> None:
        self.__dict__.setdefault("pickled_items", []).extend(items)

    def __repr__(self) -> str:
        return f"<placeholder for {type(self).pickled_global}>"


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


def _inert_stdlib() -> dict[str, Any]:
    """Standard-library value types that checkpoints' metadata holds; constructing them
    from pickled arguments has no side effect."""
    import argparse
    import datetime
    import pathlib

    out: dict[str, Any] = {"argparse.Namespace": argparse.Namespace}
    for cls in ("PosixPath", "PurePosixPath", "WindowsPath", "PureWindowsPath", "Path"):
        out[f"pathlib.{cls}"] = out[f"pathlib._local.{cls}"] = getattr(pathlib, cls)
    for cls in ("date", "time", "datetime", "timedelta", "timezone"):
        out[f"datetime.{cls}"] = getattr(datetime, cls)
    out["builtins.frozenset"] = frozenset
    out["builtins.slice"] = slice
    out["builtins.range"] = range
    return out


def _allowed_globals() -> dict[str, Any]:
    """``module.name`` -> object for every global the restricted unpickler resolves."""
    from torch import _weights_only_unpickler as wo

    allowed: dict[str, Any] = dict(wo._get_allowed_globals())
    allowed.update(wo._get_user_allowed_globals())
    for entry in _numpy_safe_globals():
        if isinstance(entry, tuple):
            allowed[entry[1]] = entry[0]
        else:
            allowed[f"{entry.__module__}.{entry.__qualname__}"] = entry
    allowed.update(_inert_stdlib())
    return allowed


class _RestrictedPickle:
    """A ``pickle_module`` for ``torch.load``: resolves only allowed globals, records the
    names it replaced by placeholders. One instance per read."""

    def __init__(self) -> None:
        self.allowed = _allowed_globals()
        self.replaced: set[str] = set()
        self._classes: dict[str, type[Placeholder]] = {}
        owner = self

        class Unpickler(pickle.Unpickler):
            def find_class(self, module: str, name: str) -> Any:
                return owner.resolve(module, name)

        def load(file: Any, **kwargs: Any) -> Any:
            return Unpickler(file, **kwargs).load()

        self.module = types.ModuleType("reidctl_restricted_pickle")
        self.module.Unpickler = Unpickler  # type: ignore[attr-defined]
        self.module.load = load  # type: ignore[attr-defined]

    def resolve(self, module: str, name: str) -> Any:
        if (module, name) in _compat_pickle.NAME_MAPPING:  # Python 2 names
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        elif module in _compat_pickle.IMPORT_MAPPING:
            module = _compat_pickle.IMPORT_MAPPING[module]
        full = f"{module}.{name}"
        if full in self.allowed:
            return self.allowed[full]
        self.replaced.add(full)
        if full not in self._classes:
            short = re.sub(r"\W", "_", name) or "Global"
            self._classes[full] = type(
                short, (Placeholder,), {"pickled_global": full, "__module__": __name__}
            )
        return self._classes[full]


# --------------------------------------------------------------------------- reading


@dataclass
class RawCheckpoint:
    """What a checkpoint file held, and how it was read.

    ``placeholders``: globals the safe read replaced by :class:`Placeholder` objects
    (sorted); ``metadata``: a safetensors file's string metadata.
    """

    path: Path
    format: str
    obj: Any
    placeholders: tuple[str, ...] = ()
    metadata: dict[str, str] | None = None
    full_pickle: bool = False


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _unsupported_global(e: BaseException) -> tuple[str, bool] | None:
    """``(global, blocked)`` from torch's weights-only refusal, or None for other errors.

    ``blocked``: torch refuses the global's module outright (``os``, ``subprocess`` ...).
    """
    m = re.search(
        r"[Uu]nsupported(?: global:)? GLOBAL ([\w.]+)( whose module [\w.]+ is blocked)?", str(e)
    )
    return (m.group(1), m.group(2) is not None) if m else None


def _read_safetensors(path: Path) -> RawCheckpoint:
    try:
        from safetensors import safe_open
    except ImportError as e:
        raise CheckpointError(
            f"{path} is a safetensors file and the safetensors package is missing: "
            "pip install safetensors"
        ) from e
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = f.metadata()
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (not a dict)
    except Exception as e:  # safetensors raises its own SafetensorError and OSError
        raise CheckpointError(f"{path} is not a readable safetensors file: {_first_line(e)}") from e
    return RawCheckpoint(path, "safetensors", tensors, metadata=dict(metadata or {}))


def _is_torchscript(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as z:
            return any(n.endswith("/constants.pkl") for n in z.namelist())
    except zipfile.BadZipFile:
        return False


def _read_with_placeholders(path: Path, fmt: str, refused: str) -> RawCheckpoint:
    if fmt == "zip" and _is_torchscript(path):
        raise CheckpointError(
            f"{path} is a TorchScript archive, not a checkpoint ({refused}). {ALLOW_PICKLE_HINT}"
        )
    reader = _RestrictedPickle()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # legacy files: "source code of class changed"
            obj = torch.load(
                path, map_location="cpu", weights_only=False, pickle_module=reader.module
            )
    except RefusedGlobalError as e:
        raise CheckpointError(
            f"{path} holds Python objects that safe loading refuses (Unsupported global: "
            f"GLOBAL {e.name}, which the file calls while it is read; nothing was run). "
            + ALLOW_PICKLE_HINT
        ) from e
    except Exception as e:
        raise CheckpointError(
            f"{path} holds Python objects that safe loading refuses ({refused}) and cannot "
            f"be read with placeholders for them either ({_first_line(e)}). " + ALLOW_PICKLE_HINT
        ) from e
    return RawCheckpoint(path, fmt, obj, placeholders=tuple(sorted(reader.replaced)))


def read_checkpoint(path: str | Path, allow_pickle: bool = False) -> RawCheckpoint:
    """Read a checkpoint on the CPU, safely unless ``allow_pickle``; typed errors throughout."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file not found: {path}")
    fmt = sniff_format(path)
    if fmt == "safetensors":
        return _read_safetensors(path)
    if allow_pickle:
        warnings.warn(
            f"loading {path} with full pickle (--allow-pickle): this can execute arbitrary "
            "code; use it only for files you trust",
            stacklevel=3,
        )
        try:
            obj = torch.load(path, map_location="cpu", weights_only=False)
        except ModuleNotFoundError as e:
            raise CheckpointError(
                f"cannot read weights file {path} as a full pickle: {e}. Without "
                "--allow-pickle the weights are read and objects of packages that are not "
                "installed are kept as inert placeholders."
            ) from e
        except Exception as e:
            raise CheckpointError(f"cannot read weights file {path}: {_first_line(e)}") from e
        return RawCheckpoint(path, fmt or "unknown", obj, full_pickle=True)
    try:
        with torch.serialization.safe_globals(_numpy_safe_globals()):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        refused = _unsupported_global(e)
        if refused is not None and refused[1]:
            raise CheckpointError(
                f"{path} holds Python objects that safe loading refuses (Unsupported global: "
                f"GLOBAL {refused[0]}, from a module torch blocks; nothing was run). "
                + ALLOW_PICKLE_HINT
            ) from RefusedGlobalError(refused[0])
        if refused is not None and fmt in ("zip", "legacy"):
            return _read_with_placeholders(path, fmt, f"Unsupported global: GLOBAL {refused[0]}")
        raise CheckpointError(f"{path} is not a readable torch checkpoint: {_first_line(e)}") from e
    except Exception as e:  # a damaged file can fail anywhere inside the unpickler
        raise CheckpointError(
            f"{path} is not a readable torch checkpoint (corrupt or truncated?): {_first_line(e)}"
        ) from e
    return RawCheckpoint(path, fmt or "unknown", obj)


# --------------------------------------------------------------------------- containers

LAYOUTS = {
    "state_dict": "plain state dict",
    "safetensors": "safetensors tensors",
    "aligned_reid": "AlignedReID ckpt.pth {'state_dicts': [model, optimizer], 'ep', 'scores'}",
    "lightning": "PyTorch Lightning checkpoint {'state_dict', 'epoch', 'hyper_parameters', ...}",
    "torchreid": "torchreid checkpoint {'state_dict', 'epoch', 'rank1', 'optimizer'}",
    "fastreid": "fast-reid checkpoint {'model', 'optimizer', ...}",
    "wrapped": "state dict inside a dict",
}
_LIGHTNING_KEYS = {
    "pytorch-lightning_version",
    "global_step",
    "hyper_parameters",
    "hparams_name",
    "optimizer_states",
    "lr_schedulers",
    "callbacks",
    "loops",
}


def detect_layout(obj: Any, fmt: str | None = None) -> tuple[str, str]:
    """``(layout id, description)`` of a checkpoint's top-level container (see LAYOUTS)."""
    if fmt == "safetensors":
        return "safetensors", LAYOUTS["safetensors"]
    if not isinstance(obj, dict):
        return "other", f"a {type(obj).__name__}, not a dict"
    keys = {str(k) for k in obj}
    if isinstance(obj.get("state_dicts"), list | tuple):
        return "aligned_reid", LAYOUTS["aligned_reid"]
    if isinstance(obj.get("state_dict"), dict):
        if keys & _LIGHTNING_KEYS:
            version = obj.get("pytorch-lightning_version")
            extra = f" (Lightning {version})" if isinstance(version, str) else ""
            return "lightning", LAYOUTS["lightning"] + extra
        if keys & {"epoch", "rank1", "optimizer"}:
            return "torchreid", LAYOUTS["torchreid"]
        return "wrapped", "{'state_dict': ...}"
    if isinstance(obj.get("model"), dict):
        if "lr_sched" in keys or ("epoch" in keys and "iteration" not in keys):
            return (
                "fastreid",
                "fast-reid v0.3+ checkpoint {'model', 'optimizer', 'lr_sched', 'epoch'}",
            )
        if keys & {"iteration", "scheduler", "optimizer"}:
            return "fastreid", (
                "fast-reid checkpoint before v0.3 {'model', 'optimizer', 'scheduler', 'iteration'}"
            )
        return "wrapped", "{'model': ...}"
    if any(isinstance(v, torch.Tensor) for v in obj.values()):
        return "state_dict", LAYOUTS["state_dict"]
    return "other", "a dict without tensors"


def _inner_state_dict(obj: Any) -> Any:
    sd = obj
    for _ in range(3):
        if not isinstance(sd, dict):
            break
        if isinstance(sd.get("state_dicts"), list | tuple) and sd["state_dicts"]:
            sd = sd["state_dicts"][0]
        elif isinstance(sd.get("state_dict"), dict):
            sd = sd["state_dict"]
        elif isinstance(sd.get("model"), dict):
            sd = sd["model"]
        else:
            break
    return sd


def strip_prefixes(key: str) -> tuple[str, str]:
    """``(key without wrapper prefixes, the prefixes removed)``: ``module.`` (DataParallel)
    and ``model.`` (Lightning), repeatedly."""
    removed = ""
    changed = True
    while changed:
        changed = False
        for p in WRAPPER_PREFIXES:
            if key.startswith(p):
                key, removed, changed = key[len(p) :], removed + p, True
    return key, removed


def extract_state_dict(obj: Any, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Find the model state dict inside the common checkpoint containers.

    Handles a bare state dict, ``{'state_dict': ...}`` (torchreid, Lightning),
    ``{'state_dicts': [model_sd, optim_sd], ...}`` (AlignedReID), ``{'model': ...}``
    (fast-reid); strips ``module.`` (DataParallel) and ``model.`` prefixes.
    """
    sd = _inner_state_dict(obj)
    if not isinstance(sd, dict) or not sd:
        raise CheckpointError(f"{source} holds no state dict (found {type(obj).__name__})")
    tensors = {k: v for k, v in sd.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError(f"{source} holds no tensors; is it a model checkpoint?")
    return {strip_prefixes(str(k))[0]: v for k, v in tensors.items()}


def key_prefixes(obj: Any) -> tuple[dict[str, int], dict[str, int]]:
    """``(wrapper prefixes stripped -> count, first key component -> count)`` of the state
    dict inside ``obj``, e.g. ``({'module.': 320}, {'base': 318, 'fc': 2})``."""
    sd = _inner_state_dict(obj)
    wrappers: Counter[str] = Counter()
    heads: Counter[str] = Counter()
    if isinstance(sd, dict):
        for k, v in sd.items():
            if not isinstance(v, torch.Tensor):
                continue
            key, removed = strip_prefixes(str(k))
            if removed:
                wrappers[removed] += 1
            heads[key.split(".", 1)[0]] += 1
    return dict(sorted(wrappers.items())), dict(sorted(heads.items()))


# --------------------------------------------------------------------------- key fit


def is_batch_counter(key: str) -> bool:
    """BatchNorm's ``num_batches_tracked`` (absent from PyTorch < 0.4 checkpoints)."""
    return key.endswith("num_batches_tracked")


def add_missing_batch_counters(
    own: dict[str, torch.Tensor], sd: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """``sd`` with the model's own ``num_batches_tracked`` where the checkpoint has none.

    The counter only matters for training with ``momentum=None``; PyTorch 0.3 checkpoints
    predate it, and torch's own strict loading accepts them without it.
    """
    out = dict(sd)
    for k, v in own.items():
        if is_batch_counter(k) and k not in out:
            out[k] = v.detach().clone()
    return out


@dataclass
class KeyComparison:
    """How a (renamed) state dict compares with a model's, ``num_batches_tracked`` aside."""

    missing: list[str]
    unexpected: list[str]
    shapes: list[str]
    matched: int
    model_keys: int
    checkpoint_keys: int

    @property
    def exact(self) -> bool:
        return not (self.missing or self.unexpected or self.shapes)

    @property
    def coverage(self) -> float:
        """Tensors that fit, over the larger of the two key sets (1.0 = exact)."""
        return self.matched / max(self.model_keys, self.checkpoint_keys, 1)


def compare_keys(own: dict[str, Any], sd: dict[str, Any]) -> KeyComparison:
    """Compare key names and shapes of a model's state dict ``own`` and a checkpoint's."""
    missing = sorted(k for k in set(own) - set(sd) if not is_batch_counter(k))
    unexpected = sorted(set(sd) - set(own))
    common = set(own) & set(sd)
    shapes = sorted(
        f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
        for k in common
        if tuple(own[k].shape) != tuple(sd[k].shape)
    )
    matched = sum(
        1 for k in common if tuple(own[k].shape) == tuple(sd[k].shape) and not is_batch_counter(k)
    )
    return KeyComparison(
        missing=missing,
        unexpected=unexpected,
        shapes=shapes,
        matched=matched,
        model_keys=sum(1 for k in own if not is_batch_counter(k)),
        checkpoint_keys=sum(1 for k in sd if not is_batch_counter(k)),
    )


@dataclass
class ModelFit:
    """How well a checkpoint's keys fit one registered model."""

    model: str
    comparison: KeyComparison | None
    facts: dict[str, int] = field(default_factory=dict)
    looks_like: float | None = None
    error: str | None = None

    @property
    def exact(self) -> bool:
        return self.comparison is not None and self.comparison.exact

    @property
    def coverage(self) -> float:
        return self.comparison.coverage if self.comparison is not None else 0.0

    def rank(self) -> tuple[bool, float, float]:
        return (self.exact, self.looks_like or 0.0, self.coverage)

    def to_dict(self) -> dict[str, Any]:
        c = self.comparison
        return {
            "model": self.model,
            "fits": self.exact,
            "coverage": round(self.coverage, 4),
            "matched": c.matched if c else 0,
            "model_tensors": c.model_keys if c else None,
            "checkpoint_tensors": c.checkpoint_keys if c else None,
            "facts": dict(self.facts),
            "looks_like": self.looks_like,
            "error": self.error,
        }


def _call_hook(hook: Any, sd: dict[str, torch.Tensor], name: str) -> Any:
    try:
        params = _inspect.signature(hook).parameters
    except (TypeError, ValueError):
        params = {}
    return hook(sd, name) if len(params) >= 2 else hook(sd)


def _family(name: str) -> tuple[types.ModuleType, Any]:
    from reidctl.models.registry import get_spec

    module_name, func_name = get_spec(name).builder.split(":")
    family = importlib.import_module(module_name)
    return family, getattr(family, func_name)


_SHAPE_CHANGING_INPLACE = frozenset(
    {"resize_", "resize_as_", "squeeze_", "unsqueeze_", "t_", "transpose_", "swapdims_"}
    | {"swapaxes_", "as_strided_", "set_"}
)


class _SkipInit(torch.overrides.TorchFunctionMode):
    """Replace in-place value updates (weight initialisation) of every tensor but ``keep``'s
    by zero-filling: a model built to compare key names and shapes needs no initial values,
    and random initialisation of a large model costs seconds."""

    def __init__(self, keep: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self.keep = {id(t) for t in keep.values()}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if name.endswith("_") and not name.startswith("__") and name not in _SHAPE_CHANGING_INPLACE:
            # torch.nn.init passes the tensor by keyword
            target = args[0] if args else kwargs.get("tensor", kwargs.get("input"))
            if isinstance(target, torch.Tensor) and id(target) not in self.keep:
                # zeros, not uninitialised memory: init code that samples until the values
                # are in range (trunc_normal_) then stops at once
                return target.zero_() if name != "zero_" else target
        return func(*args, **kwargs)


def _build_and_remap(
    name: str, sd: dict[str, torch.Tensor], num_classes: int | None
) -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    """Build ``name`` on the CPU without initialising its weights, then let it rename
    ``sd``; the global RNG is left as it was."""
    _, build = _family(name)
    with (
        torch.random.fork_rng(devices=[]),
        torch.no_grad(),
        _SkipInit(sd),
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("ignore")
        module = build(name, num_classes)
        if hasattr(module, "remap_state_dict"):
            sd = module.remap_state_dict(sd)
    return module, sd


def fit_model(name: str, sd: dict[str, torch.Tensor]) -> ModelFit:
    """Compare a prefix-stripped state dict with registered model ``name`` (no weights are
    loaded; the model is built without initialising its weights)."""
    try:
        family, _ = _family(name)
    except ImportError as e:  # a family whose optional dependency is missing
        return ModelFit(name, None, error=f"cannot import its builder: {_first_line(e)}")
    facts: dict[str, int] = {}
    num_classes = None
    try:
        if hasattr(family, "num_classes"):
            num_classes = family.num_classes(sd)
    except Exception as e:  # a foreign checkpoint can break a family's shape reader
        return ModelFit(name, None, error=f"num_classes: {_first_line(e)}")
    if num_classes is not None:
        facts["num_classes"] = int(num_classes)
    try:
        module, remapped = _build_and_remap(name, sd, num_classes)
    except Exception as e:  # the family refuses this checkpoint
        return ModelFit(name, None, facts=facts, error=_first_line(e))
    comparison = compare_keys(module.state_dict(), remapped)
    for attr in _FACT_ATTRIBUTES:
        value = getattr(module, attr, None)
        if isinstance(value, int) and not isinstance(value, bool):
            facts[attr] = value
    looks: float | None = None
    for owner in (family, type(module)):
        hook = getattr(owner, "looks_like", None)
        if callable(hook):
            try:
                looks = float(_call_hook(hook, sd, name))
            except Exception:  # a hook that cannot read a foreign file: no opinion
                looks = None
            break
    hook = getattr(family, "checkpoint_facts", None)
    if callable(hook):
        # facts are informative; a foreign file may lack what the hook reads
        with contextlib.suppress(Exception):
            facts.update({str(k): int(v) for k, v in _call_hook(hook, sd, name).items()})
    return ModelFit(name, comparison, facts=facts, looks_like=looks)


def fit_models(sd: dict[str, torch.Tensor], names: list[str] | None = None) -> list[ModelFit]:
    """:func:`fit_model` for every registered model (or ``names``), best fit first."""
    from reidctl.models.registry import list_models

    fits = [fit_model(n, sd) for n in (names if names is not None else list_models())]
    return sorted(fits, key=lambda f: (tuple(-x for x in f.rank()), f.model))


def suggest_models(sd: dict[str, torch.Tensor], wanted: str) -> str:
    """One line for a mismatch error: which other registered model the keys fit."""
    others = [f for f in fit_models(sd) if f.model != wanted]
    exact = [f.model for f in others if f.exact]
    if exact:
        names = ", ".join(f"`{n}`" for n in exact)
        return (
            f"{FITS_OTHER_MODEL} {names}, not `{wanted}`: reidctl export {exact[0]} --weights FILE"
        )
    vouched = [f.model for f in others if f.looks_like]
    if vouched:
        return f"the checkpoint looks like {', '.join(f'`{n}`' for n in vouched)}, not `{wanted}`"
    best = others[0] if others else None
    if best is not None and best.coverage >= 0.5:
        return (
            f"closest registered model: `{best.model}` ({best.coverage:.0%} of the tensors fit); "
            "see `reidctl inspect FILE`"
        )
    return (
        "no registered model fits these keys; check that the checkpoint belongs to this model "
        "(see `reidctl models` and `reidctl inspect FILE`)"
    )


def plain_metadata(obj: Any, limit: int = 20) -> dict[str, Any]:
    """Top-level scalar and string entries of a checkpoint dict (epoch, rank1, versions)."""
    out: dict[str, Any] = {}
    if not isinstance(obj, dict):
        return out
    for k, v in obj.items():
        if isinstance(v, bool | int | float | str) and not isinstance(v, Placeholder):
            out[str(k)] = v
        elif isinstance(v, np.generic):
            out[str(k)] = v.item()
        elif isinstance(v, np.ndarray) and v.size <= 8:
            out[str(k)] = v.tolist()
        if len(out) >= limit:
            break
    return out


# --------------------------------------------------------------------------- description

FORMAT_DESCRIPTIONS = {
    "zip": "torch.save zip archive (PyTorch >= 1.6)",
    "legacy": "legacy torch.save pickle stream (PyTorch <= 1.5)",
    "safetensors": "safetensors",
}


def describe_checkpoint(
    path: str | Path, allow_pickle: bool = False, max_fits: int = 5
) -> dict[str, Any]:
    """Everything ``reidctl inspect`` reports about a checkpoint, as JSON-ready data.

    Keys: ``file``, ``size_bytes``, ``format``, ``layout``, ``metadata`` (plain top-level
    values, safetensors metadata), ``tensors`` and ``parameters`` (of the model state dict),
    ``wrapper_prefixes`` and ``key_prefixes`` (counts), ``fits`` (registered models whose
    keys fit, best first: every exact fit, then up to ``max_fits`` partial ones) and
    ``safe_load`` (``placeholders``: globals replaced by placeholders; ``refused``: a global
    the file calls while read, in which case nothing else past ``format`` is known).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"file not found: {path}")
    fmt = sniff_format(path)
    report: dict[str, Any] = {
        "file": str(path),
        "kind": "checkpoint",
        "size_bytes": path.stat().st_size,
        "format": fmt,
        "format_description": FORMAT_DESCRIPTIONS.get(str(fmt), "not a known checkpoint format"),
    }
    try:
        raw = read_checkpoint(path, allow_pickle)
    except CheckpointError as e:
        cause = e.__cause__
        if isinstance(cause, RefusedGlobalError):
            report["safe_load"] = {
                "ok": False,
                "refused": cause.name,
                "placeholders": [],
                "message": str(e),
            }
            return report
        raise
    layout, layout_text = detect_layout(raw.obj, raw.format)
    sd = extract_state_dict(raw.obj, str(path))
    wrappers, heads = key_prefixes(raw.obj)
    metadata = plain_metadata(raw.obj)
    if raw.metadata:
        metadata.update(raw.metadata)
    fits = fit_models(sd)
    shown = [f for f in fits if f.exact]
    shown += [f for f in fits if not f.exact and (f.coverage > 0 or f.looks_like)][:max_fits]
    report.update(
        {
            "layout": layout,
            "layout_description": layout_text,
            "metadata": metadata,
            "tensors": len(sd),
            "parameters": int(sum(v.numel() for v in sd.values())),
            "wrapper_prefixes": wrappers,
            "key_prefixes": heads,
            "fits": [f.to_dict() for f in shown],
            "safe_load": {
                "ok": True,
                "refused": None,
                "placeholders": list(raw.placeholders),
                "full_pickle": raw.full_pickle,
            },
        }
    )
    return report
