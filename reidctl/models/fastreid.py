"""fast-reid (JDAI-CV/fast-reid) models: BagTricks, AGW, SBS (``Baseline``) and MGN.

Module structure and state-dict key names follow fast-reid exactly, so its ``model_final.pth``
files load strictly. A file holds ``{'model': state_dict, ...}`` (before v0.3 also
``optimizer``, ``scheduler``, ``iteration``; from v0.3 ``optimizer``, ``lr_sched``,
``epoch``), with keys

* ``backbone.*``: fast-reid's ResNet (``fastreid/modeling/backbones/resnet.py``): the stem
  max-pool is ``MaxPool2d(3, 2, ceil_mode=True)`` without padding (not torchvision's); with
  IBN-a, ``bn1`` of every block in layer1-3 is ``IBN`` (``bn1.IN.*``: InstanceNorm2d over
  the first half of the channels, affine, no running statistics; ``bn1.BN.*``: BatchNorm2d
  over the rest); with non-local blocks, ``backbone.NL_2.{0,1}`` after blocks 2, 3 of layer2
  and ``backbone.NL_3.{0,1,2}`` after blocks 3, 4, 5 of layer3 (ResNet-50; ResNet-101:
  layer3 blocks 14-22). fast-reid's ``Non_local`` computes ``inter_channels`` as
  ``reduc_ratio // reduc_ratio``, i.e. 1, and its weights have that shape.
* ``heads.*``: ``EmbeddingHead``: ``heads.pool_layer`` (GeM-P stores ``heads.pool_layer.p``,
  GeM with fixed p=3 stores nothing), ``heads.bottleneck.0`` (1x1 conv to the embedding
  dimension, only when ``EMBEDDING_DIM > 0``) then the BNNeck (``BatchNorm2d``), and the
  training-only classifier ``heads.weight`` (v1.0+) or ``heads.classifier.weight`` (older).
* ``pixel_mean`` / ``pixel_std`` (``[1, 3, 1, 1]``, 0..255 RGB): fast-reid normalises inside
  the model. Files saved before March 2021 carry them as buffers, later files do not (the
  buffers became non-persistent). Here the normalisation is moved to the preprocessing:
  ``mean = pixel_mean / 255``, ``std = pixel_std / 255`` (read from the checkpoint when
  present, else from the config), and the buffers are dropped.

The test feature is what ``EmbeddingHead.forward`` returns in eval mode: the ``bottleneck``
output (``neck_feat[..., 0, 0]``), whatever ``MODEL.HEADS.NECK_FEAT`` says (that option
only chooses the feature of the training losses). MGN returns the concatenation of its eight
heads' bottleneck outputs in the order b1, b2, b3, b21, b22, b31, b32, b33.

fast-reid's test transform resizes with ``T.Resize(size, interpolation=3)`` (PIL bicubic)
and keeps 0..255 values (its ``ToTensor`` does not divide by 255).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from reidctl.errors import InputError, UnknownNameError
from reidctl.specs import IMAGENET_MEAN, IMAGENET_STD, PreprocessSpec

# fast-reid's defaults (fastreid/config/defaults.py), 0..255 RGB
PIXEL_MEAN: tuple[float, float, float] = (123.675, 116.28, 103.53)
PIXEL_STD: tuple[float, float, float] = (58.395, 57.12, 57.375)

BLOCKS: dict[int, tuple[int, int, int, int]] = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}
NL_LAYERS: dict[int, tuple[int, int, int, int]] = {50: (0, 2, 3, 0), 101: (0, 2, 9, 0)}

# fast-reid POOL_LAYER names (v1.0+ and the older lower-case ones) -> this module's kinds
POOL_NAMES: dict[str, str] = {
    "GlobalAvgPool": "avg",
    "FastGlobalAvgPool": "avg",
    "avgpool": "avg",
    "fastavgpool": "avg",
    "GlobalMaxPool": "max",
    "maxpool": "max",
    "GeneralizedMeanPooling": "gem",
    "gempool": "gem",
    "GeneralizedMeanPoolingP": "gemp",
    "gempoolP": "gemp",
    "AdaptiveAvgMaxPool": "avgmax",
    "avgmaxpool": "avgmax",
}
POOL_KINDS = ("avg", "max", "gem", "gemp", "avgmax")
META_ARCHS = ("Baseline", "MGN")


@dataclass(frozen=True)
class FastReIDConfig:
    """The options of a fast-reid model that change its inference network.

    ``height`` x ``width``: ``INPUT.SIZE_TEST`` (pixels). ``pixel_mean`` / ``pixel_std``:
    ``MODEL.PIXEL_MEAN`` / ``MODEL.PIXEL_STD`` (0..255 RGB). ``embedding_dim`` 0 means no
    reduction conv (the feature has the backbone's 2048 channels).
    """

    meta_arch: str = "Baseline"
    depth: int = 50
    last_stride: int = 1
    with_ibn: bool = False
    with_nl: bool = False
    pool: str = "avg"
    embedding_dim: int = 0
    with_bnneck: bool = True
    height: int = 256
    width: int = 128
    pixel_mean: tuple[float, float, float] = PIXEL_MEAN
    pixel_std: tuple[float, float, float] = PIXEL_STD

    def __post_init__(self) -> None:
        if self.meta_arch not in META_ARCHS:
            raise InputError(
                f"fast-reid META_ARCHITECTURE {self.meta_arch!r} is not supported; "
                f"valid: {', '.join(META_ARCHS)}"
            )
        if self.depth not in BLOCKS:
            raise InputError(f"fast-reid ResNet depth {self.depth} is not supported; use 50x, 101x")
        if self.pool not in POOL_KINDS:
            raise InputError(f"unknown pooling {self.pool!r}; valid: {', '.join(POOL_KINDS)}")
        if self.last_stride not in (1, 2):
            raise InputError(f"LAST_STRIDE must be 1 or 2, got {self.last_stride}")
        if self.embedding_dim < 0:
            raise InputError(f"EMBEDDING_DIM must be >= 0, got {self.embedding_dim}")

    @property
    def feature_dim(self) -> int:
        """Length of the test feature (MGN: 8 heads concatenated)."""
        per_head = self.embedding_dim or 2048
        return per_head * (8 if self.meta_arch == "MGN" else 1)

    def preprocess(self) -> PreprocessSpec:
        """reidctl preprocessing equal to fast-reid's test transform plus in-model normalising."""
        return PreprocessSpec(
            height=self.height,
            width=self.width,
            mean=_to_unit(self.pixel_mean),
            std=_to_unit(self.pixel_std),
            interpolation="bicubic",
        )


def _to_unit(values: tuple[float, ...] | list[float]) -> tuple[float, float, float]:
    """0..255 pixel statistics -> the 0..1 scale of :class:`PreprocessSpec` (6 decimals)."""
    out = tuple(round(float(v) / 255.0, 6) for v in values)
    return out  # type: ignore[return-value]


# The registered names, as in fast-reid's configs/Market1501/*.yml (with their _BASE_).
VARIANTS: dict[str, FastReIDConfig] = {
    "fastreid_bot_r50": FastReIDConfig(),
    "fastreid_bot_r50_ibn": FastReIDConfig(with_ibn=True),
    "fastreid_agw_r50": FastReIDConfig(with_nl=True, pool="gem"),
    "fastreid_sbs_r50_ibn": FastReIDConfig(with_ibn=True, with_nl=True, pool="gemp", height=384),
    "fastreid_mgn_r50_ibn": FastReIDConfig(
        meta_arch="MGN", with_ibn=True, pool="gemp", embedding_dim=256, height=384
    ),
}
assert _to_unit(PIXEL_MEAN) == IMAGENET_MEAN and _to_unit(PIXEL_STD) == IMAGENET_STD


# --------------------------------------------------------------------------- blocks


class IBN(nn.Module):
    """IBN-a normalisation: InstanceNorm2d (affine) on the first ``planes // 2`` channels,
    BatchNorm2d on the rest, concatenated back. Keys ``IN.weight``, ``IN.bias``, ``BN.*``."""

    def __init__(self, planes: int) -> None:
        super().__init__()
        self.half = planes // 2
        self.IN = nn.InstanceNorm2d(self.half, affine=True)
        self.BN = nn.BatchNorm2d(planes - self.half)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = torch.split(x, [self.half, x.shape[1] - self.half], dim=1)
        return torch.cat((self.IN(a), self.BN(b)), dim=1)


class Bottleneck(nn.Module):
    """fast-reid's ResNet bottleneck (stride on the 3x3 conv), ``bn1`` optionally IBN-a."""

    expansion = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        with_ibn: bool = False,
        stride: int = 1,
        downsample: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1: nn.Module = IBN(planes) if with_ibn else nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class NonLocal(nn.Module):
    """fast-reid's ``Non_local`` (embedded dot product, normalised by the position count N):

    ``z = W(softmax-free attention) + x`` with ``f = theta(x)^T phi(x) / N``,
    ``y = f g(x)``; ``W`` is a 1x1 conv then BatchNorm2d. ``inter_channels`` is 1, as in
    fast-reid (``reduc_ratio // reduc_ratio``). Keys ``g``, ``theta``, ``phi``, ``W.0``, ``W.1``.
    """

    def __init__(self, in_channels: int, inter_channels: int = 1) -> None:
        super().__init__()
        self.inter_channels = inter_channels
        self.g = nn.Conv2d(in_channels, inter_channels, 1)
        self.W = nn.Sequential(
            nn.Conv2d(inter_channels, in_channels, 1), nn.BatchNorm2d(in_channels)
        )
        nn.init.zeros_(self.W[1].weight)
        nn.init.zeros_(self.W[1].bias)
        self.theta = nn.Conv2d(in_channels, inter_channels, 1)
        self.phi = nn.Conv2d(in_channels, inter_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        g_x = self.g(x).flatten(2).transpose(1, 2)  # [N, HW, c]
        theta_x = self.theta(x).flatten(2).transpose(1, 2)  # [N, HW, c]
        phi_x = self.phi(x).flatten(2)  # [N, c, HW]
        f = torch.matmul(theta_x, phi_x) / (h * w)
        y = torch.matmul(f, g_x).transpose(1, 2).reshape(n, self.inter_channels, h, w)
        return self.W(y) + x


class ResNet(nn.Module):
    """fast-reid's ResNet trunk: returns the layer4 feature map ``[N, 2048, H/16, W/16]``
    (last stride 1) with optional IBN-a and non-local blocks."""

    def __init__(
        self,
        depth: int = 50,
        last_stride: int = 1,
        with_ibn: bool = False,
        with_nl: bool = False,
    ) -> None:
        super().__init__()
        layers = BLOCKS[depth]
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.layer1 = self._make_layer(64, layers[0], 1, with_ibn)
        self.layer2 = self._make_layer(128, layers[1], 2, with_ibn)
        self.layer3 = self._make_layer(256, layers[2], 2, with_ibn)
        self.layer4 = self._make_layer(512, layers[3], last_stride, False)
        self.nl_index: list[list[int]] = [[], [], [], []]
        if with_nl:
            for stage, (count, channels) in enumerate(
                zip(NL_LAYERS[depth], (256, 512, 1024, 2048), strict=True)
            ):
                if count:
                    setattr(
                        self,
                        f"NL_{stage + 1}",
                        nn.ModuleList(NonLocal(channels) for _ in range(count)),
                    )
                    self.nl_index[stage] = sorted(layers[stage] - (i + 1) for i in range(count))

    def _make_layer(self, planes: int, blocks: int, stride: int, with_ibn: bool) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * 4:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * 4, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * 4),
            )
        mods = [Bottleneck(self.inplanes, planes, with_ibn, stride, downsample)]
        self.inplanes = planes * 4
        mods += [Bottleneck(self.inplanes, planes, with_ibn) for _ in range(1, blocks)]
        return nn.Sequential(*mods)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for stage, layer in enumerate((self.layer1, self.layer2, self.layer3, self.layer4)):
            nl = self.nl_index[stage]
            for i, block in enumerate(layer):
                x = block(x)
                if i in nl:
                    x = getattr(self, f"NL_{stage + 1}")[nl.index(i)](x)
        return x


class GeM(nn.Module):
    """Generalised-mean pooling ``(mean(clamp(x, eps)^p))^(1/p)`` to ``[N, C, 1, 1]``.

    ``learn_p``: p is a parameter ``p`` of shape ``[1]`` (fast-reid's
    ``GeneralizedMeanPoolingP``); otherwise a fixed float with no state-dict key
    (``GeneralizedMeanPooling``).
    """

    def __init__(self, p: float = 3.0, eps: float = 1e-6, learn_p: bool = False) -> None:
        super().__init__()
        self.eps = eps
        self.learn_p = learn_p
        if learn_p:
            self.p = nn.Parameter(torch.ones(1) * p)
        else:
            self.p_value = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.p if self.learn_p else self.p_value
        x = x.clamp(min=self.eps).pow(p)
        return x.mean(dim=(2, 3), keepdim=True).pow(1.0 / p)


class AvgMaxPool(nn.Module):
    """Global average plus global max pooling, ``[N, C, 1, 1]``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3), keepdim=True) + x.amax(dim=(2, 3), keepdim=True)


def make_pool(kind: str) -> nn.Module:
    if kind == "avg":
        return nn.AdaptiveAvgPool2d(1)
    if kind == "max":
        return nn.AdaptiveMaxPool2d(1)
    if kind == "gem":
        return GeM(3.0)
    if kind == "gemp":
        return GeM(3.0, learn_p=True)
    if kind == "avgmax":
        return AvgMaxPool()
    raise UnknownNameError("pooling", kind, POOL_KINDS)


class EmbeddingHead(nn.Module):
    """fast-reid's ``EmbeddingHead`` in eval mode: pool, ``bottleneck`` (optional 1x1 conv to
    ``embedding_dim``, then the BNNeck ``BatchNorm2d``), ``[N, D]``."""

    def __init__(self, cfg: FastReIDConfig, feat_dim: int = 2048) -> None:
        super().__init__()
        self.pool_layer = make_pool(cfg.pool)
        neck: list[nn.Module] = []
        if cfg.embedding_dim > 0:
            neck.append(nn.Conv2d(feat_dim, cfg.embedding_dim, 1, bias=False))
            feat_dim = cfg.embedding_dim
        if cfg.with_bnneck:
            neck.append(nn.BatchNorm2d(feat_dim))
        self.bottleneck = nn.Sequential(*neck)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bottleneck(self.pool_layer(x)).flatten(1)


# --------------------------------------------------------------------------- networks


def _is_training_only(key: str) -> bool:
    """Classifier weights of fast-reid heads (``heads.weight``, ``heads.classifier.*``, ...)."""
    head, _, rest = key.partition(".")
    if not (head == "heads" or head.endswith("_head")):
        return False
    return rest == "weight" or rest.startswith(("classifier.", "cls_layer."))


class _FastReIDModule(nn.Module):
    output_names = ("feature",)

    def __init__(self, cfg: FastReIDConfig) -> None:
        super().__init__()
        self.cfg = cfg
        # what create_model / export read for the sidecar; updated from the checkpoint
        self.preprocess = cfg.preprocess()

    def remap_state_dict(self, sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Drop the training-only classifier; move ``pixel_mean`` / ``pixel_std`` into
        :attr:`preprocess` (0..1 scale). Other keys are kept, so a wrong file is reported with
        its real key names."""
        out: dict[str, torch.Tensor] = {}
        stats: dict[str, torch.Tensor] = {}
        for key, value in sd.items():
            if key in ("pixel_mean", "pixel_std"):
                stats[key] = value
            elif not _is_training_only(key):
                out[key] = value
        if stats:
            cfg = self.cfg
            if "pixel_mean" in stats:
                cfg = replace(cfg, pixel_mean=tuple(stats["pixel_mean"].flatten().tolist()))
            if "pixel_std" in stats:
                cfg = replace(cfg, pixel_std=tuple(stats["pixel_std"].flatten().tolist()))
            self.preprocess = cfg.preprocess()
        return out


class FastReIDBaseline(_FastReIDModule):
    """fast-reid ``Baseline`` (BagTricks, AGW, SBS): backbone, ``EmbeddingHead``.

    Input ``[N, 3, H, W]`` normalised RGB (see :attr:`preprocess`); output ``(feature,)``,
    ``[N, embedding_dim or 2048]``, the BNNeck output, not L2-normalised.
    """

    def __init__(self, cfg: FastReIDConfig) -> None:
        super().__init__(cfg)
        self.backbone = ResNet(cfg.depth, cfg.last_stride, cfg.with_ibn, cfg.with_nl)
        self.heads = EmbeddingHead(cfg)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        return (self.heads(self.backbone(x)),)


class FastReIDMGN(_FastReIDModule):
    """fast-reid ``MGN``: shared stem up to ``layer3[0]``, three branches (global; 2 and 3
    horizontal stripes), eight ``EmbeddingHead``s; the feature concatenates their outputs.

    Keys: ``backbone.{0,1,4,5,6}`` (conv1, bn1, layer1, layer2, layer3[0]), ``b{1,2,3}.0``
    (layer3[1:]), ``b1.1`` (layer4), ``b{2,3}.1`` (three stride-1 bottlenecks without IBN),
    ``b1_head``, ``b2_head``, ``b21_head``, ``b22_head``, ``b3_head``, ``b31_head`` ...
    Output ``(feature,)``, ``[N, 8 * (embedding_dim or 2048)]``.
    """

    HEADS = (
        "b1_head",
        "b2_head",
        "b3_head",
        "b21_head",
        "b22_head",
        "b31_head",
        "b32_head",
        "b33_head",
    )

    def __init__(self, cfg: FastReIDConfig) -> None:
        super().__init__(cfg)
        if cfg.with_nl:
            raise InputError("fast-reid MGN is built without non-local blocks (WITH_NL: False)")
        r = ResNet(cfg.depth, cfg.last_stride, cfg.with_ibn, False)
        self.backbone = nn.Sequential(
            r.conv1, r.bn1, r.relu, r.maxpool, r.layer1, r.layer2, r.layer3[0]
        )
        res_conv4 = nn.Sequential(*r.layer3[1:])
        part_conv5 = nn.Sequential(
            Bottleneck(
                1024,
                512,
                downsample=nn.Sequential(
                    nn.Conv2d(1024, 2048, 1, bias=False), nn.BatchNorm2d(2048)
                ),
            ),
            Bottleneck(2048, 512),
            Bottleneck(2048, 512),
        )
        self.b1 = nn.Sequential(copy.deepcopy(res_conv4), r.layer4)
        self.b2 = nn.Sequential(copy.deepcopy(res_conv4), copy.deepcopy(part_conv5))
        self.b3 = nn.Sequential(copy.deepcopy(res_conv4), copy.deepcopy(part_conv5))
        for name in self.HEADS:
            setattr(self, name, EmbeddingHead(cfg))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        f = self.backbone(x)
        b1, b2, b3 = self.b1(f), self.b2(f), self.b3(f)
        b21, b22 = torch.chunk(b2, 2, dim=2)
        b31, b32, b33 = torch.chunk(b3, 3, dim=2)
        parts = (b1, b2, b3, b21, b22, b31, b32, b33)
        return (
            torch.cat([getattr(self, n)(p) for n, p in zip(self.HEADS, parts, strict=True)], 1),
        )


def build_from_config(cfg: FastReIDConfig) -> _FastReIDModule:
    """The network for ``cfg``, in train mode (the caller loads weights and calls ``eval``)."""
    model: _FastReIDModule = FastReIDMGN(cfg) if cfg.meta_arch == "MGN" else FastReIDBaseline(cfg)
    _init(model)
    return model


def _init(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    for m in model.modules():
        if isinstance(m, NonLocal):  # zero-initialised residual branch, as in fast-reid
            nn.init.zeros_(m.W[1].weight)
            nn.init.zeros_(m.W[1].bias)


def build(name: str, num_classes: int | None = None) -> _FastReIDModule:
    """Build registered fast-reid model ``name``; ``num_classes`` is ignored (the classifier
    is training-only and not part of the test network)."""
    if name not in VARIANTS:
        raise UnknownNameError("fast-reid model", name, VARIANTS)
    return build_from_config(VARIANTS[name])


# --------------------------------------------------------------------------- key fit


def looks_like(sd: dict[str, Any]) -> bool:
    """Whether a state dict has fast-reid's layout (``backbone.conv1.weight`` or MGN's
    ``backbone.0.weight``, plus ``heads.*`` or ``b1_head.*`` keys)."""
    keys = set(sd)
    baseline = "backbone.conv1.weight" in keys and any(k.startswith("heads.") for k in keys)
    mgn = "backbone.0.weight" in keys and any(k.startswith("b1_head.") for k in keys)
    return baseline or mgn


def suggest_name(sd: dict[str, Any]) -> str | None:
    """The registered fast-reid model whose keys ``sd`` fits, or None if it is no fast-reid
    state dict (or fits none of the registered configurations: then use
    ``reidctl export fastreid --config``)."""
    if not looks_like(sd):
        return None
    own = {k for k in sd if k not in ("pixel_mean", "pixel_std") and not _is_training_only(k)}
    for name in VARIANTS:
        if own == _state_keys(name):
            return name
    return None


_KEYS: dict[str, frozenset[str]] = {}


def _state_keys(name: str) -> frozenset[str]:
    if name not in _KEYS:
        with torch.device("meta"):
            _KEYS[name] = frozenset(build_from_config(VARIANTS[name]).state_dict())
    return _KEYS[name]


def family_hint(sd: dict[str, Any], requested: str) -> str:
    """A sentence for a mismatch message when ``sd`` is a fast-reid file (else ``""``)."""
    if not looks_like(sd):
        return ""
    fit = suggest_name(sd)
    if fit and fit != requested:
        return f"\n  these are fast-reid keys; they fit the registered model {fit!r}"
    return (
        "\n  these are fast-reid keys (backbone.*, heads.*); export with "
        "`reidctl export fastreid --config <its config.yml> --weights <file>`"
    )
