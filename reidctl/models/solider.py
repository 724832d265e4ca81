"""SOLIDER-REID (Chen et al., CVPR 2023): Swin Transformer backbones pre-trained by SOLIDER
and fine-tuned for ReID at 384x128. Key names follow tinyvision/SOLIDER-REID
``model/make_model.py`` (``build_transformer``) and ``model/backbones/swin_transformer.py``
(the mmcv-style Swin: ``patch_embed.projection``, ``stages.N.blocks.M.attn.w_msa``,
``ffn.layers``, ``downsample.reduction``, ``norm0..3``, ``semantic_embed_w/b``); the
checkpoint is a bare state dict (``torch.save(model.state_dict())``, ``module.`` when
trained with DistributedDataParallel), the backbone under ``base.``.

Test forward pass (eval mode, ``TEST.NECK_FEAT: 'before'`` as in every released config):

* patch embedding: 4x4 convolution with stride 4 (the input padded bottom/right to a
  multiple of 4), LayerNorm; 384x128 gives a 96x32 map;
* four stages of Swin blocks (LayerNorm eps 1e-5, exact GELU): even blocks attend within
  7x7 windows, odd blocks within windows shifted by 3 (``torch.roll`` by -3, the attention
  mask -100 between tokens of different regions, rolled back); each map is padded
  bottom/right with zeros to a multiple of 7 first and cropped after (the window stays 7
  even where the map is narrower, as in the reference). Attention: ``softmax(q k^T /
  sqrt(head_dim) + B + mask) v`` with ``B`` from ``relative_position_bias_table``;
* patch merging after stages 0..2: 2x2 neighbourhoods concatenated channel-major (the
  order of ``nn.Unfold``: channel ``c`` of offsets (0,0), (0,1), (1,0), (1,1)),
  LayerNorm, ``reduction`` (no bias);
* semantic modulation after stages 0..2: with ``w = [s, 1 - s]`` (``s`` the semantic
  weight), ``x = x * softplus(semantic_embed_w[i](w)) + semantic_embed_b[i](w)`` on the
  merged map that feeds the next stage. After the last stage the reference modulates a copy
  that nothing reads, so ``semantic_embed_*.3`` does not change the feature;
* ``feature`` = mean over the tokens of ``norm3(stage 3 output)`` [N, 768] (tiny, small)
  or [N, 1024] (base); ``fcneck`` (``MODEL.REDUCE_FEAT_DIM``) follows when the checkpoint
  has it, and with ``neck_feat='after'`` the BN neck ``bottleneck``.

The semantic weight is not stored in the checkpoint: default 0.2, the value of
SOLIDER-REID's released runs (``run.sh``, README), set with :meth:`configure`
(``--semantic-weight``, or ``MODEL.SEMANTIC_WEIGHT`` of its YAML config) and recorded in
the sidecar. The ONNX graph has one input (``image``): the Swin model takes no camera.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from reidctl.errors import InputError, UnknownNameError
from reidctl.models.camera import check_config_facts, config_value, read_yaml_config

HEIGHT, WIDTH = 384, 128
PATCH = 4
WINDOW = 7
#: the value of SOLIDER-REID's released train and test commands
DEFAULT_SEMANTIC_WEIGHT = 0.2
#: the ID classifier of the training loss, not used at test time
IGNORED_PREFIXES = ("classifier",)
#: the mask value between tokens of different regions in a shifted window
MASK_VALUE = -100.0


@dataclass(frozen=True)
class Arch:
    """One Swin of ``swin_transformer.py``'s factories."""

    embed_dim: int
    depths: tuple[int, int, int, int]
    heads: tuple[int, int, int, int]
    factory: str

    @property
    def widths(self) -> tuple[int, ...]:
        """Channels of each stage: ``embed_dim * 2**i``."""
        return tuple(self.embed_dim * 2**i for i in range(len(self.depths)))


ARCHS: dict[str, Arch] = {
    "solider_swin_tiny": Arch(96, (2, 2, 6, 2), (3, 6, 12, 24), "swin_tiny_patch4_window7_224"),
    "solider_swin_small": Arch(96, (2, 2, 18, 2), (3, 6, 12, 24), "swin_small_patch4_window7_224"),
    "solider_swin_base": Arch(128, (2, 2, 18, 2), (4, 8, 16, 32), "swin_base_patch4_window7_224"),
}


def relative_position_index(window: int) -> torch.Tensor:
    """``[window**2, window**2]`` int64: the row of the bias table for each token pair,
    ``(dh + window - 1) * (2 * window - 1) + (dw + window - 1)`` with ``dh``, ``dw`` the
    row and column offsets of the query from the key."""
    rows, cols = np.divmod(np.arange(window * window), window)
    dh = rows[:, None] - rows[None, :] + window - 1
    dw = cols[:, None] - cols[None, :] + window - 1
    return torch.from_numpy((dh * (2 * window - 1) + dw).astype(np.int64))


def shift_mask(height: int, width: int, window: int, shift: int) -> torch.Tensor:
    """``[num_windows, window**2, window**2]`` float32 additive mask of the shifted windows
    of a ``height`` x ``width`` map (multiples of ``window``): 0 within a region, -100
    between tokens of the regions the cyclic shift brings together."""
    region = np.zeros((height, width), np.float32)
    bounds = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
    label = 0
    for rs in bounds:
        for cs in bounds:
            region[rs, cs] = label
            label += 1
    win = region.reshape(height // window, window, width // window, window)
    win = win.transpose(0, 2, 1, 3).reshape(-1, window * window)
    mask = np.where(win[:, None, :] != win[:, :, None], MASK_VALUE, 0.0).astype(np.float32)
    return torch.from_numpy(mask)


class WindowMSA(nn.Module):
    """``w_msa``: multi-head attention within windows, relative position bias."""

    def __init__(self, dim: int, heads: int, window: int) -> None:
        super().__init__()
        self.heads = heads
        self.window = window
        self.scale = (dim // heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, heads))
        # a persistent buffer in the reference, so its checkpoints hold it
        self.register_buffer("relative_position_index", relative_position_index(window))
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """``x`` [B * nW, N, C] (N = window**2), ``mask`` [nW, N, N] or ``None``."""
        _, n, c = x.shape
        qkv = self.qkv(x).reshape(-1, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = (q * self.scale) @ k.transpose(-2, -1)
        bias = self.relative_position_bias_table[self.relative_position_index.reshape(-1)]
        attn = attn + bias.reshape(n, n, self.heads).permute(2, 0, 1).unsqueeze(0)
        if mask is not None:
            nw = mask.shape[0]
            attn = attn.reshape(-1, nw, self.heads, n, n) + mask.unsqueeze(1).unsqueeze(0)
            attn = attn.reshape(-1, self.heads, n, n)
        attn = attn.softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(-1, n, c))


class ShiftWindowMSA(nn.Module):
    """``attn``: pad to whole windows, cyclic shift, window attention, undo both."""

    def __init__(self, dim: int, heads: int, window: int, shift: int) -> None:
        super().__init__()
        self.window, self.shift = window, shift
        self.w_msa = WindowMSA(dim, heads, window)
        self._masks: dict[tuple[int, int], torch.Tensor] = {}

    def _mask(self, height: int, width: int, device: torch.device) -> torch.Tensor:
        key = (height, width)
        if key not in self._masks:
            self._masks[key] = shift_mask(height, width, self.window, self.shift)
        return self._masks[key].to(device)

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        """``x`` [B, H*W, C] -> [B, H*W, C]; ``hw`` = (H, W) as Python ints."""
        h, w = hw
        c = int(x.shape[-1])
        ws = self.window
        x = x.reshape(-1, h, w, c)
        pad_b, pad_r = (ws - h % ws) % ws, (ws - w % ws) % ws
        if pad_b or pad_r:
            x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
        hp, wp = h + pad_b, w + pad_r
        mask = None
        if self.shift:
            x = torch.roll(x, shifts=(-self.shift, -self.shift), dims=(1, 2))
            mask = self._mask(hp, wp, x.device)
        windows = x.reshape(-1, hp // ws, ws, wp // ws, ws, c).permute(0, 1, 3, 2, 4, 5)
        out = self.w_msa(windows.reshape(-1, ws * ws, c), mask)
        out = out.reshape(-1, hp // ws, wp // ws, ws, ws, c).permute(0, 1, 3, 2, 4, 5)
        out = out.reshape(-1, hp, wp, c)
        if self.shift:
            out = torch.roll(out, shifts=(self.shift, self.shift), dims=(1, 2))
        if pad_b or pad_r:
            out = out[:, :h, :w, :]
        return out.reshape(-1, h * w, c)


class FFN(nn.Module):
    """``ffn``: ``layers.0.0`` (Linear C -> 4C), GELU, ``layers.1`` (Linear 4C -> C)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Sequential(nn.Linear(dim, hidden), nn.GELU()), nn.Linear(hidden, dim)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class SwinBlock(nn.Module):
    def __init__(self, dim: int, heads: int, window: int, shift: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = ShiftWindowMSA(dim, heads, window, shift)
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = FFN(dim, 4 * dim)

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), hw)
        return x + self.ffn(self.norm2(x))


class PatchMerging(nn.Module):
    """``downsample``: 2x2 neighbourhoods, channel-major (``nn.Unfold``'s order), padded
    bottom/right to even sides; LayerNorm(4C), ``reduction`` 4C -> 2C."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> tuple[torch.Tensor, tuple[int, int]]:
        h, w = hw
        c = int(x.shape[-1])
        x = x.reshape(-1, h, w, c)
        if h % 2 or w % 2:
            x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2))
            h, w = h + h % 2, w + w % 2
        # [B, H/2, 2, W/2, 2, C] -> [B, H/2, W/2, C, 2, 2]: index c * 4 + 2 * dy + dx
        x = x.reshape(-1, h // 2, 2, w // 2, 2, c).permute(0, 1, 3, 5, 2, 4)
        x = x.reshape(-1, (h // 2) * (w // 2), 4 * c)
        return self.reduction(self.norm(x)), (h // 2, w // 2)


class SwinStage(nn.Module):
    def __init__(self, dim: int, depth: int, heads: int, downsample: bool) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            SwinBlock(dim, heads, WINDOW, 0 if i % 2 == 0 else WINDOW // 2) for i in range(depth)
        )
        self.downsample = PatchMerging(dim) if downsample else None

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        for blk in self.blocks:
            x = blk(x, hw)
        return x


class PatchEmbed(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.projection = nn.Conv2d(3, dim, kernel_size=PATCH, stride=PATCH)
        self.norm = nn.LayerNorm(dim)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        h, w = int(image.shape[2]), int(image.shape[3])
        pad_b, pad_r = (PATCH - h % PATCH) % PATCH, (PATCH - w % PATCH) % PATCH
        if pad_b or pad_r:
            image = F.pad(image, (0, pad_r, 0, pad_b))
        x = self.projection(image)
        hw = ((h + pad_b) // PATCH, (w + pad_r) // PATCH)
        return self.norm(x.flatten(2).transpose(1, 2)), hw


class SwinBackbone(nn.Module):
    """``base``: the Swin Transformer of SOLIDER-REID with its semantic embeddings."""

    def __init__(self, arch: Arch, semantic: bool) -> None:
        super().__init__()
        widths = arch.widths
        last = len(arch.depths) - 1
        self.patch_embed = PatchEmbed(arch.embed_dim)
        self.stages = nn.ModuleList(
            SwinStage(widths[i], arch.depths[i], arch.heads[i], i < last)
            for i in range(len(arch.depths))
        )
        for i, width in enumerate(widths):
            self.add_module(f"norm{i}", nn.LayerNorm(width))
        if semantic:
            # one per stage, as wide as the merged map it modulates (stage 3's width for
            # the last two: the reference clamps the index)
            dims = [widths[min(i + 1, last)] for i in range(len(widths))]
            self.semantic_embed_w = nn.ModuleList(nn.Linear(2, d) for d in dims)
            self.semantic_embed_b = nn.ModuleList(nn.Linear(2, d) for d in dims)
        self.num_features = widths[-1]

    def forward(self, image: torch.Tensor, semantic: torch.Tensor | None) -> torch.Tensor:
        """``image`` [B, 3, H, W], ``semantic`` [1, 2] = ``[s, 1 - s]`` or ``None`` ->
        pooled feature [B, C]."""
        x, hw = self.patch_embed(image)
        last = len(self.stages) - 1
        for i, stage in enumerate(self.stages):
            x = stage(x, hw)
            if i == last:
                break
            x, hw = stage.downsample(x, hw)
            if semantic is not None:
                scale = F.softplus(self.semantic_embed_w[i](semantic)).unsqueeze(1)
                x = x * scale + self.semantic_embed_b[i](semantic).unsqueeze(1)
        return getattr(self, f"norm{last}")(x).mean(dim=1)


class SoliderReID(nn.Module):
    """A SOLIDER-REID Swin test network; ``forward(image) -> (feature,)``."""

    output_names = ("feature",)
    num_cameras = 0
    takes_camera = False

    def __init__(self, name: str) -> None:
        super().__init__()
        self.model_name = name
        self.arch = ARCHS[name]
        self.neck_feat = "before"
        self.semantic_weight: float | None = DEFAULT_SEMANTIC_WEIGHT
        self.ignored_keys: dict[str, int] = {}
        self.register_buffer("semantic_input", torch.zeros(1, 2), persistent=False)
        self._build(semantic=True, reduced_dim=None)

    def _build(self, semantic: bool, reduced_dim: int | None) -> None:
        self.semantic, self.reduced_dim = semantic, reduced_dim
        self.base = SwinBackbone(self.arch, semantic)
        for m in self.base.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        for blk in self.base.modules():
            if isinstance(blk, WindowMSA):
                nn.init.trunc_normal_(blk.relative_position_bias_table, std=0.02)
        planes = self.base.num_features
        if hasattr(self, "fcneck"):
            delattr(self, "fcneck")
        if reduced_dim is not None:
            self.fcneck = nn.Linear(planes, reduced_dim, bias=False)
            nn.init.xavier_uniform_(self.fcneck.weight)
            planes = reduced_dim
        self.bottleneck = nn.BatchNorm1d(planes)
        if not semantic:
            self.semantic_weight = None
        elif self.semantic_weight is None:
            self.semantic_weight = DEFAULT_SEMANTIC_WEIGHT
        self._set_semantic_input()
        self.train(self.training)

    def _set_semantic_input(self) -> None:
        s = 0.0 if self.semantic_weight is None else self.semantic_weight
        with torch.no_grad():
            self.semantic_input.copy_(torch.tensor([[s, 1.0 - s]]))

    @property
    def feature_dim(self) -> int:
        return self.reduced_dim if self.reduced_dim is not None else self.base.num_features

    @property
    def output_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"feature": (self.feature_dim,)}

    def remap_state_dict(self, sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Drop the ID classifier (listed in ``ignored_keys``); shape the model to the
        checkpoint: semantic embeddings from ``base.semantic_embed_w.*`` (absent when
        trained with a negative ``MODEL.SEMANTIC_WEIGHT``), ``fcneck`` from
        ``fcneck.weight``."""
        keep, ignored = {}, {}
        for k, v in sd.items():
            if k.startswith(IGNORED_PREFIXES):
                ignored["classifier*"] = ignored.get("classifier*", 0) + 1
            else:
                keep[k] = v
        self.ignored_keys = dict(sorted(ignored.items()))
        semantic = any(k.startswith("base.semantic_embed_w.") for k in keep)
        fc = keep.get("fcneck.weight")
        reduced = int(fc.shape[0]) if fc is not None and fc.dim() == 2 else None
        if (semantic, reduced) != (self.semantic, self.reduced_dim):
            self._build(semantic, reduced)
        return keep

    def configure(
        self,
        config: str | Path | None = None,
        semantic_weight: float | None = None,
        neck_feat: str | None = None,
    ) -> dict[str, Any]:
        """Export settings: SOLIDER-REID's YAML ``config`` first, then explicit values.

        Reads ``MODEL.SEMANTIC_WEIGHT`` and ``TEST.NECK_FEAT``; ``MODEL.TRANSFORMER_TYPE``,
        ``MODEL.REDUCE_FEAT_DIM`` (and ``MODEL.FEAT_DIM``) and ``INPUT.SIZE_TEST``, which the
        weights fix, must agree with them. Returns the effective settings.
        """
        if config is not None:
            cfg = read_yaml_config(config)

            def get(key: str) -> Any:
                return config_value(cfg, key)

            checks = {
                "MODEL.TRANSFORMER_TYPE": self.arch.factory,
                "INPUT.SIZE_TEST": [HEIGHT, WIDTH],
                "MODEL.REDUCE_FEAT_DIM": self.reduced_dim is not None,
            }
            if self.reduced_dim is not None:
                checks["MODEL.FEAT_DIM"] = self.reduced_dim
            check_config_facts(config, cfg, checks)
            if semantic_weight is None:
                semantic_weight = get("MODEL.SEMANTIC_WEIGHT")
            neck_feat = neck_feat if neck_feat is not None else get("TEST.NECK_FEAT")
        if semantic_weight is not None:
            s = float(semantic_weight)
            if not math.isfinite(s):
                raise InputError(f"the semantic weight must be a finite number, got {s}")
            if not self.semantic:
                if s >= 0:
                    raise InputError(
                        f"{self.model_name}: these weights have no semantic embeddings "
                        "(trained with MODEL.SEMANTIC_WEIGHT < 0), so the semantic weight "
                        "cannot be set; drop --semantic-weight"
                    )
            elif s < 0:
                raise InputError(
                    f"{self.model_name}: the semantic weight must be >= 0 for weights with "
                    f"semantic embeddings, got {s:g} (SOLIDER-REID's runs use 0.2)"
                )
            else:
                self.semantic_weight = s
                self._set_semantic_input()
        if neck_feat is not None:
            if neck_feat not in ("before", "after"):
                raise InputError(f"TEST.NECK_FEAT must be 'before' or 'after', got {neck_feat!r}")
            self.neck_feat = neck_feat
        return self.settings()

    def settings(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "semantic_weight": self.semantic_weight,
            "neck_feat": self.neck_feat,
        }
        if self.reduced_dim is not None:
            out["feat_dim"] = self.reduced_dim
        return out

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor]:
        """``image`` [B, 3, 384, 128] float32 -> ``(feature,)`` [B, D]."""
        semantic = self.semantic_input if self.semantic else None
        g = self.base(image, semantic)
        if self.reduced_dim is not None:
            g = self.fcneck(g)
        return (self.bottleneck(g) if self.neck_feat == "after" else g,)


def build(name: str, num_classes: int | None = None) -> SoliderReID:
    """A SOLIDER-REID model; ``num_classes`` is not used (the ID classifier is
    training-only)."""
    if name not in ARCHS:
        raise UnknownNameError("SOLIDER-REID model", name, ARCHS)
    return SoliderReID(name)
