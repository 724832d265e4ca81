"""MobileNetV2 (Sandler et al. 2018) as in torchreid (``torchreid/models/mobilenetv2.py``).

Key names follow torchreid exactly: ``conv1.conv.weight``, ``conv1.bn.*``,
``conv2.0.conv1.conv.weight``, ``conv2.0.dwconv2.conv.weight``, ``conv2.0.conv3.0.weight``,
``conv2.0.conv3.1.*``, ..., ``conv9.conv.weight`` and the identity classifier
``classifier.weight`` / ``classifier.bias`` (kept so torchreid checkpoints load strictly;
not part of the test network). torchreid's model-zoo files are bare state dicts or
``{'state_dict': ..., 'epoch': ..., 'rank1': ..., 'optimizer': ...}``.

The feature is what torchreid returns in eval mode: the global average pool of ``conv9``
(ReLU6 output), 1280-d for x1.0 and ``int(1280 * 1.4)`` = 1792-d for x1.4 (no fc layers).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from reidctl.errors import UnknownNameError

WIDTHS: dict[str, float] = {"mobilenetv2_x1_0": 1.0, "mobilenetv2_x1_4": 1.4}
# (expansion t, channels c, blocks n, first stride s) of conv2 .. conv8
STAGES = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


class ConvBlock(nn.Module):
    """Conv (no bias) + BatchNorm + ReLU6."""

    def __init__(self, in_c: int, out_c: int, k: int, s: int = 1, p: int = 0, g: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_c, out_c, k, stride=s, padding=p, bias=False, groups=g)
        self.bn = nn.BatchNorm2d(out_c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu6(self.bn(self.conv(x)))


class Bottleneck(nn.Module):
    """Inverted residual: 1x1 expand, 3x3 depthwise, 1x1 linear projection (+ identity)."""

    def __init__(self, in_channels: int, out_channels: int, expansion: int, stride: int = 1):
        super().__init__()
        mid = in_channels * expansion
        self.use_residual = stride == 1 and in_channels == out_channels
        self.conv1 = ConvBlock(in_channels, mid, 1)
        self.dwconv2 = ConvBlock(mid, mid, 3, stride, 1, g=mid)
        self.conv3 = nn.Sequential(
            nn.Conv2d(mid, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.conv3(self.dwconv2(self.conv1(x)))
        return x + m if self.use_residual else m


class MobileNetV2(nn.Module):
    """torchreid's MobileNetV2. Input ``[N, 3, 256, 128]`` normalised RGB; output
    ``(feature,)``, ``[N, 1280]`` (x1.0) or ``[N, 1792]`` (x1.4), not L2-normalised."""

    output_names = ("feature",)

    def __init__(self, width_mult: float = 1.0, num_classes: int | None = None) -> None:
        super().__init__()
        self.in_channels = int(32 * width_mult)
        self.feature_dim = int(1280 * width_mult) if width_mult > 1 else 1280
        self.conv1 = ConvBlock(3, self.in_channels, 3, s=2, p=1)
        for i, (t, c, n, s) in enumerate(STAGES):
            setattr(self, f"conv{i + 2}", self._make_layer(t, int(c * width_mult), n, s))
        self.conv9 = ConvBlock(self.in_channels, self.feature_dim, 1)
        self.classifier: nn.Linear | None = None
        if num_classes is not None:
            self.classifier = nn.Linear(self.feature_dim, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _make_layer(self, t: int, c: int, n: int, s: int) -> nn.Sequential:
        layers = [Bottleneck(self.in_channels, c, t, s)]
        self.in_channels = c
        layers += [Bottleneck(c, c, t) for _ in range(1, n)]
        return nn.Sequential(*layers)

    def featuremaps(self, x: torch.Tensor) -> torch.Tensor:
        """``conv9`` output ``[N, feature_dim, H/32, W/32]``."""
        for i in range(1, 10):
            x = getattr(self, f"conv{i}")(x)
        return x

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        return (self.featuremaps(x).mean(dim=(2, 3)),)


def num_classes(state_dict: dict[str, Any]) -> int | None:
    """Identity count of a torchreid checkpoint (rows of ``classifier.weight``), else None."""
    w = state_dict.get("classifier.weight")
    return int(w.shape[0]) if w is not None else None


def build(name: str, num_classes: int | None = None) -> MobileNetV2:
    """Build ``mobilenetv2_x1_0`` or ``mobilenetv2_x1_4`` (classifier of ``num_classes``)."""
    if name not in WIDTHS:
        raise UnknownNameError("MobileNetV2 variant", name, WIDTHS)
    return MobileNetV2(WIDTHS[name], num_classes)
