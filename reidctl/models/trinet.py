"""TriNet (Hermans, Beyer and Leibe, "In Defense of the Triplet Loss for Person
Re-Identification", 2017): the test-time network DAAF-ReID uses.

ResNet-50 (last stride 2, torchvision layout) -> global average pool (2048) -> Linear 1024
-> BatchNorm1d -> ReLU -> Linear 128. Output ``embedding`` ``[N, 128]``, compared with the
Euclidean distance and not L2-normalised (the paper's setting).

Key names here: ``base.*`` (the trunk, torchvision names), ``fc1.*``, ``bn1.*``, ``fc2.*``.
:meth:`TriNet.remap_state_dict` also loads the PyTorch port kilianyp/triplet-reid-pytorch
(``models/trinet.py``), which subclasses torchvision's ResNet: trunk keys at the top level
(``conv1.weight``, ``layer1.0.conv1.weight``) and the head as ``fc = Sequential(Linear,
BatchNorm1d, ReLU, Linear)``, i.e. ``fc.0.*``, ``fc.1.*``, ``fc.3.*``. That port pools with
a fixed ``AvgPool2d((8, 4))``, the same as global pooling at its 256 x 128 input.
"""

from __future__ import annotations

import torch
from torch import nn

from reidctl.models.resnet import resnet50

HIDDEN_DIM = 1024
EMBEDDING_DIM = 128
_TRUNK_PREFIXES = ("conv1.", "bn1.", "layer1.", "layer2.", "layer3.", "layer4.")
_HEAD_RENAMES = {"fc.0.": "fc1.", "fc.1.": "bn1.", "fc.3.": "fc2."}


class TriNet(nn.Module):
    """TriNet embedder; returns ``(embedding,)`` with ``embedding`` ``[N, 128]``."""

    output_names = ("embedding",)

    def __init__(self, embedding_dim: int = EMBEDDING_DIM) -> None:
        super().__init__()
        self.base = resnet50(last_stride=2)
        self.fc1 = nn.Linear(self.base.out_channels, HIDDEN_DIM)
        self.bn1 = nn.BatchNorm1d(HIDDEN_DIM)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Linear(HIDDEN_DIM, embedding_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        v = self.base(x).mean(dim=(2, 3))
        return (self.fc2(self.relu(self.bn1(self.fc1(v)))),)

    @staticmethod
    def remap_state_dict(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """triplet-reid-pytorch names (top-level trunk, ``fc.0/1/3``) to this module's.

        A state dict already in this module's names passes through unchanged; unknown keys
        are kept so the mismatch report shows them.
        """
        if any(k.startswith("base.") for k in sd):
            return sd
        out: dict[str, torch.Tensor] = {}
        for key, value in sd.items():
            for old, new in _HEAD_RENAMES.items():
                if key.startswith(old):
                    key = new + key[len(old) :]
                    break
            else:
                if key.startswith(_TRUNK_PREFIXES):
                    key = "base." + key
            out[key] = value
        return out


def build(name: str, num_classes: int | None = None) -> TriNet:
    """Build TriNet; ``num_classes`` is ignored (TriNet has no classifier)."""
    return TriNet()
