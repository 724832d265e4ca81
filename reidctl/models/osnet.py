"""OSNet (Zhou et al., "Omni-Scale Feature Learning for Person Re-Identification", ICCV 2019).

Module structure and state-dict key names follow torchreid (KaiyangZhou/deep-person-reid,
``torchreid/models/osnet.py``) exactly, so torchreid model-zoo checkpoints load strictly:
``conv1.conv.weight``, ``conv2.0.conv1.conv.weight``, ``conv2.0.conv2a.conv1.weight``, ...,
``conv5.conv.weight``, ``fc.0.weight`` (512 x C), ``fc.1.running_var``, ``classifier.weight``.

The network returns one output, ``feature``: the 512-d output of the ``fc`` block (Linear,
BatchNorm1d, ReLU) after global average pooling, i.e. what torchreid returns in eval mode.
The identity classifier is kept only so that training checkpoints load strictly; it is not
part of the forward pass.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from reidctl.errors import UnknownNameError

# width multiplier -> channels of (conv1, conv2, conv3, conv4); every variant has 2 OSBlocks
# per stage and a 512-d fc layer.
CHANNELS: dict[str, tuple[int, int, int, int]] = {
    "osnet_x1_0": (64, 256, 384, 512),
    "osnet_x0_75": (48, 192, 288, 384),
    "osnet_x0_5": (32, 128, 192, 256),
    "osnet_x0_25": (16, 64, 96, 128),
}
LAYERS = (2, 2, 2)
FEATURE_DIM = 512


class ConvLayer(nn.Module):
    """Conv (no bias) + BatchNorm + ReLU; the 7x7 stem."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=False
        )
        self.bn = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(x)))


class Conv1x1(nn.Module):
    """1x1 conv + BatchNorm + ReLU."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(x)))


class Conv1x1Linear(nn.Module):
    """1x1 conv + BatchNorm, no non-linearity (block output and shortcut projections)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))


class LightConv3x3(nn.Module):
    """Pointwise 1x1 (linear) then depthwise 3x3, BatchNorm, ReLU."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.conv2 = nn.Conv2d(
            out_channels, out_channels, 3, padding=1, bias=False, groups=out_channels
        )
        self.bn = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv2(self.conv1(x))))


class ChannelGate(nn.Module):
    """Sigmoid channel gate (squeeze-excitation with reduction 16), shared by all streams."""

    def __init__(self, in_channels: int, reduction: int = 16) -> None:
        super().__init__()
        self.global_avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(in_channels, in_channels // reduction, 1, bias=True)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(in_channels // reduction, in_channels, 1, bias=True)
        self.gate_activation = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = self.fc2(self.relu(self.fc1(self.global_avgpool(x))))
        return x * self.gate_activation(g)


class OSBlock(nn.Module):
    """Omni-scale residual block: four streams of 1-4 LightConv3x3, fused by one gate."""

    def __init__(self, in_channels: int, out_channels: int, bottleneck_reduction: int = 4) -> None:
        super().__init__()
        mid = out_channels // bottleneck_reduction
        self.conv1 = Conv1x1(in_channels, mid)
        self.conv2a = LightConv3x3(mid, mid)
        self.conv2b = nn.Sequential(*(LightConv3x3(mid, mid) for _ in range(2)))
        self.conv2c = nn.Sequential(*(LightConv3x3(mid, mid) for _ in range(3)))
        self.conv2d = nn.Sequential(*(LightConv3x3(mid, mid) for _ in range(4)))
        self.gate = ChannelGate(mid)
        self.conv3 = Conv1x1Linear(mid, out_channels)
        self.downsample: nn.Module | None = None
        if in_channels != out_channels:
            self.downsample = Conv1x1Linear(in_channels, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        x1 = self.conv1(x)
        x2 = (
            self.gate(self.conv2a(x1))
            + self.gate(self.conv2b(x1))
            + self.gate(self.conv2c(x1))
            + self.gate(self.conv2d(x1))
        )
        return F.relu(self.conv3(x2) + identity)


class OSNet(nn.Module):
    """OSNet with torchreid's key names.

    Input: ``[N, 3, H, W]`` float32, normalised RGB (256 x 128 for the Market-1501 models).
    Output: a 1-tuple ``(feature,)`` with ``feature`` ``[N, 512]``, not L2-normalised.
    ``num_classes``: size of the identity classifier kept for strict checkpoint loading;
    ``None`` builds no classifier.
    """

    output_names = ("feature",)

    def __init__(
        self,
        channels: tuple[int, int, int, int],
        num_classes: int | None = None,
        layers: tuple[int, int, int] = LAYERS,
        feature_dim: int = FEATURE_DIM,
    ) -> None:
        super().__init__()
        self.conv1 = ConvLayer(3, channels[0], 7, stride=2, padding=3)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.conv2 = self._make_layer(layers[0], channels[0], channels[1], reduce_spatial=True)
        self.conv3 = self._make_layer(layers[1], channels[1], channels[2], reduce_spatial=True)
        self.conv4 = self._make_layer(layers[2], channels[2], channels[3], reduce_spatial=False)
        self.conv5 = Conv1x1(channels[3], channels[3])
        self.global_avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Sequential(
            nn.Linear(channels[3], feature_dim),
            nn.BatchNorm1d(feature_dim),
            nn.ReLU(inplace=True),
        )
        self.feature_dim = feature_dim
        self.classifier: nn.Linear | None = None
        if num_classes is not None:
            self.classifier = nn.Linear(feature_dim, num_classes)
        self._init_params()

    @staticmethod
    def _make_layer(
        blocks: int, in_channels: int, out_channels: int, reduce_spatial: bool
    ) -> nn.Sequential:
        mods: list[nn.Module] = [OSBlock(in_channels, out_channels)]
        mods += [OSBlock(out_channels, out_channels) for _ in range(1, blocks)]
        if reduce_spatial:
            # index ``blocks`` in the Sequential, as in torchreid (``conv2.2.0.conv.weight``)
            mods.append(nn.Sequential(Conv1x1(out_channels, out_channels), nn.AvgPool2d(2, 2)))
        return nn.Sequential(*mods)

    def _init_params(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def featuremaps(self, x: torch.Tensor) -> torch.Tensor:
        """The last feature map ``[N, C4, H/16, W/16]`` (C4 = 512 for x1.0)."""
        x = self.maxpool(self.conv1(x))
        return self.conv5(self.conv4(self.conv3(self.conv2(x))))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        v = self.global_avgpool(self.featuremaps(x)).flatten(1)
        return (self.fc(v),)


def num_classes(state_dict: dict[str, Any]) -> int | None:
    """Identity count of a torchreid checkpoint (rows of ``classifier.weight``), else None."""
    w = state_dict.get("classifier.weight")
    return int(w.shape[0]) if w is not None else None


def build(name: str, num_classes: int | None = None) -> OSNet:
    """Build OSNet variant ``name`` (``osnet_x1_0``, ``osnet_x0_75``, ``osnet_x0_5``,
    ``osnet_x0_25``), with an identity classifier of ``num_classes`` outputs if given."""
    if name not in CHANNELS:
        raise UnknownNameError("OSNet variant", name, CHANNELS)
    return OSNet(CHANNELS[name], num_classes=num_classes)
