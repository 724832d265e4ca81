"""The checkpoint loader: safe loading, container unwrapping and a typed error for each bad file."""

from __future__ import annotations

import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from reidctl.errors import CheckpointError, InputError, UnknownNameError
from reidctl.models.checkpoints import Placeholder, read_checkpoint
from reidctl.models.loading import (
    RandomInitWarning,
    create_model,
    extract_state_dict,
    load_checkpoint,
)

SMALL = "osnet_x0_25"  # the cheapest registered model


class TrainingConfig:
    """Stands for the arbitrary objects old training scripts pickle into checkpoints."""

    def __init__(self) -> None:
        self.lr = 3e-4


@pytest.fixture(scope="module")
def small_sd() -> dict[str, torch.Tensor]:
    """A state dict of the small model, different from its seed-0 initialisation."""
    with pytest.warns(RandomInitWarning):
        module = create_model(SMALL, num_classes=5).module
    g = torch.Generator().manual_seed(11)
    return {
        k: (torch.rand(v.shape, generator=g) + 0.5 if v.is_floating_point() else v.clone())
        for k, v in module.state_dict().items()
    }


@pytest.fixture(scope="module")
def small_file(tmp_path_factory, small_sd) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "small.pth"
    torch.save(small_sd, path)
    return path


def _assert_equal_sd(module: torch.nn.Module, expected: dict[str, torch.Tensor]) -> None:
    got = module.state_dict()
    assert sorted(got) == sorted(expected)
    assert all(torch.equal(got[k], v) for k, v in expected.items())


def test_loads_strictly_and_records_provenance(small_file: Path, small_sd) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = create_model(SMALL, weights=small_file)
    _assert_equal_sd(loaded.module, small_sd)
    assert loaded.num_classes == 5
    assert not loaded.module.training
    info = loaded.weights_info()
    assert info is not None and info["path"] == str(small_file.resolve())
    assert len(info["sha256"]) == 64


def test_missing_file_is_a_checkpoint_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pth"
    with pytest.raises(CheckpointError, match="not found") as exc:
        create_model(SMALL, weights=missing)
    assert str(missing) in str(exc.value)
    assert isinstance(exc.value, InputError) and exc.value.exit_code == 2


def test_garbage_file_is_a_checkpoint_error(tmp_path: Path) -> None:
    path = tmp_path / "garbage.pth"
    path.write_bytes(bytes(range(256)) * 8)
    with pytest.raises(CheckpointError, match=r"garbage\.pth"):
        load_checkpoint(path)


@pytest.mark.parametrize("allow_pickle", [False, True])
def test_truncated_file_is_a_checkpoint_error(
    tmp_path: Path, small_file: Path, allow_pickle: bool
) -> None:
    path = tmp_path / "truncated.pth"
    path.write_bytes(small_file.read_bytes()[: small_file.stat().st_size // 2])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the --allow-pickle warning
        with pytest.raises(CheckpointError, match=r"truncated\.pth"):
            load_checkpoint(path, allow_pickle=allow_pickle)


def test_wrong_keys_and_shapes_are_listed(tmp_path: Path, small_sd) -> None:
    sd = dict(small_sd)
    del sd["conv5.conv.weight"]
    sd["head.extra.weight"] = torch.zeros(3)
    sd["fc.0.weight"] = torch.zeros(256, 128)
    path = tmp_path / "wrong.pth"
    torch.save(sd, path)
    with pytest.raises(CheckpointError) as exc:
        create_model(SMALL, weights=path)
    msg = str(exc.value)
    assert "missing keys (1): conv5.conv.weight" in msg
    assert "unexpected keys (1): head.extra.weight" in msg
    assert "fc.0.weight: checkpoint (256, 128) vs model (512, 128)" in msg
    assert str(path) in msg


def test_checkpoint_of_another_model_is_refused(small_file: Path) -> None:
    with pytest.raises(CheckpointError, match="do not fit") as exc:
        create_model("osnet_x0_5", weights=small_file)
    assert "shape mismatches" in str(exc.value)


def test_pickled_object_becomes_a_placeholder(tmp_path: Path, small_sd) -> None:
    path = tmp_path / "legacy.pth"
    torch.save({"state_dict": small_sd, "config": TrainingConfig(), "epoch": 3}, path)

    raw = read_checkpoint(path)  # safe: the object's class is never imported
    assert raw.placeholders == (f"{__name__}.TrainingConfig",)
    config = raw.obj["config"]
    assert isinstance(config, Placeholder) and not isinstance(config, TrainingConfig)
    assert config.pickled_state == {"lr": 3e-4}
    _assert_equal_sd(create_model(SMALL, weights=path).module, small_sd)

    with pytest.warns(UserWarning, match="arbitrary code"):
        loaded = create_model(SMALL, weights=path, allow_pickle=True)
    _assert_equal_sd(loaded.module, small_sd)
    with pytest.warns(UserWarning, match="arbitrary code"):
        assert isinstance(load_checkpoint(path, allow_pickle=True)["config"], TrainingConfig)


def _as_numpy1_file(src: Path, dst: Path) -> None:
    """Rewrite a checkpoint as numpy 1.x writes it (numpy.core, not numpy._core, in the pickle)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            if info.filename.endswith("data.pkl"):
                data = data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
            zout.writestr(info, data)


@pytest.mark.parametrize("numpy1", [False, True])
def test_numpy_arrays_and_scalars_load_safely(tmp_path: Path, small_sd, numpy1: bool) -> None:
    # AlignedReID-style container; its checkpoints predate numpy 2
    path = tmp_path / "ckpt.pth"
    ckpt = {"state_dicts": [small_sd, {}], "ep": np.int64(150), "scores": np.array([0.9, 0.8])}
    torch.save(ckpt, path)
    if numpy1:
        _as_numpy1_file(path, tmp_path / "np1.pth")
        path = tmp_path / "np1.pth"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        raw = load_checkpoint(path)
    assert raw["ep"] == 150
    np.testing.assert_array_equal(raw["scores"], [0.9, 0.8])
    _assert_equal_sd(create_model(SMALL, weights=path).module, small_sd)


@pytest.mark.parametrize("prefix", ["module.", "module.model."])
def test_wrapper_prefixes_are_stripped(tmp_path: Path, small_sd, prefix: str) -> None:
    path = tmp_path / "wrapped.pth"
    torch.save({"state_dict": {prefix + k: v for k, v in small_sd.items()}}, path)
    _assert_equal_sd(create_model(SMALL, weights=path).module, small_sd)


def test_extract_state_dict_containers(small_sd) -> None:
    one = next(iter(small_sd))
    for container in (
        {one: small_sd[one]},
        {"state_dict": {one: small_sd[one]}, "epoch": 1},
        {"model": {one: small_sd[one]}},
        {"state_dicts": [{one: small_sd[one]}, {"state": {}}], "ep": 2},
    ):
        assert list(extract_state_dict(container)) == [one]
    with pytest.raises(CheckpointError, match="no tensors"):
        extract_state_dict({"epoch": 3, "arch": "osnet"}, "meta.pth")
    with pytest.raises(CheckpointError, match="no state dict"):
        extract_state_dict([1, 2, 3], "list.pth")


def test_random_init_warns_and_is_reproducible() -> None:
    with pytest.warns(RandomInitWarning, match="RANDOM"):
        a = create_model(SMALL)
    with pytest.warns(RandomInitWarning):
        b = create_model(SMALL)
    assert a.weights_info() is None
    _assert_equal_sd(b.module, a.module.state_dict())


def test_unknown_model_lists_valid_names() -> None:
    with pytest.raises(UnknownNameError, match="osnet_x0_25") as exc:
        create_model("osnet_x9")
    assert exc.value.exit_code == 2


def test_package_import_is_torch_free_until_create_model_is_used() -> None:
    import subprocess
    import sys

    code = (
        "import sys, reidctl.models as m\n"
        "assert 'torch' not in sys.modules, 'reidctl.models imported torch'\n"
        "m.create_model\n"
        "assert 'torch' in sys.modules\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
