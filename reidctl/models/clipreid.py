"""CLIP-ReID (Li et al., AAAI 2023): the CLIP image encoder fine-tuned for ReID. Key names
follow Syliz517/CLIP-ReID ``model/make_model_clipreid.py`` (``build_transformer``) and
``model/clip/model.py``; the checkpoint is a bare state dict
(``torch.save(model.state_dict())``), which also holds the text side (``text_encoder.*``,
``prompt_learner.*``) and the ID classifiers: all dropped by name, as the test pass does not
use them.

Test forward pass (eval mode, ``TEST.NECK_FEAT: 'before'`` as in the released configs):

* ``clipreid_vit_b16``: CLIP ViT-B/16 (QuickGELU, LayerNorm eps 1e-5, 12 heads) with its
  position grid for 256x128 (16x8 patches, 129 positions; 21x10 with the overlapping
  stride 12); SIE ``sie_coe * cv_embed[camera]`` is added to the CLASS TOKEN ONLY, before the
  positions (TransReID adds it to every token); ``feature`` =
  ``cat(ln_post(x)[:, 0], ln_post(x)[:, 0] @ proj)`` [N, 768 + 512 = 1280].
* ``clipreid_rn50``: CLIP's modified ResNet-50 (3-conv stem, anti-aliased strides, layer 4
  with stride 1) and its attention pooling (the mean token attends over the 16x8 map, 32
  heads); ``feature`` = ``cat(avgpool(layer4), attnpool(layer4))`` [N, 2048 + 1024 = 3072].
  The RN50 forward takes no camera (a ``cv_embed`` in the checkpoint is unused).

``cam_label=None`` (no SIE) is CLIP-ReID's own path for the camera-agnostic export.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from reidctl.errors import CheckpointError, InputError, UnknownNameError
from reidctl.models.camera import (
    SieMode,
    check_config_agrees,
    check_config_facts,
    config_value,
    read_yaml_config,
)
from reidctl.models.transreid import HEIGHT, PATCH, WIDTH, patch_grid, stride_for_tokens

TEXT_PREFIXES = ("text_encoder.", "prompt_learner.", "classifier")


def _drop(
    sd: dict[str, torch.Tensor], prefixes: tuple[str, ...]
) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
    """Split ``sd`` into kept keys and ``{prefix*: count}`` of the dropped ones."""
    keep, ignored = {}, {}
    for k, v in sd.items():
        prefix = next((p for p in prefixes if k.startswith(p)), None)
        if prefix is None:
            keep[k] = v
        else:
            label = k if k == prefix else prefix + "*"
            ignored[label] = ignored.get(label, 0) + 1
    return keep, dict(sorted(ignored.items()))


def _neck_from_config(config: str | Path, name: str, stride: int | None) -> dict[str, Any]:
    cfg = read_yaml_config(config)
    checks: dict[str, Any] = {"MODEL.NAME": name, "INPUT.SIZE_TEST": [HEIGHT, WIDTH]}
    if stride is not None:
        checks["MODEL.STRIDE_SIZE"] = [stride, stride]
    check_config_facts(config, cfg, checks)
    return {
        "sie_coe": config_value(cfg, "MODEL.SIE_COE"),
        "neck_feat": config_value(cfg, "TEST.NECK_FEAT"),
        "sie_camera_flag": config_value(cfg, "MODEL.SIE_CAMERA"),
    }


def _check_neck(neck_feat: str) -> str:
    if neck_feat not in ("before", "after"):
        raise InputError(f"TEST.NECK_FEAT must be 'before' or 'after', got {neck_feat!r}")
    return neck_feat


class QuickGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class SelfAttention(nn.Module):
    """``nn.MultiheadAttention``'s parameters (``in_proj_*``, ``out_proj``), computed with
    plain MatMul/Softmax ops on [B, L, D] (batch first)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        nn.init.normal_(self.in_proj_weight, std=dim**-0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, n, c = x.shape
        h = self.heads
        qkv = nn.functional.linear(x, self.in_proj_weight, self.in_proj_bias)
        q, k, v = qkv.reshape(-1, n, 3, h, c // h).permute(2, 0, 3, 1, 4)
        attn = ((q @ k.transpose(-2, -1)) * (c // h) ** -0.5).softmax(dim=-1)
        return self.out_proj((attn @ v).transpose(1, 2).reshape(-1, n, c))


class ResidualAttentionBlock(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.attn = SelfAttention(dim, heads)
        self.ln_1 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(
            OrderedDict(
                [
                    ("c_fc", nn.Linear(dim, dim * 4)),
                    ("gelu", QuickGELU()),
                    ("c_proj", nn.Linear(dim * 4, dim)),
                ]
            )
        )
        self.ln_2 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, dim: int, layers: int, heads: int) -> None:
        super().__init__()
        self.resblocks = nn.Sequential(*[ResidualAttentionBlock(dim, heads) for _ in range(layers)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.resblocks(x)


class VisionTransformer(nn.Module):
    """``image_encoder`` of the ViT-B/16 model: 768 wide, 12 layers, 12 heads, 512-d proj."""

    def __init__(self, stride: int, width: int = 768, layers: int = 12, out_dim: int = 512):
        super().__init__()
        ny, nx = patch_grid(stride)
        self.conv1 = nn.Conv2d(3, width, kernel_size=PATCH, stride=stride, bias=False)
        scale = width**-0.5
        self.class_embedding = nn.Parameter(scale * torch.randn(width))
        self.positional_embedding = nn.Parameter(scale * torch.randn(ny * nx + 1, width))
        self.ln_pre = nn.LayerNorm(width)
        self.transformer = Transformer(width, layers, width // 64)
        self.ln_post = nn.LayerNorm(width)
        self.proj = nn.Parameter(scale * torch.randn(width, out_dim))

    def forward(
        self, image: torch.Tensor, cls_sie: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Class token after ``ln_post`` [B, 768] and its projection [B, 512]."""
        x = self.conv1(image).flatten(2).transpose(1, 2)
        cls = self.class_embedding.expand(x.shape[0], 1, -1)
        if cls_sie is not None:
            cls = cls + cls_sie.reshape(-1, 1, cls_sie.shape[-1])
        x = torch.cat([cls, x], dim=1) + self.positional_embedding
        x = self.transformer(self.ln_pre(x))
        token = self.ln_post(x[:, 0])
        return token, token @ self.proj


class CLIPReIDViT(nn.Module):
    """``clipreid_vit_b16``: ``forward(image[, camera]) -> (feature,)``, feature [N, 1280]."""

    output_names = ("feature",)
    output_shapes: ClassVar[dict[str, tuple[int, ...]]] = {"feature": (1280,)}

    def __init__(self, stride: int = 16, num_cameras: int = 6) -> None:
        super().__init__()
        self.model_name = "clipreid_vit_b16"
        self.sie = SieMode()
        self.neck_feat = "before"
        self.ignored_keys: dict[str, int] = {}
        self._build(stride, num_cameras)

    def _build(self, stride: int, num_cameras: int) -> None:
        self.stride, self.num_cameras = stride, num_cameras
        self.image_encoder = VisionTransformer(stride)
        if hasattr(self, "cv_embed"):
            del self.cv_embed
        if num_cameras > 0:
            self.cv_embed = nn.Parameter(torch.zeros(num_cameras, 768))
            nn.init.trunc_normal_(self.cv_embed, std=0.02)
        self.bottleneck = nn.BatchNorm1d(768)
        self.bottleneck_proj = nn.BatchNorm1d(512)
        self.train(self.training)

    @property
    def takes_camera(self) -> bool:
        return self.sie.takes_camera(self.num_cameras)

    def remap_state_dict(self, sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Drop the text side and classifiers; stride from the position table, cameras from
        ``cv_embed``."""
        keep, self.ignored_keys = _drop(sd, TEXT_PREFIXES)
        pos = keep.get("image_encoder.positional_embedding")
        if pos is None or pos.dim() != 2:
            return keep
        stride = stride_for_tokens(pos.shape[0] - 1)
        if stride is None:
            raise CheckpointError(
                f"image_encoder.positional_embedding has {pos.shape[0] - 1} patch positions, "
                f"which no 16x16 patch stride gives at {HEIGHT}x{WIDTH} (stride 16: 128); the "
                "checkpoint was trained at another input size"
            )
        cv = keep.get("cv_embed")
        cams = int(cv.shape[0]) if cv is not None and cv.dim() == 2 else 0
        if (stride, cams) != (self.stride, self.num_cameras):
            self._build(stride, cams)
        return keep

    def configure(
        self,
        config: str | Path | None = None,
        sie_coe: float | None = None,
        neck_feat: str | None = None,
        camera_agnostic: bool = False,
        sie_camera: int | None = None,
    ) -> dict[str, Any]:
        """Export settings: CLIP-ReID's YAML ``config`` (``MODEL.SIE_COE``,
        ``TEST.NECK_FEAT``; ``MODEL.NAME``, ``STRIDE_SIZE``, ``SIE_CAMERA`` and
        ``INPUT.SIZE_TEST`` must agree with the weights), then explicit values.
        ``camera_agnostic`` is CLIP-ReID's ``cam_label=None`` (no SIE); ``sie_camera`` K adds
        row K to every image instead (a reidctl extension)."""
        if config is not None:
            got = _neck_from_config(config, "ViT-B-16", self.stride)
            check_config_agrees(
                config, "MODEL.SIE_CAMERA", got["sie_camera_flag"], self.num_cameras > 0
            )
            sie_coe = sie_coe if sie_coe is not None else got["sie_coe"]
            neck_feat = neck_feat if neck_feat is not None else got["neck_feat"]
        self.sie.set(self.model_name, self.num_cameras, sie_coe, camera_agnostic, sie_camera)
        if neck_feat is not None:
            self.neck_feat = _check_neck(neck_feat)
        return {"stride": self.stride, "neck_feat": self.neck_feat}

    def camera_settings(self) -> dict[str, Any]:
        return self.sie.describe(self.num_cameras)

    def _cls_sie(self, camera: torch.Tensor | None) -> torch.Tensor | None:
        if self.num_cameras == 0:
            return None
        c = self.sie.coefficient
        if self.sie.agnostic:
            k = self.sie.fixed_camera
            return None if k is None else c * self.cv_embed[k : k + 1]
        if camera is None:
            raise InputError(
                f"{self.model_name} takes a camera input (0..{self.num_cameras - 1}); "
                "pass it, or export with --camera-agnostic"
            )
        return c * self.cv_embed[camera]

    def forward(
        self, image: torch.Tensor, camera: torch.Tensor | None = None
    ) -> tuple[torch.Tensor]:
        """``image`` [B, 3, 256, 128] float32, ``camera`` [B] int64 -> ``(feature,)``."""
        feat, proj = self.image_encoder(image, self._cls_sie(camera))
        if self.neck_feat == "after":
            feat, proj = self.bottleneck(feat), self.bottleneck_proj(proj)
        return (torch.cat([feat, proj], dim=1),)


# ------------------------------------------------------------------------------ RN50


class Bottleneck(nn.Module):
    """CLIP's bottleneck: stride by an average pool after conv2 (and before the
    downsampling convolution)."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.avgpool = nn.AvgPool2d(stride) if stride > 1 else nn.Identity()
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU()
        self.downsample = None
        if stride > 1 or inplanes != planes * 4:
            self.downsample = nn.Sequential(
                OrderedDict(
                    [
                        ("-1", nn.AvgPool2d(stride) if stride > 1 else nn.Identity()),
                        ("0", nn.Conv2d(inplanes, planes * 4, 1, bias=False)),
                        ("1", nn.BatchNorm2d(planes * 4)),
                    ]
                )
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(self.avgpool(out)))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class AttentionPool2d(nn.Module):
    """CLIP's attention pooling, the output at the mean token only (the one CLIP-ReID uses):
    the mean of the map is prepended, positions added, and it attends over all positions."""

    def __init__(self, positions: int, dim: int, heads: int, out_dim: int) -> None:
        super().__init__()
        self.positional_embedding = nn.Parameter(torch.randn(positions + 1, dim) / dim**0.5)
        self.k_proj = nn.Linear(dim, dim)
        self.q_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.c_proj = nn.Linear(dim, out_dim)
        self.heads = heads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C, H, W] -> [B, out_dim]."""
        c, h = x.shape[1], self.heads
        t = x.flatten(2).transpose(1, 2)  # [B, HW, C]
        t = torch.cat([t.mean(dim=1, keepdim=True), t], dim=1) + self.positional_embedding
        n = t.shape[1]
        q = self.q_proj(t[:, :1]).reshape(-1, 1, h, c // h).transpose(1, 2)  # [B, h, 1, d]
        k = self.k_proj(t).reshape(-1, n, h, c // h).transpose(1, 2)  # [B, h, L, d]
        v = self.v_proj(t).reshape(-1, n, h, c // h).transpose(1, 2)
        attn = ((q @ k.transpose(-2, -1)) * (c // h) ** -0.5).softmax(dim=-1)
        return self.c_proj((attn @ v).reshape(-1, c))


class ModifiedResNet(nn.Module):
    """``image_encoder`` of the RN50 model, layer 4 with stride 1 (CLIP-ReID's change)."""

    def __init__(self, layers: tuple[int, ...] = (3, 4, 6, 3), width: int = 64) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, width // 2, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width // 2)
        self.conv2 = nn.Conv2d(width // 2, width // 2, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width // 2)
        self.conv3 = nn.Conv2d(width // 2, width, 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(width)
        self.avgpool = nn.AvgPool2d(2)
        self.relu = nn.ReLU()
        self._inplanes = width
        self.layer1 = self._make_layer(width, layers[0])
        self.layer2 = self._make_layer(width * 2, layers[1], stride=2)
        self.layer3 = self._make_layer(width * 4, layers[2], stride=2)
        self.layer4 = self._make_layer(width * 8, layers[3], stride=1)
        positions = (HEIGHT // 16) * (WIDTH // 16)
        self.attnpool = AttentionPool2d(positions, width * 32, width * 32 // 64, 1024)

    def _make_layer(self, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        layers = [Bottleneck(self._inplanes, planes, stride)]
        self._inplanes = planes * 4
        layers += [Bottleneck(self._inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """layer-4 map average [B, 2048] and attention-pooled projection [B, 1024]."""
        for conv, bn in ((self.conv1, self.bn1), (self.conv2, self.bn2), (self.conv3, self.bn3)):
            x = self.relu(bn(conv(x)))
        x = self.avgpool(x)
        x = self.layer3(self.layer2(self.layer1(x)))
        x4 = self.layer4(x)
        return x4.mean(dim=(2, 3)), self.attnpool(x4)


class CLIPReIDRN50(nn.Module):
    """``clipreid_rn50``: ``forward(image) -> (feature,)``, feature [N, 3072]."""

    output_names = ("feature",)
    output_shapes: ClassVar[dict[str, tuple[int, ...]]] = {"feature": (3072,)}
    num_cameras = 0
    takes_camera = False

    def __init__(self) -> None:
        super().__init__()
        self.model_name = "clipreid_rn50"
        self.neck_feat = "before"
        self.ignored_keys: dict[str, int] = {}
        self.image_encoder = ModifiedResNet()
        self.bottleneck = nn.BatchNorm1d(2048)
        self.bottleneck_proj = nn.BatchNorm1d(1024)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def remap_state_dict(self, sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Drop the text side, classifiers and an (unused) ``cv_embed``."""
        keep, self.ignored_keys = _drop(sd, (*TEXT_PREFIXES, "cv_embed"))
        return keep

    def configure(self, config: str | Path | None = None, neck_feat: str | None = None):
        """``TEST.NECK_FEAT`` from CLIP-ReID's YAML ``config`` or ``neck_feat``."""
        if config is not None:
            got = _neck_from_config(config, "RN50", None)
            neck_feat = neck_feat if neck_feat is not None else got["neck_feat"]
        if neck_feat is not None:
            self.neck_feat = _check_neck(neck_feat)
        return {"neck_feat": self.neck_feat}

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor]:
        """``image`` [B, 3, 256, 128] float32 -> ``(feature,)`` [B, 3072]."""
        feat, proj = self.image_encoder(image)
        if self.neck_feat == "after":
            feat, proj = self.bottleneck(feat), self.bottleneck_proj(proj)
        return (torch.cat([feat, proj], dim=1),)


def build(name: str, num_classes: int | None = None) -> nn.Module:
    """A CLIP-ReID image network; ``num_classes`` is not used (the classifiers and the
    text side are training-only)."""
    if name == "clipreid_vit_b16":
        return CLIPReIDViT()
    if name == "clipreid_rn50":
        return CLIPReIDRN50()
    raise UnknownNameError("CLIP-ReID model", name, ["clipreid_rn50", "clipreid_vit_b16"])
