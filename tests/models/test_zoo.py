"""Every registered model builds, runs and matches its spec; each family loads its reference
project's checkpoint format; the real OSNet x0.25 checkpoint reproduces torchreid's numbers."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from reidctl.errors import UnknownNameError
from reidctl.models import get_spec, list_models
from reidctl.models.loading import RandomInitWarning, create_model

NUM_CLASSES = 7


def _random_model(name: str, num_classes: int | None = None):
    with pytest.warns(RandomInitWarning):
        return create_model(name, num_classes=num_classes)


def _resolve(shape: tuple[int | str, ...], num_classes: int | None) -> tuple[int, ...]:
    dims = {"batch": 2, "C": num_classes}
    out = []
    for d in shape:
        if isinstance(d, str):
            assert dims.get(d) is not None, f"unknown named axis {d!r} in spec shape {shape}"
            d = dims[d]
        out.append(int(d))
    return tuple(out)


def _check_against_spec(name: str, num_classes: int | None, run: bool) -> None:
    spec = get_spec(name)
    loaded = _random_model(name, num_classes)
    required = [o.name for o in spec.outputs if o.name not in spec.optional_outputs]
    expected = [o.name for o in spec.outputs if o.name in required or num_classes is not None]
    assert list(loaded.output_names) == expected
    assert spec.feature in loaded.output_names
    assert not loaded.module.training
    if not run:
        return
    x = torch.randn(2, *spec.input.shape[1:], generator=torch.Generator().manual_seed(1))
    args = [x]
    if spec.camera_input is not None:  # camera-aware: the random model has the spec's cameras
        assert loaded.module.takes_camera and loaded.module.num_cameras == spec.num_cameras
        args.append(torch.tensor([0, spec.num_cameras - 1]))
    else:
        assert not getattr(loaded.module, "takes_camera", False)
    with torch.no_grad():
        outs = loaded.module(*args)
    assert isinstance(outs, tuple) and len(outs) == len(expected)
    by_name = {o.name: o for o in spec.outputs}
    for out_name, tensor in zip(loaded.output_names, outs, strict=True):
        assert tuple(tensor.shape) == _resolve(by_name[out_name].shape, num_classes), out_name
        assert tensor.dtype == torch.float32
        assert torch.isfinite(tensor).all()


@pytest.mark.parametrize("name", list_models())
def test_random_init_matches_spec(name: str) -> None:
    _check_against_spec(name, num_classes=None, run=True)


@pytest.mark.parametrize("name", list_models())
def test_classifier_adds_only_optional_outputs(name: str) -> None:
    # a forward pass only where the classifier changes what the model returns
    _check_against_spec(name, NUM_CLASSES, run=bool(get_spec(name).optional_outputs))


def test_unknown_osnet_variant_lists_choices() -> None:
    from reidctl.models import osnet

    with pytest.raises(UnknownNameError, match="osnet_x0_25"):
        osnet.build("osnet_x2_0")


# --------------------------------------------------------------------- reference formats


def _perturbed(module: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """The module's state dict with every float tensor replaced by seeded random values."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for k, v in module.state_dict().items():
        if v.is_floating_point():
            v = torch.rand(v.shape, generator=g) * 0.1 + (1.0 if "running_var" in k else 0.0)
        sd[k] = v.clone()
    return sd


def _assert_loaded(module: torch.nn.Module, expected: dict[str, torch.Tensor]) -> None:
    got = module.state_dict()
    assert sorted(got) == sorted(expected)
    for k, v in expected.items():
        assert torch.equal(got[k], v), k


@pytest.fixture(scope="module")
def aligned_source() -> torch.nn.Module:
    from reidctl.models.aligned_reid import AlignedReID

    return AlignedReID(num_classes=NUM_CLASSES)


def test_aligned_reid_ckpt_with_optimizer_and_numpy_scores(tmp_path: Path, aligned_source):
    sd = _perturbed(aligned_source, seed=3)
    optim_sd = {
        "state": {0: {"step": torch.tensor(5.0), "exp_avg": torch.zeros(3)}},
        "param_groups": [
            {
                "lr": 2e-4,
                "betas": (0.9, 0.999),
                "weight_decay": 5e-4,
                "amsgrad": False,
                "params": [0],
            }
        ],
    }
    ckpt = {"state_dicts": [sd, optim_sd], "ep": 150, "scores": np.array([0.91, 0.78])}
    path = tmp_path / "ckpt.pth"
    torch.save(ckpt, path)

    loaded = create_model("aligned_reid", weights=path)  # safe loading, the default

    assert loaded.num_classes == NUM_CLASSES
    assert loaded.output_names == ("global_feat", "local_feat", "logits")
    _assert_loaded(loaded.module, sd)
    x = torch.randn(1, 3, 256, 128, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        global_feat, local_feat, logits = loaded.module(x)
        feat = loaded.module.base(x)
    torch.testing.assert_close(global_feat, feat.mean(dim=(2, 3)))
    torch.testing.assert_close(logits, global_feat @ sd["fc.weight"].T + sd["fc.bias"])
    assert local_feat.shape == (1, 8, 128) and (local_feat >= 0).all()


def test_aligned_reid_bare_state_dict_without_fc(tmp_path: Path, aligned_source) -> None:
    sd = {k: v for k, v in _perturbed(aligned_source, seed=4).items() if not k.startswith("fc.")}
    path = tmp_path / "model_weight.pth"
    torch.save(sd, path)
    loaded = create_model("aligned_reid", weights=path)
    assert loaded.num_classes is None
    assert loaded.output_names == ("global_feat", "local_feat")
    _assert_loaded(loaded.module, sd)


def test_centroids_reid_lightning_checkpoint(tmp_path: Path) -> None:
    from reidctl.models.centroids_reid import CentroidsReID

    own = _perturbed(CentroidsReID(), seed=5)
    lightning_sd = {("backbone." + k if k.startswith("base.") else k): v for k, v in own.items()}
    lightning_sd["fc_query.weight"] = torch.randn(NUM_CLASSES, 2048)
    lightning_sd["center_loss.centers"] = torch.randn(NUM_CLASSES, 2048)
    ckpt = {
        "epoch": 119,
        "global_step": 1000,
        "pytorch-lightning_version": "1.1.4",
        "state_dict": lightning_sd,
        "hyper_parameters": {"MODEL": {"NAME": "resnet50", "LAST_STRIDE": 1}, "num_classes": 7},
    }
    path = tmp_path / "epoch=119.ckpt"
    torch.save(ckpt, path)

    loaded = create_model("centroids_reid", weights=path)

    _assert_loaded(loaded.module, own)
    x = torch.randn(2, 3, 256, 128, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        (feature,) = loaded.module(x)
        trunk = loaded.module.trunk(x)
    assert trunk.shape == (2, 2048, 16, 8)  # last stride 1
    bn = loaded.module.bn
    expected = (trunk.mean(dim=(2, 3)) - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps)
    torch.testing.assert_close(feature, expected * bn.weight + bn.bias)


def test_trinet_loads_triplet_reid_pytorch_names(tmp_path: Path) -> None:
    from reidctl.models.trinet import TriNet

    own = _perturbed(TriNet(), seed=7)
    renames = {"fc1.": "fc.0.", "bn1.": "fc.1.", "fc2.": "fc.3."}
    port = {}
    for k, v in own.items():
        if k.startswith("base."):
            port["module." + k[len("base.") :]] = v  # saved from DataParallel
        else:
            head = next(p for p in renames if k.startswith(p))
            port["module." + renames[head] + k[len(head) :]] = v
    path = tmp_path / "model_300000"
    torch.save(port, path)

    loaded = create_model("trinet", weights=path)

    _assert_loaded(loaded.module, own)
    assert loaded.output_names == ("embedding",)


# --------------------------------------------------------------------- the real checkpoint


def _market_split(root: Path, split: str) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """Images as torchreid evaluates them: RGB, bilinear 128x256, /255, ImageNet mean/std."""
    import cv2

    files = sorted((root / split).glob("*.jpg"))
    mean = np.array([0.485, 0.456, 0.406], np.float32)
    std = np.array([0.229, 0.224, 0.225], np.float32)
    ims = []
    for f in files:
        im = cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB)
        im = cv2.resize(im, (128, 256), interpolation=cv2.INTER_LINEAR).astype(np.float32)
        ims.append(((im / 255.0 - mean) / std).transpose(2, 0, 1))
    pids = np.array([int(f.name[:4]) for f in files])
    cams = np.array([int(f.name.split("_")[1][1]) for f in files])
    return torch.from_numpy(np.stack(ims)), pids, cams


@pytest.mark.shared
def test_real_osnet_x0_25_reproduces_torchreid(osnet_weights: Path, market_mini: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # safe loading must not need --allow-pickle
        loaded = create_model("osnet_x0_25", weights=osnet_weights)
    assert loaded.num_classes == 751
    assert loaded.weights_sha256 == (
        "c0ff09177a21417a19bc73bbf5af4eb5d2b097c2074ed35e67819ee6cd93612c"
    )
    q, q_pids, q_cams = _market_split(market_mini, "query")
    g, g_pids, g_cams = _market_split(market_mini, "bounding_box_test")
    with torch.no_grad():
        fq = torch.nn.functional.normalize(loaded.module(q)[0]).numpy()
        fg = torch.nn.functional.normalize(loaded.module(g)[0]).numpy()
    assert fq.shape == (32, 512)

    # each query's own-identity partner is its nearest other query for most queries
    dq = 1.0 - fq @ fq.T
    np.fill_diagonal(dq, np.inf)
    assert (q_pids[dq.argmin(1)] == q_pids).mean() >= 0.75

    # Market-1501 protocol, cosine distance: torchreid's reference numbers (shared/README.md)
    dist = 1.0 - fq @ fg.T
    rank1, aps = [], []
    for i in range(len(q_pids)):
        keep = ~((g_pids == q_pids[i]) & (g_cams == q_cams[i]))
        match = g_pids[keep][np.argsort(dist[i][keep], kind="stable")] == q_pids[i]
        if not match.any():
            continue
        rank1.append(match[0])
        precision = np.cumsum(match) / np.arange(1, len(match) + 1)
        aps.append((precision * match).sum() / match.sum())
    assert len(rank1) == 30
    assert np.mean(rank1) == pytest.approx(0.8667, abs=1e-3)
    assert np.mean(aps) == pytest.approx(0.9247, abs=1e-3)
