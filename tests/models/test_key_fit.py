"""Key-fit detection covers every registered model, a new family included, without changes
to the detector: built key sets and shapes, or the family's own ``looks_like`` hook."""

from __future__ import annotations

import sys
import types

import pytest
import torch
from torch import nn

from reidctl.models import registry
from reidctl.models.checkpoints import fit_models, suggest_models
from reidctl.models.registry import ModelSpec, list_models
from reidctl.specs import TensorSpec


class _CameraNet(nn.Module):
    """A toy camera-aware family: an SIE table ``[cameras, 8]`` and a stripe head."""

    output_names = ("feature",)

    def __init__(self, num_cameras: int = 2, stripes: int = 3) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3)
        self.bn = nn.BatchNorm2d(8)
        self.sie = nn.Parameter(torch.zeros(num_cameras, 8))
        self.stripes = nn.Linear(8, stripes)
        self.num_cameras, self.num_stripes = num_cameras, stripes

    def remap_state_dict(self, sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        # like TransReID: the checkpoint's tables decide the configuration
        if "sie" in sd:
            self.__init__(int(sd["sie"].shape[0]), int(sd["stripes.weight"].shape[0]))
        return sd


@pytest.fixture
def toy_family(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    family = types.ModuleType("toy_reid_family")
    family.build = lambda name, num_classes=None: _CameraNet()
    family.checkpoint_facts = lambda sd: {"sie_width": int(sd["sie"].shape[1])}
    monkeypatch.setitem(sys.modules, family.__name__, family)
    spec = ModelSpec(
        name="toy_cameras",
        description="toy",
        builder=f"{family.__name__}:build",
        outputs=(TensorSpec("feature", ("batch", 8)),),
        feature="feature",
    )
    monkeypatch.setitem(registry._REGISTRY, spec.name, spec)
    return family


def _toy_checkpoint(cameras: int, stripes: int) -> dict[str, torch.Tensor]:
    return {k: torch.zeros_like(v) for k, v in _CameraNet(cameras, stripes).state_dict().items()}


def test_a_new_family_is_fitted_with_facts_read_from_shapes(toy_family) -> None:
    assert "toy_cameras" in list_models()
    sd = _toy_checkpoint(cameras=6, stripes=4)
    fits = fit_models(sd)
    assert [f.model for f in fits if f.exact] == ["toy_cameras"]
    assert fits[0].facts == {"num_cameras": 6, "num_stripes": 4, "sie_width": 8}
    assert {f.model for f in fits} == set(list_models())  # every registered model is tried
    assert "`toy_cameras`" in suggest_models(sd, "osnet_x0_25")


def test_looks_like_hook_vouches_for_a_family(toy_family) -> None:
    sd = {"stem.weight": torch.zeros(8, 3, 3, 3), "head.other": torch.zeros(2)}
    assert not any(f.exact for f in fit_models(sd))
    toy_family.looks_like = lambda sd: "stem.weight" in sd and "head.other" in sd
    best = fit_models(sd)[0]
    assert best.model == "toy_cameras" and best.looks_like == 1.0 and not best.exact
    assert "looks like `toy_cameras`" in suggest_models(sd, "resnet50")


def test_every_registered_model_fits_its_own_state_dict() -> None:
    from reidctl.models.loading import create_model

    for name in list_models():
        with pytest.warns(UserWarning):
            module = create_model(name).module
        sd = {k: v for k, v in module.state_dict().items()}
        exact = [f.model for f in fit_models(sd, [name]) if f.exact]
        assert exact == [name], name
