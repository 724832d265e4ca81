"""Centroids-ReID (Wieczorek et al. 2021, mikwieczorek/centroids-reid), ResNet-50 variant.

The network is the BoT baseline: a ResNet-50 trunk with last stride 1 and *no ReLU after
the stem BatchNorm* (the reference's ``modelling/backbones/resnet.py`` leaves it commented
out, and its weights were trained that way), global average pooling to 2048-d, then the
BNNeck ``bn`` (BatchNorm1d, bias frozen during training). The retrieval feature is the
BNNeck output, as in the reference's ``inference/inference_utils.py``
(``model.bn(model.backbone(x)[1])``).

Checkpoints: the PyTorch Lightning ``.ckpt`` files of ``train_ctl_model.py`` hold
``{'state_dict': {...}, 'epoch': ..., 'hyper_parameters': {...}, ...}`` with keys
``backbone.base.conv1.weight``, ..., ``bn.weight``, ``bn.running_var``, and the
training-only heads ``fc_query.weight`` (identity classifier) and ``center_loss.centers``.
:meth:`CentroidsReID.remap_state_dict` renames ``backbone.base.*`` to ``base.*`` and drops
the heads. reid-strong-baseline (BoT) checkpoints, whose BNNeck is ``bottleneck.*`` and
classifier ``classifier.*``, load the same way.

Output, for an input ``[N, 3, 256, 128]``: ``feature`` ``[N, 2048]`` (not L2-normalised).
"""

from __future__ import annotations

import torch
from torch import nn

from reidctl.models.resnet import resnet50

EMBEDDING_DIM = 2048
# Heads used only by the training losses; inference never reads them.
_TRAINING_HEADS = ("fc_query.", "center_loss.", "classifier.", "xent.", "contrastive_loss.")


class CentroidsReID(nn.Module):
    """ResNet-50 (last stride 1, no stem ReLU) + GAP + BNNeck; returns ``(feature,)``."""

    output_names = ("feature",)

    def __init__(self) -> None:
        super().__init__()
        self.base = resnet50(last_stride=1)
        self.bn = nn.BatchNorm1d(EMBEDDING_DIM)
        self.bn.bias.requires_grad_(False)

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        """Last feature map ``[N, 2048, H/16, W/16]``, skipping the stem ReLU like the reference."""
        b = self.base
        x = b.maxpool(b.bn1(b.conv1(x)))
        return b.layer4(b.layer3(b.layer2(b.layer1(x))))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        return (self.bn(self.trunk(x).mean(dim=(2, 3))),)

    @staticmethod
    def remap_state_dict(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Lightning (``backbone.base.*``) or BoT (``bottleneck.*``) names to this module's.

        Keys that match no known pattern are kept unchanged so that a wrong checkpoint is
        reported with its real key names.
        """
        out: dict[str, torch.Tensor] = {}
        for key, value in sd.items():
            if key.startswith(_TRAINING_HEADS):
                continue
            if key.startswith("backbone.base."):
                key = key[len("backbone.") :]
            elif key.startswith("bottleneck."):
                key = "bn." + key[len("bottleneck.") :]
            out[key] = value
        return out


def build(name: str, num_classes: int | None = None) -> CentroidsReID:
    """Build Centroids-ReID; ``num_classes`` is ignored (the classifier is training-only)."""
    return CentroidsReID()
