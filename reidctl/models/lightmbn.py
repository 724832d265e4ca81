"""LightMBN ``LMBN_n`` (jixunbo/LightMBN ``model/lmbn_n.py``; also in boxmot's zoo).

An OSNet x1.0 trunk (torchreid's blocks, :mod:`reidctl.models.osnet`) shared up to
``conv3[0]`` (key prefix ``backone.``, spelt so in LightMBN), then three branches of
``conv3[1:]``, ``conv4``, ``conv5`` (``global_branch``, ``partial_branch``,
``channel_branch``), 384 x 128 input:

* global: an extra OSBlock (``batch_drop_block.drop_batch_bottleneck``; in eval mode the
  Top-DropBlock drops nothing, so both "glo" and "glo_drop" are its output), average-pooled
  -> ``reduction_0``, max-pooled -> ``reduction_4``;
* partial: max-pooled -> ``reduction_1``; average-pooled to 2 horizontal stripes ->
  ``reduction_2``, ``reduction_3``;
* channel: average-pooled, split into two 256-channel halves, each through ``shared``
  (1x1 conv to 512, BN, ReLU) -> ``reduction_ch_0``, ``reduction_ch_1``.

``reduction_0..4`` are ``BNNeck3`` (1x1 conv 512->512 ``reduction``, BatchNorm1d ``bn``,
classifier), ``reduction_ch_*`` are ``BNNeck`` (``bn``, classifier). The test output of
LMBN_n is ``torch.stack([glo, glo_drop, p0, p1, p2, c0, c1], dim=2)`` of the BN outputs,
``[N, 512, 7]``; LightMBN's evaluation and boxmot flatten it to ``[N, 3584]`` (element
``c * 7 + branch``). That flattened vector is the ``feature`` here. (LightMBN's own test
also adds the flipped image's output and L2-normalises each of the 7 columns before
flattening; reidctl's ``l2_normalize`` normalises the whole vector.)

Checkpoints: ``model-latest.pth`` = ``{'state_dict': ..., 'epoch', 'rank1', 'optimizer',
...}``, ``model-best.pth`` = the bare state dict; the classifiers (``*.classifier.weight``)
are training-only and dropped.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from reidctl.errors import UnknownNameError
from reidctl.models.osnet import CHANNELS, OSBlock, OSNet

FEATS = 512
BRANCHES = 7


class BNNeck3(nn.Module):
    """1x1 conv ``reduction`` then BatchNorm1d ``bn``: ``[N, C, 1, 1]`` -> ``[N, feats]``."""

    def __init__(self, in_dim: int = 512, feats: int = FEATS) -> None:
        super().__init__()
        self.reduction = nn.Conv2d(in_dim, feats, 1, bias=False)
        self.bn = nn.BatchNorm1d(feats)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.reduction(x).flatten(1))


class BNNeck(nn.Module):
    """BatchNorm1d ``bn``: ``[N, C, 1, 1]`` -> ``[N, C]``."""

    def __init__(self, feats: int = FEATS) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(feats)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(x.flatten(1))


class _DropBlock(nn.Module):
    """Top-DropBlock's parameters (an OSBlock); in eval mode it only runs that block."""

    def __init__(self) -> None:
        super().__init__()
        self.drop_batch_bottleneck = OSBlock(512, 512)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop_batch_bottleneck(x)


class LMBN_n(nn.Module):
    """LightMBN ``LMBN_n``. Input ``[N, 3, 384, 128]`` normalised RGB; output ``(feature,)``,
    ``[N, 3584]`` (the ``[N, 512, 7]`` branch stack flattened), not L2-normalised."""

    output_names = ("feature",)

    def __init__(self) -> None:
        super().__init__()
        osnet = OSNet(CHANNELS["osnet_x1_0"])
        self.backone = nn.Sequential(osnet.conv1, osnet.maxpool, osnet.conv2, osnet.conv3[0])
        conv3 = osnet.conv3[1:]
        for branch in ("global_branch", "partial_branch", "channel_branch"):
            setattr(
                self,
                branch,
                nn.Sequential(
                    copy.deepcopy(conv3), copy.deepcopy(osnet.conv4), copy.deepcopy(osnet.conv5)
                ),
            )
        for i in range(5):
            setattr(self, f"reduction_{i}", BNNeck3())
        self.shared = nn.Sequential(
            nn.Conv2d(256, FEATS, 1, bias=False), nn.BatchNorm2d(FEATS), nn.ReLU(True)
        )
        self.reduction_ch_0 = BNNeck()
        self.reduction_ch_1 = BNNeck()
        self.batch_drop_block = _DropBlock()

    def branches(self, x: torch.Tensor) -> torch.Tensor:
        """The eval output of LightMBN's ``LMBN_n``: ``[N, 512, 7]``."""
        x = self.backone(x)
        glo = self.batch_drop_block(self.global_branch(x))
        par = self.partial_branch(x)
        cha = self.channel_branch(x).mean(dim=(2, 3), keepdim=True)
        glo_avg = glo.mean(dim=(2, 3), keepdim=True)
        glo_max = glo.amax(dim=(2, 3), keepdim=True)
        par_max = par.amax(dim=(2, 3), keepdim=True)
        stripes = nn.functional.adaptive_avg_pool2d(par, (2, 1))
        feats = [
            self.reduction_0(glo_avg),
            self.reduction_4(glo_max),
            self.reduction_1(par_max),
            self.reduction_2(stripes[:, :, 0:1]),
            self.reduction_3(stripes[:, :, 1:2]),
            self.reduction_ch_0(self.shared(cha[:, :256])),
            self.reduction_ch_1(self.shared(cha[:, 256:])),
        ]
        return torch.stack(feats, dim=2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        return (self.branches(x).flatten(1),)

    @staticmethod
    def remap_state_dict(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Drop the training-only classifiers (``reduction_*.classifier.weight``)."""
        return {k: v for k, v in sd.items() if not k.endswith("classifier.weight")}


def looks_like(sd: dict[str, object]) -> bool:
    """Whether a state dict has LightMBN's layout (``backone.*`` and ``reduction_ch_0.*``)."""
    return any(k.startswith("backone.") for k in sd) and any(
        k.startswith("reduction_ch_0.") for k in sd
    )


def build(name: str, num_classes: int | None = None) -> LMBN_n:
    """Build ``lmbn_n``; ``num_classes`` is ignored (classifiers are training-only)."""
    if name != "lmbn_n":
        raise UnknownNameError("LightMBN variant", name, ["lmbn_n"])
    return LMBN_n()
