"""TransReID (He et al., ICCV 2021): ViT backbone, side information embedding (SIE) and the
jigsaw patch module (JPM). Key names follow damo-cv/TransReID ``model/make_model.py`` and
``model/backbones/vit_pytorch.py``; the checkpoint is a bare state dict
(``torch.save(model.state_dict())``).

Forward pass (eval mode, ``TEST.NECK_FEAT: 'before'`` as in every released config):

* tokens = ``cat(cls_token, patch_embed(image))`` + ``pos_embed``
  + ``sie_coe * sie_embed[camera]`` (the SIE row is added to EVERY token);
* without JPM: all blocks, ``base.norm``, class token -> ``feature`` [N, D];
* with JPM (``b1.*``/``b2.*`` in the checkpoint): all blocks but the last; the global branch
  ``b1`` (a copy of the last block + norm) on every token gives ``global``; the patch tokens
  are shifted by ``shift`` and shuffled in ``groups`` (``shuffle_unit``), cut into pieces of
  ``N_patches // divide_length`` tokens, and the first four pieces, each with the class
  token, go through ``b2``; ``feature`` = ``cat(global, local_1/4, ..., local_4/4)`` [N, 5D].

The patch stride (16, or 12 for the overlapping "stride" models), JPM and the camera count
follow from the checkpoint (``pos_embed`` length, ``b2.*`` keys, ``sie_embed`` rows); the
SIE coefficient and JPM settings are not stored in it: defaults 3.0 / shift 5 / 2 groups /
divide length 4 (TransReID's defaults and released configs), set with :meth:`configure`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from reidctl.errors import CheckpointError, InputError, UnknownNameError
from reidctl.models.camera import (
    SieMode,
    check_config_facts,
    config_value,
    read_yaml_config,
)

PATCH = 16
HEIGHT, WIDTH = 256, 128
#: checkpoint prefixes not used at test time: the ImageNet head of the backbone and the ID
#: classifiers of the training loss
IGNORED_PREFIXES = ("base.fc.", "classifier")


@dataclass(frozen=True)
class Arch:
    """One ViT of ``vit_pytorch.py``: its factory's arguments."""

    embed_dim: int
    depth: int
    heads: int
    mlp_ratio: float
    qkv_bias: bool
    qk_scale: float | None  # None: head_dim ** -0.5
    factory: str
    # the random-initialised model (a checkpoint overrides these)
    stride: int = 16
    jpm: bool = False
    num_cameras: int = 0


ARCHS: dict[str, Arch] = {
    # vit_transreid.yml: ViT-B/16, SIE camera, JPM
    "transreid_vit_base": Arch(
        768, 12, 12, 4.0, True, None, "vit_base_patch16_224_TransReID", jpm=True, num_cameras=6
    ),
    # vit_small_patch16_224_TransReID: 768 wide, 8 blocks, 8 heads, mlp 3x, no qkv bias,
    # attention scale 768 ** -0.5 (timm's original small ViT)
    "transreid_vit_small": Arch(
        768, 8, 8, 3.0, False, 768**-0.5, "vit_small_patch16_224_TransReID"
    ),
    # deit_small_patch16_224_TransReID: 384 wide, 12 blocks, 6 heads (no JPM: the JPM model
    # of make_model.py keeps 768-wide BN necks, which a 384-wide DeiT-S cannot feed)
    "transreid_deit_small": Arch(384, 12, 6, 4.0, True, None, "deit_small_patch16_224_TransReID"),
}


def patch_grid(stride: int, height: int = HEIGHT, width: int = WIDTH) -> tuple[int, int]:
    """Rows and columns of 16x16 patches taken every ``stride`` pixels (PatchEmbed_overlap)."""
    return (height - PATCH) // stride + 1, (width - PATCH) // stride + 1


def stride_for_tokens(num_patches: int, height: int = HEIGHT, width: int = WIDTH) -> int | None:
    """The largest stride <= 16 whose patch grid has ``num_patches`` patches, or ``None``."""
    for s in range(PATCH, 0, -1):
        ny, nx = patch_grid(s, height, width)
        if ny * nx == num_patches:
            return s
    return None


def shuffle_unit(tokens: torch.Tensor, shift: int, groups: int) -> torch.Tensor:
    """JPM's shift and patch shuffle of ``tokens`` [B, 1 + N, D] -> [B, N', D].

    Shift: ``cat(tokens[:, shift:], tokens[:, 1:shift])`` (the class token is dropped, the
    first ``shift - 1`` patches move to the end). Shuffle: view as ``groups`` rows, transpose,
    flatten; when the length is not a multiple of ``groups`` the second-to-last token is
    appended once first (as the reference's fallback).
    """
    dim = tokens.shape[-1]
    x = torch.cat([tokens[:, shift:], tokens[:, 1:shift]], dim=1)
    length = x.shape[1]
    if length % groups:
        x = torch.cat([x, x[:, -2:-1]], dim=1)
        length += 1
    x = x.reshape(-1, groups, length // groups, dim).transpose(1, 2)
    return x.reshape(-1, length, dim)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Attention(nn.Module):
    """Multi-head self-attention with plain MatMul/Softmax ops (no fused attention)."""

    def __init__(self, dim: int, heads: int, qkv_bias: bool, qk_scale: float | None) -> None:
        super().__init__()
        self.heads = heads
        self.scale = qk_scale or (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, n, c = x.shape
        qkv = self.qkv(x).reshape(-1, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(-1, n, c))


class Block(nn.Module):
    def __init__(self, arch: Arch) -> None:
        super().__init__()
        d = arch.embed_dim
        self.norm1 = nn.LayerNorm(d, eps=1e-6)
        self.attn = Attention(d, arch.heads, arch.qkv_bias, arch.qk_scale)
        self.norm2 = nn.LayerNorm(d, eps=1e-6)
        self.mlp = Mlp(d, int(d * arch.mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    def __init__(self, dim: int, stride: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, dim, kernel_size=PATCH, stride=stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class TransReIDBackbone(nn.Module):
    """``base``: patch embedding, class token, positions, SIE table, blocks, final norm."""

    def __init__(self, arch: Arch, stride: int, num_cameras: int) -> None:
        super().__init__()
        d = arch.embed_dim
        ny, nx = patch_grid(stride)
        self.num_patches = ny * nx
        self.patch_embed = PatchEmbed(d, stride)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.num_patches + 1, d))
        if num_cameras > 0:
            self.sie_embed = nn.Parameter(torch.zeros(num_cameras, 1, d))
            nn.init.trunc_normal_(self.sie_embed, std=0.02)
        self.blocks = nn.ModuleList(Block(arch) for _ in range(arch.depth))
        self.norm = nn.LayerNorm(d, eps=1e-6)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)

    def embed(self, image: torch.Tensor, sie: torch.Tensor | None) -> torch.Tensor:
        """Tokens [B, 1 + N, D] with positions and (if given) the scaled SIE rows added."""
        x = self.patch_embed(image)
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        x = torch.cat((cls, x), dim=1) + self.pos_embed
        return x if sie is None else x + sie


class TransReID(nn.Module):
    """A TransReID test network; ``forward(image[, camera]) -> (feature,)``."""

    output_names = ("feature",)

    def __init__(self, name: str) -> None:
        super().__init__()
        self.model_name = name
        self.arch = ARCHS[name]
        self.sie = SieMode()
        self.shift, self.groups, self.divide_length = 5, 2, 4
        self.rearrange = True
        self.neck_feat = "before"
        self.ignored_keys: dict[str, int] = {}
        self._build(self.arch.stride, self.arch.jpm, self.arch.num_cameras)

    # ------------------------------------------------------------------ geometry
    def _build(self, stride: int, jpm: bool, num_cameras: int) -> None:
        a = self.arch
        self.stride, self.jpm, self.num_cameras = stride, jpm, num_cameras
        self.base = TransReIDBackbone(a, stride, num_cameras)
        for m in self.base.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        # make_model.py: BN necks of width in_planes (384 only for the plain DeiT-S model)
        planes = a.embed_dim
        self.bottleneck = nn.BatchNorm1d(planes)
        for i in range(1, 5):
            if hasattr(self, f"bottleneck_{i}"):
                delattr(self, f"bottleneck_{i}")
        for branch in ("b1", "b2"):
            if hasattr(self, branch):
                delattr(self, branch)
        if jpm:
            self.b1 = nn.Sequential(Block(a), nn.LayerNorm(a.embed_dim, eps=1e-6))
            self.b2 = nn.Sequential(Block(a), nn.LayerNorm(a.embed_dim, eps=1e-6))
            self.b1.load_state_dict(self._last_block_and_norm())
            self.b2.load_state_dict(self._last_block_and_norm())
            for i in range(1, 5):
                setattr(self, f"bottleneck_{i}", nn.BatchNorm1d(planes))
        self.train(self.training)

    def _last_block_and_norm(self) -> dict[str, torch.Tensor]:
        blk = {f"0.{k}": v for k, v in self.base.blocks[-1].state_dict().items()}
        blk.update({f"1.{k}": v for k, v in self.base.norm.state_dict().items()})
        return blk

    @property
    def takes_camera(self) -> bool:
        return self.sie.takes_camera(self.num_cameras)

    @property
    def output_shapes(self) -> dict[str, tuple[int, ...]]:
        d = self.arch.embed_dim
        return {"feature": (5 * d if self.jpm else d,)}

    def remap_state_dict(self, sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Drop the unused heads (listed in ``ignored_keys``) and shape the model to the
        checkpoint: stride from ``base.pos_embed``, JPM from ``b2.*``, cameras from
        ``base.sie_embed``."""
        keep, ignored = {}, {}
        for k, v in sd.items():
            prefix = next((p for p in IGNORED_PREFIXES if k.startswith(p)), None)
            if prefix is None:
                keep[k] = v
            else:
                label = "classifier*" if prefix == "classifier" else prefix + "*"
                ignored[label] = ignored.get(label, 0) + 1
        self.ignored_keys = dict(sorted(ignored.items()))
        pos = keep.get("base.pos_embed")
        if pos is None or pos.dim() != 3:
            return keep  # the key report names what is missing
        stride = stride_for_tokens(pos.shape[1] - 1)
        if stride is None:
            raise CheckpointError(
                f"base.pos_embed has {pos.shape[1] - 1} patch positions, which no 16x16 patch "
                f"stride gives at {HEIGHT}x{WIDTH} (stride 16: 128, stride 12: 210); the "
                f"checkpoint was trained at another input size, which {self.model_name} "
                "does not support"
            )
        jpm = any(k.startswith("b2.") for k in keep)
        if jpm and self.arch.embed_dim != 768:
            raise CheckpointError(
                f"{self.model_name}: the checkpoint has JPM branches (b1/b2), which "
                "TransReID builds only for 768-wide backbones"
            )
        sie = keep.get("base.sie_embed")
        cams = int(sie.shape[0]) if sie is not None and sie.dim() == 3 else 0
        if (stride, jpm, cams) != (self.stride, self.jpm, self.num_cameras):
            self._build(stride, jpm, cams)
        return keep

    # ------------------------------------------------------------------ options
    def configure(
        self,
        config: str | Path | None = None,
        sie_coe: float | None = None,
        jpm_shift: int | None = None,
        jpm_groups: int | None = None,
        jpm_divide: int | None = None,
        rearrange: bool | None = None,
        neck_feat: str | None = None,
        camera_agnostic: bool = False,
        sie_camera: int | None = None,
    ) -> dict[str, Any]:
        """Export settings: TransReID's YAML ``config`` first, then explicit values.

        Reads ``MODEL.SIE_COE``, ``SHIFT_NUM``, ``SHUFFLE_GROUP``, ``DEVIDE_LENGTH``,
        ``RE_ARRANGE`` and ``TEST.NECK_FEAT``; ``MODEL.JPM``, ``STRIDE_SIZE``,
        ``SIE_CAMERA``, ``TRANSFORMER_TYPE`` and ``INPUT.SIZE_TEST`` must agree with the
        weights. ``camera_agnostic`` drops the camera input: the SIE row ``sie_camera`` is
        added to every image, or none when ``None`` (a reidctl extension: TransReID's test
        code always passes the camera). Returns the effective settings.
        """
        if config is not None:
            cfg = read_yaml_config(config)

            def get(key: str) -> Any:
                return config_value(cfg, key)

            checks = {
                "MODEL.TRANSFORMER_TYPE": self.arch.factory,
                "MODEL.JPM": self.jpm,
                "MODEL.SIE_CAMERA": self.num_cameras > 0,
                "MODEL.STRIDE_SIZE": [self.stride, self.stride],
                "INPUT.SIZE_TEST": [HEIGHT, WIDTH],
            }
            check_config_facts(config, cfg, checks)
            sie_coe = sie_coe if sie_coe is not None else get("MODEL.SIE_COE")
            jpm_shift = jpm_shift if jpm_shift is not None else get("MODEL.SHIFT_NUM")
            jpm_groups = jpm_groups if jpm_groups is not None else get("MODEL.SHUFFLE_GROUP")
            jpm_divide = jpm_divide if jpm_divide is not None else get("MODEL.DEVIDE_LENGTH")
            rearrange = rearrange if rearrange is not None else get("MODEL.RE_ARRANGE")
            neck_feat = neck_feat if neck_feat is not None else get("TEST.NECK_FEAT")
        self.sie.set(self.model_name, self.num_cameras, sie_coe, camera_agnostic, sie_camera)
        if jpm_shift is not None:
            self.shift = int(jpm_shift)
        if jpm_groups is not None:
            self.groups = int(jpm_groups)
        if jpm_divide is not None:
            self.divide_length = int(jpm_divide)
        if rearrange is not None:
            self.rearrange = bool(rearrange)
        if neck_feat is not None:
            if neck_feat not in ("before", "after"):
                raise InputError(f"TEST.NECK_FEAT must be 'before' or 'after', got {neck_feat!r}")
            self.neck_feat = neck_feat
        if self.jpm:
            n = self.base.num_patches
            if not 1 <= self.shift < n or self.groups < 1 or not 1 <= self.divide_length <= 4:
                raise InputError(
                    f"JPM settings out of range: shift {self.shift} (1..{n - 1}), groups "
                    f"{self.groups} (>= 1), divide length {self.divide_length} (1..4)"
                )
            length = n + (1 if n % self.groups else 0)
            if self.rearrange and length % self.groups:
                raise InputError(
                    f"JPM: {n} patches cannot be shuffled in {self.groups} groups "
                    "(TransReID pads one token only)"
                )
        return self.settings()

    def settings(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "stride": self.stride,
            "jpm": self.jpm,
            "neck_feat": self.neck_feat,
        }
        if self.jpm:
            out.update(
                shift=self.shift,
                shuffle_groups=self.groups,
                divide_length=self.divide_length,
                rearrange=self.rearrange,
            )
        return out

    def camera_settings(self) -> dict[str, Any]:
        return self.sie.describe(self.num_cameras)

    # ------------------------------------------------------------------ forward
    def _sie(self, camera: torch.Tensor | None) -> torch.Tensor | None:
        if self.num_cameras == 0:
            return None
        c = self.sie.coefficient
        if self.sie.agnostic:
            k = self.sie.fixed_camera
            return None if k is None else c * self.base.sie_embed[k : k + 1]
        if camera is None:
            raise InputError(
                f"{self.model_name} takes a camera input (0..{self.num_cameras - 1}); "
                "pass it, or export with --camera-agnostic"
            )
        return c * self.base.sie_embed[camera]

    def forward(
        self, image: torch.Tensor, camera: torch.Tensor | None = None
    ) -> tuple[torch.Tensor]:
        """``image`` [B, 3, 256, 128] float32, ``camera`` [B] int64 -> ``(feature,)``."""
        x = self.base.embed(image, self._sie(camera))
        if not self.jpm:
            for blk in self.base.blocks:
                x = blk(x)
            g = self.base.norm(x)[:, 0]
            return (self.bottleneck(g) if self.neck_feat == "after" else g,)
        for blk in self.base.blocks[:-1]:
            x = blk(x)
        g = self.b1(x)[:, 0]
        piece = self.base.num_patches // self.divide_length
        token = x[:, 0:1]
        y = shuffle_unit(x, self.shift, self.groups) if self.rearrange else x[:, 1:]
        locals_ = [
            self.b2(torch.cat((token, y[:, i * piece : (i + 1) * piece]), dim=1))[:, 0]
            for i in range(4)
        ]
        if self.neck_feat == "after":
            g = self.bottleneck(g)
            locals_ = [getattr(self, f"bottleneck_{i + 1}")(f) for i, f in enumerate(locals_)]
        return (torch.cat([g] + [f / 4 for f in locals_], dim=1),)


def build(name: str, num_classes: int | None = None) -> TransReID:
    """A TransReID model; ``num_classes`` is not used (the ID classifiers are training-only)."""
    if name not in ARCHS:
        raise UnknownNameError("TransReID model", name, ARCHS)
    return TransReID(name)
