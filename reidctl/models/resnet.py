"""ResNet backbones with torchvision's state-dict key names (``conv1.weight``,
``layer1.0.conv1.weight``, ``layer4.2.bn3.running_var``, ...), so torchvision and
ReID-project checkpoints load unchanged. Written here because no CPU torchvision exists."""

from __future__ import annotations

import torch
from torch import nn


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        width = planes
        self.conv1 = nn.Conv2d(inplanes, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        # stride on the 3x3 conv (torchvision's "ResNet v1.5")
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or inplanes != planes * self.expansion:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes * self.expansion, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * self.expansion),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """ResNet trunk without pooling or classifier: returns the last feature map [N, C, h, w].

    ``last_stride=1`` keeps layer4 at 1/16 resolution (BoT / Centroids-ReID); 2 is standard.
    """

    def __init__(self, layers: tuple[int, int, int, int] = (3, 4, 6, 3), last_stride: int = 2):
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = self._make_layer(64, layers[0], 1)
        self.layer2 = self._make_layer(128, layers[1], 2)
        self.layer3 = self._make_layer(256, layers[2], 2)
        self.layer4 = self._make_layer(512, layers[3], last_stride)
        self.out_channels = 512 * Bottleneck.expansion
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _make_layer(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        mods = [Bottleneck(self.inplanes, planes, stride)]
        self.inplanes = planes * Bottleneck.expansion
        mods += [Bottleneck(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*mods)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


def resnet50(last_stride: int = 2) -> ResNet:
    return ResNet((3, 4, 6, 3), last_stride=last_stride)


class ResNetEmbedder(nn.Module):
    """Plain ResNet-50 embedder: global average pool of the last feature map (2048-d).

    Loads a torchvision ResNet-50 state dict (its ``fc.*`` classifier is dropped) or one saved
    from this module (keys under ``base.``).
    """

    output_names = ("feature",)

    def __init__(self) -> None:
        super().__init__()
        self.base = resnet50()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        return (self.base(x).mean(dim=(2, 3)),)

    @staticmethod
    def remap_state_dict(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """torchvision checkpoints keep the trunk at the top level; here it is under ``base.``."""
        if any(k.startswith("base.") for k in sd):
            return sd
        return {f"base.{k}": v for k, v in sd.items() if not k.startswith("fc.")}


def build_embedder(name: str, num_classes: int | None = None) -> ResNetEmbedder:
    return ResNetEmbedder()
