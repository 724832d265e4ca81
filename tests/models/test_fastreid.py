"""fast-reid: checkpoint layouts, key names and the documented forward pass.

Every reference computation here is written from fast-reid's code with plain functional ops
on the checkpoint's tensors (``F.conv2d``, ``F.batch_norm``, numpy), not with reidctl's
modules.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from reidctl.errors import CheckpointError
from reidctl.models import fastreid as fr
from reidctl.models.loading import create_model

NUM_CLASSES = 11


def random_state(name: str, seed: int, p: float = 3.0) -> dict[str, torch.Tensor]:
    """Random weights for registered fast-reid ``name`` with fast-reid's key names:
    randomised BatchNorm statistics and affine terms, GeM-P's ``p`` set to ``p``."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for k, v in fr.build(name).state_dict().items():
        if k.endswith("num_batches_tracked"):
            sd[k] = torch.tensor(100)
        elif k.endswith("running_var"):
            sd[k] = torch.rand(v.shape, generator=g) * 0.5 + 0.5
        elif k.endswith("running_mean"):
            sd[k] = torch.randn(v.shape, generator=g) * 0.1
        elif k.endswith(("bn1.weight", "bn2.weight", "bn3.weight", "IN.weight", "BN.weight")):
            sd[k] = torch.rand(v.shape, generator=g) * 0.5 + 0.5
        elif k.endswith("pool_layer.p"):
            sd[k] = torch.tensor([p])
        elif k.endswith(".weight") and v.dim() == 4:
            fan_in = v[0].numel()
            sd[k] = torch.randn(v.shape, generator=g) * (1.0 / fan_in) ** 0.5
        else:
            sd[k] = torch.randn(v.shape, generator=g) * 0.1
    return sd


def fastreid_file(
    path: Path, sd: dict[str, torch.Tensor], layout: str, feat_dim: int = 2048
) -> dict[str, torch.Tensor]:
    """Write ``sd`` as fast-reid's ``model_final.pth`` of the given era; returns what was saved.

    ``old``: before v0.3 (``model``/``optimizer``/``scheduler``/``iteration``), with the
    persistent ``pixel_mean``/``pixel_std`` buffers and ``heads.classifier.weight``;
    ``new``: v0.3+ (``model``/``optimizer``/``lr_sched``/``epoch``), no pixel buffers,
    classifier ``heads.weight``.
    """
    model = dict(sd)
    heads = sorted(
        {k.split(".")[0] for k in sd if k.split(".")[0].endswith("head") or k.startswith("heads.")}
    )
    for h in heads:
        key = f"{h}.classifier.weight" if layout == "old" else f"{h}.weight"
        model[key] = torch.randn(NUM_CLASSES, feat_dim)
    optimizer = {
        "state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.zeros(4)}},
        "param_groups": [{"lr": 3.5e-4, "weight_decay": 5e-4, "params": [0]}],
    }
    if layout == "old":
        model["pixel_mean"] = torch.tensor([110.0, 120.0, 130.0]).view(1, 3, 1, 1)
        model["pixel_std"] = torch.tensor([50.0, 60.0, 70.0]).view(1, 3, 1, 1)
        ckpt = {
            "model": model,
            "optimizer": optimizer,
            "scheduler": {"milestones": {40: 1, 90: 1}, "last_epoch": 1000, "gamma": 0.1},
            "iteration": 1000,
        }
    else:
        ckpt = {
            "model": model,
            "optimizer": optimizer,
            "lr_sched": {"last_epoch": 60, "base_lrs": [3.5e-4], "_last_lr": [7e-7]},
            "warmup_sched": {"last_epoch": 2000},
            "epoch": 59,
        }
    torch.save(ckpt, path)
    return model


# ------------------------------------------------------- functional reference of fast-reid


def _bn(x: torch.Tensor, sd: dict[str, torch.Tensor], p: str) -> torch.Tensor:
    return F.batch_norm(
        x,
        sd[p + "running_mean"],
        sd[p + "running_var"],
        sd[p + "weight"],
        sd[p + "bias"],
        training=False,
        eps=1e-5,
    )


def _ibn(x: torch.Tensor, sd: dict[str, torch.Tensor], p: str) -> torch.Tensor:
    """IBN-a as in fastreid/layers/batch_norm.py, with numpy's statistics for the IN half."""
    half = sd[p + "IN.weight"].numel()
    a = x[:, :half].double().numpy()
    mu = a.mean(axis=(2, 3), keepdims=True)
    var = a.var(axis=(2, 3), keepdims=True)  # biased, as instance norm
    w = sd[p + "IN.weight"].double().numpy().reshape(1, -1, 1, 1)
    b = sd[p + "IN.bias"].double().numpy().reshape(1, -1, 1, 1)
    inorm = torch.from_numpy((a - mu) / np.sqrt(var + 1e-5) * w + b).float()
    return torch.cat([inorm, _bn(x[:, half:], sd, p + "BN.")], 1)


def _norm1(x, sd, p):
    return _ibn(x, sd, p) if p + "IN.weight" in sd else _bn(x, sd, p)


def _bottleneck(x, sd, p, stride):
    out = F.relu(_norm1(F.conv2d(x, sd[p + "conv1.weight"]), sd, p + "bn1."))
    out = F.relu(
        _bn(F.conv2d(out, sd[p + "conv2.weight"], stride=stride, padding=1), sd, p + "bn2.")
    )
    out = _bn(F.conv2d(out, sd[p + "conv3.weight"]), sd, p + "bn3.")
    if p + "downsample.0.weight" in sd:
        x = _bn(F.conv2d(x, sd[p + "downsample.0.weight"], stride=stride), sd, p + "downsample.1.")
    return F.relu(out + x)


def _non_local(x: torch.Tensor, sd: dict[str, torch.Tensor], p: str) -> torch.Tensor:
    """fastreid/layers/non_local.py in numpy: z = BN(W (theta^T phi / N) g) + x."""
    n, c, h, w = x.shape
    xf = x.double().numpy().reshape(n, c, h * w)

    def conv1x1(name):
        wt = sd[p + name + ".weight"].double().numpy()[:, :, 0, 0]
        return (
            np.einsum("oc,ncl->nol", wt, xf)
            + sd[p + name + ".bias"].double().numpy()[None, :, None]
        )

    g, theta, phi = conv1x1("g"), conv1x1("theta"), conv1x1("phi")  # [n, 1, HW]
    f = np.einsum("nci,ncj->nij", theta, phi) / (h * w)
    y = np.einsum("nij,ncj->nci", f, g)
    w_w = sd[p + "W.0.weight"].double().numpy()[:, :, 0, 0]
    wy = np.einsum("oc,ncl->nol", w_w, y) + sd[p + "W.0.bias"].double().numpy()[None, :, None]
    wy = torch.from_numpy(wy.reshape(n, c, h, w)).float()
    return _bn(wy, sd, p + "W.1.") + x


def _gem_numpy(x: torch.Tensor, p: float) -> torch.Tensor:
    a = np.clip(x.double().numpy(), 1e-6, None)
    return torch.from_numpy(
        np.power(np.power(a, p).mean(axis=(2, 3), keepdims=True), 1.0 / p)
    ).float()


def reference_baseline(x: torch.Tensor, sd: dict[str, torch.Tensor], cfg: fr.FastReIDConfig):
    """fast-reid's Baseline in eval mode from the state dict (ResNet-50)."""
    x = F.relu(
        _bn(F.conv2d(x, sd["backbone.conv1.weight"], stride=2, padding=3), sd, "backbone.bn1.")
    )
    x = F.max_pool2d(x, 3, 2, ceil_mode=True)  # fast-reid: no padding, ceil mode
    nl = {1: [2, 3], 2: [3, 4, 5]} if cfg.with_nl else {}
    for stage, blocks in enumerate((3, 4, 6, 3)):
        for i in range(blocks):
            stride = (1, 2, 2, cfg.last_stride)[stage] if i == 0 else 1
            x = _bottleneck(x, sd, f"backbone.layer{stage + 1}.{i}.", stride)
            if i in nl.get(stage, []):
                x = _non_local(x, sd, f"backbone.NL_{stage + 1}.{nl[stage].index(i)}.")
    if cfg.pool == "avg":
        v = x.mean(dim=(2, 3), keepdim=True)
    elif cfg.pool == "gem":
        v = _gem_numpy(x, 3.0)
    else:
        v = _gem_numpy(x, float(sd["heads.pool_layer.p"]))
    return _bn(v, sd, "heads.bottleneck.0.")[:, :, 0, 0]


# ------------------------------------------------------------------------------- tests


@pytest.mark.parametrize("layout", ["old", "new"])
def test_both_container_layouts_load_and_carry_normalisation(tmp_path: Path, layout: str) -> None:
    sd = random_state("fastreid_bot_r50", seed=1)
    path = tmp_path / "model_final.pth"
    fastreid_file(path, sd, layout)
    loaded = create_model("fastreid_bot_r50", weights=path)  # safe loading
    got = loaded.module.state_dict()
    assert sorted(got) == sorted(sd)
    assert all(torch.equal(got[k], v) for k, v in sd.items())
    pre = loaded.module.preprocess
    assert (pre.height, pre.width, pre.interpolation) == (256, 128, "bicubic")
    if layout == "old":  # the buffers in the file win over the config
        assert pre.mean == pytest.approx((110 / 255, 120 / 255, 130 / 255), abs=1e-6)
        assert pre.std == pytest.approx((50 / 255, 60 / 255, 70 / 255), abs=1e-6)
    else:
        assert pre.mean == (0.485, 0.456, 0.406) and pre.std == (0.229, 0.224, 0.225)


@pytest.mark.slow
@pytest.mark.parametrize(
    "name", ["fastreid_bot_r50", "fastreid_bot_r50_ibn", "fastreid_agw_r50", "fastreid_sbs_r50_ibn"]
)
def test_baseline_equals_functional_fastreid(tmp_path: Path, name: str) -> None:
    sd = random_state(name, seed=2, p=4.5)
    path = tmp_path / "model_final.pth"
    fastreid_file(path, sd, "new")
    loaded = create_model(name, weights=path)
    cfg = fr.VARIANTS[name]
    x = torch.randn(1, 3, cfg.height, cfg.width, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        (feat,) = loaded.module(x)
    ref = reference_baseline(x, sd, cfg)
    assert feat.shape == (1, 2048)
    scale = ref.abs().max()
    assert (feat - ref).abs().max() <= 1e-4 * scale


def test_ibn_a_block_equals_numpy() -> None:
    torch.manual_seed(0)
    block = fr.IBN(64).eval()
    sd = {f"bn.{k}": torch.rand_like(v.float()) + 0.5 for k, v in block.state_dict().items()}
    block.load_state_dict({k[3:]: v for k, v in sd.items()})
    assert sorted(block.state_dict()) == [
        "BN.bias",
        "BN.num_batches_tracked",
        "BN.running_mean",
        "BN.running_var",
        "BN.weight",
        "IN.bias",
        "IN.weight",
    ]
    x = torch.randn(2, 64, 6, 5) * 3 + 1
    with torch.no_grad():
        torch.testing.assert_close(block(x), _ibn(x, sd, "bn."), atol=1e-5, rtol=1e-5)


def test_non_local_block_equals_numpy() -> None:
    torch.manual_seed(0)
    block = fr.NonLocal(32).eval()
    sd = {f"nl.{k}": torch.randn_like(v.float()) for k, v in block.state_dict().items()}
    sd["nl.W.1.running_var"] = sd["nl.W.1.running_var"].abs() + 0.5
    block.load_state_dict({k[3:]: v for k, v in sd.items()})
    assert tuple(block.g.weight.shape) == (1, 32, 1, 1)  # fast-reid's inter_channels == 1
    x = torch.randn(3, 32, 8, 4)
    with torch.no_grad():
        torch.testing.assert_close(block(x), _non_local(x, sd, "nl."), atol=1e-4, rtol=1e-4)


def test_gem_fixed_p_has_no_key_and_gem_p_reads_its_p() -> None:
    x = torch.randn(2, 16, 7, 3)
    fixed = fr.GeM(3.0)
    assert fixed.state_dict() == {}
    torch.testing.assert_close(fixed(x), _gem_numpy(x, 3.0), atol=1e-5, rtol=1e-5)
    learned = fr.GeM(3.0, learn_p=True)
    learned.load_state_dict({"p": torch.tensor([5.5])})
    torch.testing.assert_close(learned(x), _gem_numpy(x, 5.5), atol=1e-5, rtol=1e-4)
    agw = fr.build("fastreid_agw_r50").state_dict()
    sbs = fr.build("fastreid_sbs_r50_ibn").state_dict()
    assert not any(k.startswith("heads.pool_layer") for k in agw)
    assert tuple(sbs["heads.pool_layer.p"].shape) == (1,)


@pytest.mark.slow
def test_mgn_part_pooling_and_concatenation(tmp_path: Path) -> None:
    name = "fastreid_mgn_r50_ibn"
    sd = random_state(name, seed=4, p=3.7)
    for i, h in enumerate(fr.FastReIDMGN.HEADS):  # every head its own p
        sd[f"{h}.pool_layer.p"] = torch.tensor([2.0 + 0.5 * i])
    path = tmp_path / "model_final.pth"
    fastreid_file(path, sd, "old", feat_dim=256)
    loaded = create_model(name, weights=path)
    m = loaded.module
    x = torch.randn(1, 3, 384, 128, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        (feat,) = m(x)
        trunk = m.backbone(x)
        maps = {b: getattr(m, b)(trunk) for b in ("b1", "b2", "b3")}
    assert trunk.shape == (1, 1024, 24, 8) and maps["b2"].shape == (1, 2048, 24, 8)
    # fast-reid's MGN: b2 split into 2 horizontal stripes, b3 into 3 (torch.chunk on dim 2)
    parts = {
        "b1_head": maps["b1"],
        "b2_head": maps["b2"],
        "b3_head": maps["b3"],
        "b21_head": maps["b2"][:, :, :12],
        "b22_head": maps["b2"][:, :, 12:],
        "b31_head": maps["b3"][:, :, :8],
        "b32_head": maps["b3"][:, :, 8:16],
        "b33_head": maps["b3"][:, :, 16:],
    }
    order = [
        "b1_head",
        "b2_head",
        "b3_head",
        "b21_head",
        "b22_head",
        "b31_head",
        "b32_head",
        "b33_head",
    ]
    ref = []
    for h in order:
        v = _gem_numpy(parts[h], float(sd[f"{h}.pool_layer.p"]))
        v = F.conv2d(v, sd[f"{h}.bottleneck.0.weight"])
        ref.append(_bn(v, sd, f"{h}.bottleneck.1.")[:, :, 0, 0])
    ref_t = torch.cat(ref, 1)
    assert feat.shape == (1, 2048)
    assert (feat - ref_t).abs().max() <= 1e-4 * ref_t.abs().max()
    assert m.preprocess.mean == pytest.approx((110 / 255, 120 / 255, 130 / 255), abs=1e-6)


@pytest.mark.slow
def test_fastreid_checkpoint_for_another_family_names_the_fit(tmp_path: Path) -> None:
    path = tmp_path / "model_final.pth"
    fastreid_file(path, random_state("fastreid_agw_r50", seed=6), "new")
    for other in ("centroids_reid", "resnet50", "fastreid_bot_r50"):
        with pytest.raises(CheckpointError, match="keys fit `fastreid_agw_r50`, not "):
            create_model(other, weights=path)
    assert fr.suggest_name(torch.load(path, weights_only=True)["model"]) == "fastreid_agw_r50"


def test_unknown_fastreid_variant_lists_choices() -> None:
    from reidctl.errors import UnknownNameError

    with pytest.raises(UnknownNameError, match="fastreid_bot_r50"):
        fr.build("fastreid_bot_r18")
