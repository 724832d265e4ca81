"""torchreid MobileNetV2 and LightMBN LMBN_n: checkpoint files, key names, forward passes.

The references are written from the projects' code with functional ops / numpy on the
checkpoint tensors, not with reidctl's modules (LightMBN's OSNet trunks are torchreid's
blocks, checked against torchreid by the real OSNet checkpoint test; its heads are
recomputed here).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from reidctl.errors import CheckpointError
from reidctl.models import lightmbn, mobilenetv2
from reidctl.models.loading import create_model

NUM_CLASSES = 9


def random_state(module: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """Seeded random weights with randomised BatchNorm statistics, the module's key names."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for k, v in module.state_dict().items():
        if k.endswith("num_batches_tracked"):
            sd[k] = torch.tensor(7)
        elif k.endswith("running_var"):
            sd[k] = torch.rand(v.shape, generator=g) * 0.5 + 0.5
        elif k.endswith("running_mean"):
            sd[k] = torch.randn(v.shape, generator=g) * 0.1
        elif v.dim() == 4:
            sd[k] = torch.randn(v.shape, generator=g) * (1.0 / v[0].numel()) ** 0.5
        elif k.endswith("bn.weight") or (".bn" in k and k.endswith("weight")):
            sd[k] = torch.rand(v.shape, generator=g) * 0.5 + 0.75
        else:
            sd[k] = torch.randn(v.shape, generator=g) * 0.1
    return sd


def _bn(x, sd, p):
    return F.batch_norm(
        x,
        sd[p + "running_mean"],
        sd[p + "running_var"],
        sd[p + "weight"],
        sd[p + "bias"],
        training=False,
        eps=1e-5,
    )


# --------------------------------------------------------------------------- MobileNetV2


def reference_mobilenetv2(x: torch.Tensor, sd: dict[str, torch.Tensor]) -> torch.Tensor:
    """torchreid's MobileNetV2 forward in eval mode, from the state dict."""

    def block(x, p, stride=1, groups=1):
        w = sd[p + "conv.weight"]
        pad = w.shape[-1] // 2
        return F.relu6(
            _bn(F.conv2d(x, w, stride=stride, padding=pad, groups=groups), sd, p + "bn.")
        )

    x = block(x, "conv1.", stride=2)
    for stage, (_, _, n, s) in enumerate(mobilenetv2.STAGES):
        for i in range(n):
            p = f"conv{stage + 2}.{i}."
            stride = s if i == 0 else 1
            m = block(x, p + "conv1.")
            mid = m.shape[1]
            m = block(m, p + "dwconv2.", stride=stride, groups=mid)
            m = _bn(F.conv2d(m, sd[p + "conv3.0.weight"]), sd, p + "conv3.1.")
            x = x + m if stride == 1 and x.shape[1] == m.shape[1] else m
    x = block(x, "conv9.")
    return x.mean(dim=(2, 3))


@pytest.mark.parametrize(("name", "dim"), [("mobilenetv2_x1_0", 1280), ("mobilenetv2_x1_4", 1792)])
def test_mobilenetv2_torchreid_checkpoint_and_forward(tmp_path: Path, name: str, dim: int) -> None:
    sd = random_state(mobilenetv2.build(name, NUM_CLASSES), seed=1)
    ckpt = {
        "state_dict": {f"module.{k}": v for k, v in sd.items()},  # saved from DataParallel
        "epoch": 60,
        "rank1": 0.85,
        "optimizer": {"state": {}, "param_groups": [{"lr": 3e-4, "params": []}]},
    }
    path = tmp_path / "model.pth.tar-60"
    torch.save(ckpt, path)
    loaded = create_model(name, weights=path)
    assert loaded.num_classes == NUM_CLASSES
    assert loaded.module.state_dict().keys() == sd.keys()
    x = torch.randn(2, 3, 256, 128, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        (feat,) = loaded.module(x)
    ref = reference_mobilenetv2(x, sd)
    assert feat.shape == (2, dim)
    assert (feat - ref).abs().max() <= 1e-4 * ref.abs().max()
    # key names of torchreid (torchreid/models/mobilenetv2.py)
    assert "conv2.0.dwconv2.conv.weight" in sd and "conv8.0.conv3.1.running_var" in sd
    assert tuple(sd["conv9.conv.weight"].shape)[:2] == (dim, 448 if dim == 1792 else 320)


# --------------------------------------------------------------------------- LightMBN


def _bn1d_numpy(v: np.ndarray, sd: dict[str, torch.Tensor], p: str) -> np.ndarray:
    m, var = sd[p + "running_mean"].double().numpy(), sd[p + "running_var"].double().numpy()
    w, b = sd[p + "weight"].double().numpy(), sd[p + "bias"].double().numpy()
    return (v - m) / np.sqrt(var + 1e-5) * w + b


def reference_lmbn_heads(glo, par, cha, sd) -> np.ndarray:
    """LMBN_n's eval heads in numpy, from the three branch maps ([N, 512, h, w] each,
    ``glo`` after the drop block's OSBlock): the [N, 512, 7] stack, flattened."""
    glo, par, cha = (t.double().numpy() for t in (glo, par, cha))

    def bnneck3(v, p):  # 1x1 conv then BatchNorm1d
        return _bn1d_numpy(
            v @ sd[p + "reduction.weight"].double().numpy()[:, :, 0, 0].T, sd, p + "bn."
        )

    h = par.shape[2]
    stripes = [par[:, :, : h // 2].mean(axis=(2, 3)), par[:, :, h // 2 :].mean(axis=(2, 3))]
    c = cha.mean(axis=(2, 3))
    ws = sd["shared.0.weight"].double().numpy()[:, :, 0, 0]

    def shared(v):
        return np.maximum(_bn1d_numpy(v @ ws.T, sd, "shared.1."), 0)

    feats = [
        bnneck3(glo.mean(axis=(2, 3)), "reduction_0."),
        bnneck3(glo.max(axis=(2, 3)), "reduction_4."),
        bnneck3(par.max(axis=(2, 3)), "reduction_1."),
        bnneck3(stripes[0], "reduction_2."),
        bnneck3(stripes[1], "reduction_3."),
        _bn1d_numpy(shared(c[:, :256]), sd, "reduction_ch_0.bn."),
        _bn1d_numpy(shared(c[:, 256:]), sd, "reduction_ch_1.bn."),
    ]
    stack = np.stack(feats, axis=2)  # [N, 512, 7]
    return stack.reshape(stack.shape[0], -1)  # element c * 7 + branch, as view()/flatten(1, 2)


@pytest.mark.slow
def test_lmbn_n_checkpoint_and_heads(tmp_path: Path) -> None:
    sd = random_state(lightmbn.build("lmbn_n"), seed=3)
    assert "backone.3.conv1.conv.weight" in sd  # conv3[0] of the OSNet trunk
    assert "batch_drop_block.drop_batch_bottleneck.conv2a.conv2.weight" in sd
    saved = dict(sd)
    for h in [f"reduction_{i}" for i in range(5)] + ["reduction_ch_0", "reduction_ch_1"]:
        saved[f"{h}.classifier.weight"] = torch.randn(NUM_CLASSES, 512)
    path = tmp_path / "model-latest.pth"
    torch.save({"state_dict": saved, "epoch": 130, "rank1": 0.95, "optimizer": {}}, path)
    loaded = create_model("lmbn_n", weights=path)
    m = loaded.module
    x = torch.randn(1, 3, 384, 128, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        (feat,) = m(x)
        trunk = m.backone(x)
        glo = m.batch_drop_block.drop_batch_bottleneck(m.global_branch(trunk))
        par, cha = m.partial_branch(trunk), m.channel_branch(trunk)
    assert trunk.shape == (1, 384, 48, 16) and par.shape == (1, 512, 24, 8)
    ref = torch.from_numpy(reference_lmbn_heads(glo, par, cha, sd)).float()
    assert feat.shape == (1, 3584)
    assert (feat - ref).abs().max() <= 1e-4 * ref.abs().max()
    assert lightmbn.looks_like(sd)


def test_lmbn_bare_state_dict_loads_and_wrong_family_fails(tmp_path: Path) -> None:
    sd = random_state(lightmbn.build("lmbn_n"), seed=5)
    path = tmp_path / "model-best.pth"
    torch.save(sd, path)
    assert create_model("lmbn_n", weights=path).module.state_dict().keys() == sd.keys()
    with pytest.raises(CheckpointError, match="missing keys"):
        create_model("osnet_x1_0", weights=path)
