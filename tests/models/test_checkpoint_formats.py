"""Checkpoints in the reference projects' real file formats, written here byte for byte as
those projects write them: each loads safely, exports, and the ONNX output matches the
model's own forward pass with the weights loaded by torch directly; no pickled code runs."""

from __future__ import annotations

import builtins
import collections
import json
import os
import subprocess
import sys
import types
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from reidctl.cli import main
from reidctl.errors import CheckpointError
from reidctl.models.checkpoints import Placeholder, read_checkpoint, sniff_format
from reidctl.models.loading import create_model

SMALL = "osnet_x0_25"
NUM_CLASSES = 7


def _perturbed(module: torch.nn.Module, seed: int) -> collections.OrderedDict:
    """The module's state dict, float tensors replaced by seeded values (running_var > 0)."""
    g = torch.Generator().manual_seed(seed)
    out = collections.OrderedDict()
    for k, v in module.state_dict().items():
        if v.is_floating_point():
            v = torch.rand(v.shape, generator=g) * 0.1 + (1.0 if "running_var" in k else 0.0)
        out[k] = v.clone()
    return out


def _no_metadata(sd: dict) -> collections.OrderedDict:
    """A plain OrderedDict without ``_metadata``, as PyTorch 0.3 wrote state dicts."""
    out = collections.OrderedDict((k, v) for k, v in sd.items())
    assert not hasattr(out, "_metadata")
    return out


def _osnet(num_classes: int | None = NUM_CLASSES) -> torch.nn.Module:
    from reidctl.models.osnet import build

    return build(SMALL, num_classes)


def _reference(module: torch.nn.Module, sd: dict) -> torch.nn.Module:
    """The model with ``sd`` loaded by torch itself (strict), in eval mode."""
    module.load_state_dict(sd, strict=True)
    return module.eval()


def _export_and_compare(
    model: str, weights: Path, reference: torch.nn.Module, tmp_path: Path, rtol: float = 1e-4
) -> dict:
    """Export ``weights`` with reidctl and compare onnxruntime with ``reference``'s forward."""
    from reidctl.convert.onnx import onnx_from_torch

    out = tmp_path / f"{model}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # safe loading: no --allow-pickle warning
        sidecar = onnx_from_torch(model, out, weights=weights, validate_batches=(2,))
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((2, 3, 256, 128), dtype=np.float32)
    names = [o.name for o in sess.get_outputs()]
    got = sess.run(names, {"image": x})
    with torch.no_grad():
        want = reference(torch.from_numpy(x))
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        w = w.numpy()
        assert g.shape == w.shape
        assert np.abs(g - w).max() <= rtol * np.abs(w).max()
    assert sidecar["weights"]["path"] == str(weights.resolve())
    return sidecar


def _inspect_json(path: Path, capsys) -> dict:
    capsys.readouterr()
    assert main(["inspect", str(path), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def _inspect_text(path: Path, capsys) -> str:
    capsys.readouterr()
    assert main(["inspect", str(path)]) == 0
    return capsys.readouterr().out


# --------------------------------------------------------------------- AlignedReID, PyTorch 0.3


@pytest.fixture(scope="module")
def aligned_file(tmp_path_factory) -> tuple[Path, collections.OrderedDict]:
    """AlignedReID's ckpt.pth as PyTorch 0.3 saved it: legacy format, no num_batches_tracked."""
    from reidctl.models.aligned_reid import AlignedReID

    full = _perturbed(AlignedReID(num_classes=NUM_CLASSES), seed=3)
    sd = _no_metadata({k: v for k, v in full.items() if not k.endswith("num_batches_tracked")})
    assert len(full) - len(sd) == 54  # one counter per BatchNorm
    optim_sd = {
        "state": {},
        "param_groups": [{"lr": 2e-4, "weight_decay": 5e-4, "params": list(range(4))}],
    }
    path = tmp_path_factory.mktemp("aligned") / "ckpt.pth"
    torch.save(
        {"state_dicts": [sd, optim_sd], "ep": 150, "scores": 0},
        path,
        _use_new_zipfile_serialization=False,
    )
    return path, sd


def test_aligned_reid_pytorch03_file_is_legacy_and_torch_accepts_it(aligned_file) -> None:
    from reidctl.models.aligned_reid import AlignedReID

    path, sd = aligned_file
    assert sniff_format(path) == "legacy"
    assert path.read_bytes()[:2] == b"\x80\x02"  # a bare pickle stream, not a zip archive
    # torch's own strict loading tolerates the missing counters of a metadata-less dict
    AlignedReID(num_classes=NUM_CLASSES).load_state_dict(sd, strict=True)


@pytest.mark.slow
def test_aligned_reid_pytorch03_checkpoint_exports(aligned_file, tmp_path: Path) -> None:
    from reidctl.models.aligned_reid import AlignedReID

    path, sd = aligned_file
    loaded = create_model("aligned_reid", weights=path)
    assert loaded.num_classes == NUM_CLASSES
    got = loaded.module.state_dict()
    assert all(torch.equal(got[k], v) for k, v in sd.items())
    assert all(int(got[k]) == 0 for k in got if k.endswith("num_batches_tracked"))
    reference = _reference(AlignedReID(num_classes=NUM_CLASSES), sd)
    _export_and_compare("aligned_reid", path, reference, tmp_path)


def test_missing_counters_tolerated_for_every_model(tmp_path: Path) -> None:
    sd = {k: v for k, v in _perturbed(_osnet(), seed=1).items() if "num_batches" not in k}
    path = tmp_path / "old.pth"
    torch.save(_no_metadata(sd), path, _use_new_zipfile_serialization=False)
    got = create_model(SMALL, weights=path).module.state_dict()
    assert all(torch.equal(got[k], v) for k, v in sd.items())


def test_inspect_aligned_reid(aligned_file, capsys) -> None:
    path, sd = aligned_file
    report = _inspect_json(path, capsys)
    assert report["format"] == "legacy"
    assert report["layout"] == "aligned_reid"
    assert report["tensors"] == len(sd) == 273
    assert report["parameters"] == sum(v.numel() for v in sd.values())
    assert report["metadata"] == {"ep": 150, "scores": 0}
    assert report["key_prefixes"] == {"base": 265, "fc": 2, "local_bn": 4, "local_conv": 2}
    best = report["fits"][0]
    assert best["model"] == "aligned_reid" and best["fits"] is True
    assert best["facts"] == {"num_classes": NUM_CLASSES}
    assert [f["model"] for f in report["fits"] if f["fits"]] == ["aligned_reid"]
    assert report["safe_load"] == {
        "ok": True,
        "refused": None,
        "placeholders": [],
        "full_pickle": False,
    }
    text = _inspect_text(path, capsys)
    assert "format     legacy" in text
    assert "layout     aligned_reid" in text
    assert "tensors    273" in text
    assert "aligned_reid: fits; classes 7" in text
    assert "safe load  ok: only tensors" in text


def test_wrong_model_names_the_model_the_keys_fit(aligned_file, tmp_path: Path, capsys) -> None:
    path, _ = aligned_file
    out = tmp_path / "ctl.onnx"
    code = main(["export", "centroids_reid", "--weights", str(path), "-o", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    assert "do not fit the model" in err
    assert "fit `aligned_reid`, not `centroids_reid`" in err
    assert f"reidctl export aligned_reid --weights {path}" in err
    assert "check that the checkpoint belongs" not in err
    assert "Traceback" not in err and not out.exists()


# --------------------------------------------------------------------- Lightning / yacs


def _fake_class(module: types.ModuleType, name: str, base: type = dict) -> type:
    cls = type(name, (base,), {"__module__": module.__name__, "__qualname__": name})
    setattr(module, name, cls)
    return cls


@pytest.fixture(scope="module", params=["zip", "legacy"])
def lightning_file(request, tmp_path_factory) -> tuple[Path, dict, Path]:
    """A Centroids-ReID Lightning .ckpt whose hyper_parameters pickle an AttributeDict of
    yacs CfgNodes, and whose callbacks are keyed by a Lightning class: saved while fake
    ``yacs`` / ``pytorch_lightning`` modules exist, loaded after they are gone."""
    from reidctl.models.centroids_reid import CentroidsReID

    tmp = tmp_path_factory.mktemp(f"lightning-{request.param}")
    marker = tmp / "setstate-ran"
    names = [
        "yacs",
        "yacs.config",
        "pytorch_lightning",
        "pytorch_lightning.utilities",
        "pytorch_lightning.utilities.parsing",
        "pytorch_lightning.callbacks",
        "pytorch_lightning.callbacks.model_checkpoint",
    ]
    assert not any(n in sys.modules for n in names)
    mods = {n: types.ModuleType(n) for n in names}
    cfg_node = _fake_class(mods["yacs.config"], "CfgNode")
    # a class whose unpickling would run code, if its class were ever imported
    cfg_node.__setstate__ = lambda self, state: marker.write_text("ran")
    attribute_dict = _fake_class(mods["pytorch_lightning.utilities.parsing"], "AttributeDict")
    checkpoint_cb = _fake_class(
        mods["pytorch_lightning.callbacks.model_checkpoint"], "ModelCheckpoint", object
    )

    own = _perturbed(CentroidsReID(), seed=5)
    lightning_sd = {("backbone." + k if k.startswith("base.") else k): v for k, v in own.items()}
    lightning_sd["fc_query.weight"] = torch.randn(NUM_CLASSES, 2048)
    lightning_sd["center_loss.centers"] = torch.randn(NUM_CLASSES, 2048)
    model_cfg = cfg_node({"NAME": "resnet50", "LAST_STRIDE": 1, "PRETRAIN_PATH": "r50.pth"})
    model_cfg.__dict__.update({"__immutable__": True, "__new_allowed__": False})
    cfg = cfg_node({"MODEL": model_cfg, "SOLVER": cfg_node({"BASE_LR": 3.5e-4})})
    cfg.__dict__.update({"__immutable__": True, "__new_allowed__": False})
    ckpt = {
        "epoch": 119,
        "global_step": 1000,
        "pytorch-lightning_version": "1.1.4",
        "state_dict": lightning_sd,
        "callbacks": {checkpoint_cb: {"best_model_score": torch.tensor(0.91), "monitor": "mAP"}},
        "optimizer_states": [{"state": {}, "param_groups": [{"lr": 3.5e-4, "params": [0]}]}],
        "lr_schedulers": [{"milestones": {40: 1, 70: 1}, "last_epoch": 119}],
        "hparams_name": "kwargs",
        "hyper_parameters": attribute_dict({"cfg": cfg, "num_classes": NUM_CLASSES}),
    }
    path = tmp / "epoch=119.ckpt"
    try:
        sys.modules.update(mods)
        torch.save(ckpt, path, _use_new_zipfile_serialization=request.param == "zip")
    finally:
        for n in names:
            sys.modules.pop(n, None)
        assert not any(n in sys.modules for n in names)
    return path, own, marker


def test_lightning_without_its_packages_reads_safely(lightning_file) -> None:
    path, _, marker = lightning_file
    raw = read_checkpoint(path)
    assert raw.placeholders == (
        "pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint",
        "pytorch_lightning.utilities.parsing.AttributeDict",
        "yacs.config.CfgNode",
    )
    assert not marker.exists()  # the CfgNode's __setstate__ never ran
    assert "yacs" not in sys.modules and "pytorch_lightning" not in sys.modules
    hp = raw.obj["hyper_parameters"]
    assert isinstance(hp, Placeholder) and hp.pickled_global.endswith("AttributeDict")
    cfg = hp["cfg"]
    assert cfg["MODEL"]["NAME"] == "resnet50" and cfg["SOLVER"]["BASE_LR"] == 3.5e-4
    assert cfg.pickled_state == {"__immutable__": True, "__new_allowed__": False}
    assert hp["num_classes"] == NUM_CLASSES


def test_lightning_full_pickle_still_needs_the_packages(lightning_file) -> None:
    path, _, marker = lightning_file
    with (
        pytest.warns(UserWarning, match="arbitrary code"),
        pytest.raises(CheckpointError, match=r"No module named '(yacs|pytorch_lightning)'"),
    ):
        create_model("centroids_reid", weights=path, allow_pickle=True)
    assert not marker.exists()


@pytest.mark.slow
def test_lightning_checkpoint_exports(lightning_file, tmp_path: Path) -> None:
    from reidctl.models.centroids_reid import CentroidsReID

    path, own, marker = lightning_file
    reference = _reference(CentroidsReID(), own)
    _export_and_compare("centroids_reid", path, reference, tmp_path)
    assert not marker.exists()


def test_inspect_lightning(lightning_file, capsys) -> None:
    path, own, _ = lightning_file
    report = _inspect_json(path, capsys)
    assert report["format"] == sniff_format(path)
    assert report["layout"] == "lightning"
    assert "Lightning 1.1.4" in report["layout_description"]
    assert report["metadata"]["epoch"] == 119
    assert report["metadata"]["pytorch-lightning_version"] == "1.1.4"
    assert report["tensors"] == len(own) + 2
    assert report["key_prefixes"]["backbone"] == sum(k.startswith("base.") for k in own)
    assert report["key_prefixes"]["fc_query"] == 1
    assert report["fits"][0]["model"] == "centroids_reid" and report["fits"][0]["fits"]
    assert report["safe_load"]["placeholders"] == [
        "pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint",
        "pytorch_lightning.utilities.parsing.AttributeDict",
        "yacs.config.CfgNode",
    ]
    text = _inspect_text(path, capsys)
    assert "layout     lightning" in text
    assert "centroids_reid: fits" in text
    assert "3 globals kept as placeholders" in text and "yacs.config.CfgNode" in text


# --------------------------------------------------------------------- code in the pickle


class _Payload:
    """A pickle that runs ``func(*args)`` when loaded (what malicious checkpoints do)."""

    def __init__(self, func, args) -> None:
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _payloads(marker: Path) -> dict[str, tuple[object, tuple]]:
    return {
        "posix.system": (os.system, (f"touch {marker}",)),
        "builtins.exec": (builtins.exec, (f"open({str(marker)!r}, 'w').close()",)),
        "subprocess.check_call": (subprocess.check_call, (["touch", str(marker)],)),
    }


@pytest.mark.parametrize("serialisation", ["zip", "legacy"])
@pytest.mark.parametrize("name", ["posix.system", "builtins.exec", "subprocess.check_call"])
def test_code_in_the_pickle_is_refused_and_never_runs(
    tmp_path: Path, capsys, name: str, serialisation: str
) -> None:
    marker = tmp_path / "pwned"
    func, args = _payloads(marker)[name]
    sd = _perturbed(_osnet(), seed=2)
    path = tmp_path / "evil.pth"
    torch.save(
        {"state_dict": sd, "epoch": 3, "extra": _Payload(func, args)},
        path,
        _use_new_zipfile_serialization=serialisation == "zip",
    )

    with pytest.raises(CheckpointError) as exc:
        create_model(SMALL, weights=path)
    msg = str(exc.value)
    assert f"Unsupported global: GLOBAL {name}" in msg and "--allow-pickle" in msg
    assert str(path) in msg
    assert not marker.exists()

    code = main(["export", SMALL, "--weights", str(path), "-o", str(tmp_path / "a.onnx")])
    err = capsys.readouterr().err
    assert code == 2 and f"GLOBAL {name}" in err and "Traceback" not in err
    report = _inspect_json(path, capsys)
    assert report["safe_load"]["ok"] is False and report["safe_load"]["refused"] == name
    assert "REFUSED" in _inspect_text(path, capsys)
    assert not marker.exists()

    if name == "posix.system":  # the opt-in really runs it: the check above can fail
        with pytest.warns(UserWarning, match="arbitrary code"):
            create_model(SMALL, weights=path, allow_pickle=True)
        assert marker.exists()


def test_unknown_class_called_on_load_is_refused(tmp_path: Path) -> None:
    # REDUCE of a class (not a function) runs its __init__: refused the same way
    marker = tmp_path / "ran"
    mods = {n: types.ModuleType(n) for n in ("trainlib", "trainlib.hooks")}
    cls = _fake_class(mods["trainlib.hooks"], "Hook", object)
    cls.__init__ = lambda self, path: Path(path).write_text("ran")
    cls.__reduce__ = lambda self: (type(self), (str(marker),))
    path = tmp_path / "hook.pth"
    sys.modules.update(mods)
    try:
        obj = object.__new__(cls)
        torch.save({"state_dict": _perturbed(_osnet(None), seed=4), "hook": obj}, path)
    finally:
        for n in mods:
            del sys.modules[n]
    with pytest.raises(CheckpointError, match=r"GLOBAL trainlib\.hooks\.Hook"):
        read_checkpoint(path)
    assert not marker.exists()


# --------------------------------------------------------------------- torchreid, fast-reid


def _optimizer_state(module: torch.nn.Module) -> dict:
    opt = torch.optim.Adam(module.parameters(), lr=3e-4)
    return opt.state_dict()


def test_torchreid_training_checkpoint(tmp_path: Path, capsys) -> None:
    module = _osnet()
    sd = _perturbed(module, seed=6)
    path = tmp_path / "model.pth.tar-60"  # torchreid's save_checkpoint name: a zip file
    torch.save(
        {
            "state_dict": {"module." + k: v for k, v in sd.items()},
            "epoch": 60,
            "rank1": 0.8667,
            "optimizer": _optimizer_state(module),
        },
        path,
    )
    assert sniff_format(path) == "zip"
    sidecar = _export_and_compare(SMALL, path, _reference(_osnet(), sd), tmp_path)
    assert sidecar["weights"]["sha256"]
    report = _inspect_json(path, capsys)
    assert report["layout"] == "torchreid"
    assert report["metadata"] == {"epoch": 60, "rank1": 0.8667}
    assert report["wrapper_prefixes"] == {"module.": len(sd)}
    assert report["fits"][0]["model"] == SMALL and report["fits"][0]["fits"]
    assert report["fits"][0]["facts"] == {"num_classes": NUM_CLASSES}
    text = _inspect_text(path, capsys)
    assert "layout     torchreid" in text and f"stripped   module. ({len(sd)})" in text


@pytest.mark.parametrize(
    ("version", "extra"),
    [
        ("before v0.3", {"scheduler": {"last_epoch": 9, "base_lrs": [3.5e-4]}, "iteration": 9999}),
        (
            "v0.3+",
            {
                "lr_sched": {"last_epoch": 59, "base_lrs": [3.5e-4]},
                "warmup_sched": {"last_epoch": 10},
                "epoch": 59,
            },
        ),
    ],
)
def test_fastreid_model_final(tmp_path: Path, capsys, version: str, extra: dict) -> None:
    module = _osnet()
    sd = _perturbed(module, seed=7)
    path = tmp_path / "model_final.pth"
    torch.save({"model": sd, "optimizer": _optimizer_state(module), **extra}, path)
    _export_and_compare(SMALL, path, _reference(_osnet(), sd), tmp_path)
    report = _inspect_json(path, capsys)
    assert report["layout"] == "fastreid"
    assert version in report["layout_description"]
    assert report["fits"][0]["model"] == SMALL and report["fits"][0]["fits"]


def test_safetensors_file(tmp_path: Path, capsys) -> None:
    from safetensors.torch import save_file

    sd = _perturbed(_osnet(), seed=8)
    path = tmp_path / "osnet.safetensors"
    save_file(dict(sd), str(path), metadata={"format": "pt", "dataset": "market1501"})
    assert sniff_format(path) == "safetensors"
    _export_and_compare(SMALL, path, _reference(_osnet(), sd), tmp_path)
    report = _inspect_json(path, capsys)
    assert report["format"] == "safetensors" and report["layout"] == "safetensors"
    assert report["metadata"] == {"format": "pt", "dataset": "market1501"}
    assert report["tensors"] == len(sd)
    assert report["fits"][0]["model"] == SMALL and report["fits"][0]["fits"]


def test_damaged_safetensors_is_a_checkpoint_error(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    path = tmp_path / "cut.safetensors"
    save_file({"a": torch.zeros(1000)}, str(path))
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match=r"cut\.safetensors"):
        read_checkpoint(path)


def test_export_summary_prints_the_relative_difference(tmp_path: Path, capsys) -> None:
    out = tmp_path / "m.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["export", SMALL, "-o", str(out)]) == 0
    text = capsys.readouterr().out
    line = next(ln for ln in text.splitlines() if "validated with onnxruntime" in ln)
    sidecar = json.loads(Path(f"{out}.json").read_text())
    rel = max(r["rel_diff"] for r in sidecar["validation"]["results"])
    assert "max|onnx-torch|/max|torch|" in line
    assert f"feature {rel:.2e}" in line and "(tolerance 1e-04)" in line


def test_inspect_refuses_what_it_cannot_describe(tmp_path: Path, capsys) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("hello")
    assert main(["inspect", str(path)]) == 2
    assert "not a file reidctl can inspect" in capsys.readouterr().err
    assert main(["inspect", str(tmp_path / "missing.pth")]) == 2
    assert "not found" in capsys.readouterr().err
