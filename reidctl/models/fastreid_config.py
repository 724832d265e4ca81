"""Read a user's fast-reid config (YAML with ``_BASE_`` inheritance) into a model.

Only the options that change the inference network are read: ``MODEL.META_ARCHITECTURE``
(Baseline, MGN), ``MODEL.BACKBONE.{NAME, DEPTH, LAST_STRIDE, WITH_IBN, WITH_SE, WITH_NL,
NORM, FEAT_DIM}``, ``MODEL.HEADS.{NAME, POOL_LAYER, EMBEDDING_DIM, WITH_BNNECK, NORM}``,
``MODEL.PIXEL_MEAN``, ``MODEL.PIXEL_STD`` and ``INPUT.SIZE_TEST``; anything absent takes
fast-reid's default (``fastreid/config/defaults.py``). ``_BASE_`` is resolved relative to the
file that names it, and the child's values override the base's, key by key, as yacs does.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

from reidctl.errors import FormatError, InputError
from reidctl.models.registry import ModelSpec
from reidctl.specs import TensorSpec

MAX_BASE_DEPTH = 10


def read_yaml_with_base(path: str | os.PathLike[str], _depth: int = 0) -> dict[str, Any]:
    """The merged mapping of a fast-reid YAML config and its ``_BASE_`` chain."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise InputError(f"fast-reid config not found: {path}")
    if _depth > MAX_BASE_DEPTH:
        raise FormatError(f"{path}: _BASE_ chain deeper than {MAX_BASE_DEPTH} (a cycle?)")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise FormatError(f"{path} is not a readable YAML file: {e}") from e
    if not isinstance(data, dict):
        raise FormatError(
            f"{path}: a fast-reid config is a YAML mapping, found {type(data).__name__}"
        )
    base = data.pop("_BASE_", None)
    if base is None:
        return data
    base_path = Path(os.path.expanduser(str(base)))
    if not base_path.is_absolute():
        base_path = path.parent / base_path
    if not base_path.is_file():
        raise InputError(f"{path}: its _BASE_ {base!r} was not found at {base_path}")
    return _merge(read_yaml_with_base(base_path, _depth + 1), data)


def _merge(base: dict[str, Any], child: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in child.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _get(cfg: dict[str, Any], dotted: str, default: Any) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def config_from_yaml(path: str | os.PathLike[str]) -> Any:
    """A :class:`reidctl.models.fastreid.FastReIDConfig` from a fast-reid YAML config."""
    from reidctl.models.fastreid import PIXEL_MEAN, PIXEL_STD, POOL_NAMES, FastReIDConfig

    raw = read_yaml_with_base(path)
    where = f"fast-reid config {path}"

    def need(dotted: str, default: Any, allowed: tuple[Any, ...]) -> Any:
        value = _get(raw, "MODEL." + dotted, default)
        if value not in allowed:
            raise InputError(
                f"{where}: MODEL.{dotted} = {value!r} is not supported; "
                f"supported: {', '.join(map(str, allowed))}"
            )
        return value

    need("BACKBONE.NAME", "build_resnet_backbone", ("build_resnet_backbone",))
    need("HEADS.NAME", "EmbeddingHead", ("EmbeddingHead",))
    need("BACKBONE.WITH_SE", False, (False,))
    need("BACKBONE.FEAT_DIM", 2048, (2048,))
    for norm in ("BACKBONE.NORM", "HEADS.NORM"):
        need(norm, "BN", ("BN", "syncBN", "GhostBN"))
    depth = str(need("BACKBONE.DEPTH", "50x", ("50x", "101x")))
    pool_name = str(_get(raw, "MODEL.HEADS.POOL_LAYER", "GlobalAvgPool"))
    if pool_name not in POOL_NAMES:
        raise InputError(
            f"{where}: MODEL.HEADS.POOL_LAYER = {pool_name!r} is not supported; "
            f"supported: {', '.join(sorted(POOL_NAMES))}"
        )
    size = _get(raw, "INPUT.SIZE_TEST", [256, 128])
    if not (
        isinstance(size, list | tuple) and len(size) == 2 and all(isinstance(v, int) for v in size)
    ):
        raise InputError(f"{where}: INPUT.SIZE_TEST should be [height, width], got {size!r}")

    def triple(dotted: str, default: tuple[float, float, float]) -> tuple[float, float, float]:
        value = _get(raw, "MODEL." + dotted, list(default))
        try:
            out = tuple(float(v) for v in value)
        except (TypeError, ValueError):
            out = ()
        if len(out) != 3:
            raise InputError(f"{where}: MODEL.{dotted} should be 3 numbers (0..255), got {value!r}")
        return out  # type: ignore[return-value]

    try:
        return FastReIDConfig(
            meta_arch=str(_get(raw, "MODEL.META_ARCHITECTURE", "Baseline")),
            depth=int(depth[:-1]),
            last_stride=int(_get(raw, "MODEL.BACKBONE.LAST_STRIDE", 1)),
            with_ibn=bool(_get(raw, "MODEL.BACKBONE.WITH_IBN", False)),
            with_nl=bool(_get(raw, "MODEL.BACKBONE.WITH_NL", False)),
            pool=POOL_NAMES[pool_name],
            embedding_dim=int(_get(raw, "MODEL.HEADS.EMBEDDING_DIM", 0)),
            with_bnneck=bool(_get(raw, "MODEL.HEADS.WITH_BNNECK", False)),
            height=int(size[0]),
            width=int(size[1]),
            pixel_mean=triple("PIXEL_MEAN", PIXEL_MEAN),
            pixel_std=triple("PIXEL_STD", PIXEL_STD),
        )
    except InputError as e:
        raise InputError(f"{where}: {e}") from None
    except (TypeError, ValueError) as e:
        raise InputError(f"{where}: {e}") from None


def spec_for(cfg: Any, name: str = "fastreid") -> ModelSpec:
    """An unregistered :class:`ModelSpec` describing the network of ``cfg``."""
    return ModelSpec(
        name=name,
        description=f"fast-reid {cfg.meta_arch} ResNet-{cfg.depth} from a config",
        builder="reidctl.models.fastreid:build_from_config",
        outputs=(TensorSpec("feature", ("batch", cfg.feature_dim)),),
        feature="feature",
        l2_normalize=True,
        preprocess=cfg.preprocess(),
        tolerance=1e-4,
        reference="JDAI-CV/fast-reid",
    )


def load_fastreid(
    config: str | os.PathLike[str],
    weights: str | os.PathLike[str] | None = None,
    allow_pickle: bool = False,
) -> Any:
    """Build the network of a fast-reid config and load ``model_final.pth`` strictly.

    Returns a :class:`reidctl.models.loading.LoadedModel` whose ``spec`` is unregistered
    (name ``fastreid``); without ``weights`` the weights are random (seed 0, with a
    :class:`~reidctl.models.loading.RandomInitWarning`).
    """
    import torch

    from reidctl.errors import CheckpointError
    from reidctl.io import sha256_file
    from reidctl.models import loading
    from reidctl.models.checkpoints import add_missing_batch_counters
    from reidctl.models.fastreid import build_from_config

    cfg = config_from_yaml(config)
    spec = spec_for(cfg)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        module = build_from_config(cfg)
    sha = None
    if weights is not None:
        sd = loading.extract_state_dict(
            loading.load_checkpoint(weights, allow_pickle), str(weights)
        )
        sha = sha256_file(weights)
        sd = add_missing_batch_counters(module.state_dict(), module.remap_state_dict(sd))
        problem = loading._describe_mismatch(module, sd, str(weights))
        if problem:
            raise CheckpointError(
                f"{problem}\n  check that the checkpoint was trained with the config {config}"
            )
        module.load_state_dict(sd, strict=True)
    else:
        warnings.warn(
            f"no --weights given: the fast-reid model of {config} runs with RANDOM weights "
            "(seed 0); its features are meaningless for retrieval",
            loading.RandomInitWarning,
            stacklevel=2,
        )
    module.eval()
    return loading.LoadedModel(
        module=module,
        spec=spec,
        output_names=tuple(module.output_names),
        weights_path=str(Path(weights).resolve()) if weights is not None else None,
        weights_sha256=sha,
        num_classes=None,
    )
