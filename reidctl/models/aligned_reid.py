"""AlignedReID (Zhang et al. 2017) as trained by huanghoujing/AlignedReID-Re-Production-Pytorch.

Same modules and key names as that project's ``aligned_reid/model/Model.py``: a ResNet-50
trunk ``base`` (last stride 2, torchvision key names: ``base.conv1.weight``,
``base.layer4.2.bn3.running_var``), ``local_conv`` (1x1 conv 2048 -> 128, with bias),
``local_bn`` (BatchNorm2d 128) and, when the checkpoint has one, the identity classifier
``fc`` (Linear 2048 -> num_classes). Its ``ckpt.pth`` (``{'state_dicts': [model_sd,
optimizer_sd], 'ep': int, 'scores': ndarray}``) and bare ``model_weight.pth`` state dicts
both load; :func:`reidctl.models.loading.extract_state_dict` unwraps the container.

Outputs, for an input ``[N, 3, 256, 128]``:

* ``global_feat`` ``[N, 2048]``: global *average* pool of the last feature map;
* ``local_feat`` ``[N, 8, 128]``: the map averaged over its width (one vector per horizontal
  stripe, 8 stripes at 256 px height), then ``local_conv``, ``local_bn``, ReLU;
* ``logits`` ``[N, num_classes]``: only when the model has ``fc``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from reidctl.models.resnet import resnet50

LOCAL_CHANNELS = 128
GLOBAL_CHANNELS = 2048


class AlignedReID(nn.Module):
    """AlignedReID network; ``output_names`` is ``(global_feat, local_feat[, logits])``."""

    def __init__(
        self, num_classes: int | None = None, local_conv_out_channels: int = LOCAL_CHANNELS
    ) -> None:
        super().__init__()
        self.base = resnet50(last_stride=2)
        self.local_conv = nn.Conv2d(GLOBAL_CHANNELS, local_conv_out_channels, 1)
        self.local_bn = nn.BatchNorm2d(local_conv_out_channels)
        self.local_relu = nn.ReLU(inplace=True)
        self.fc: nn.Linear | None = None
        if num_classes is not None:
            self.fc = nn.Linear(GLOBAL_CHANNELS, num_classes)
            nn.init.normal_(self.fc.weight, std=0.001)
            nn.init.zeros_(self.fc.bias)
        self.output_names: tuple[str, ...] = ("global_feat", "local_feat") + (
            ("logits",) if self.fc is not None else ()
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        feat = self.base(x)  # [N, 2048, H/32, W/32]
        global_feat = feat.mean(dim=(2, 3))
        local = self.local_relu(self.local_bn(self.local_conv(feat.mean(dim=3, keepdim=True))))
        local_feat = local.squeeze(3).permute(0, 2, 1)  # [N, stripes, 128]
        if self.fc is None:
            return global_feat, local_feat
        return global_feat, local_feat, self.fc(global_feat)


def num_classes(state_dict: dict[str, Any]) -> int | None:
    """Rows of ``fc.weight`` (training identities), or None for a checkpoint without ``fc``."""
    w = state_dict.get("fc.weight")
    return int(w.shape[0]) if w is not None else None


def build(name: str, num_classes: int | None = None) -> AlignedReID:
    """Build AlignedReID; with ``num_classes`` it has the ``fc`` classifier and ``logits``."""
    return AlignedReID(num_classes=num_classes)
