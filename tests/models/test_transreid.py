"""TransReID: checkpoints in damo-cv/TransReID's own format (a bare ``state_dict`` of
``make_model``'s ``build_transformer`` / ``build_transformer_local``) load and reproduce the
project's test forward pass, written here independently from the state dict alone."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F

from reidctl.cli import main
from reidctl.convert.onnx import onnx_from_torch
from reidctl.errors import CheckpointError, InputError
from reidctl.models.loading import create_model
from tests.models.helpers import rel_diff, save_state_dict

# the factories of vit_pytorch.py: width, depth, heads, mlp ratio, qkv bias, attention scale
ARCH = {
    "transreid_vit_base": (768, 12, 12, 4, True, (768 // 12) ** -0.5),
    "transreid_vit_small": (768, 8, 8, 3, False, 768**-0.5),
    "transreid_deit_small": (384, 12, 6, 4, True, (384 // 6) ** -0.5),
}
NUM_CLASSES = 5


def _block_keys(prefix: str, d: int, mlp: int, qkv_bias: bool) -> dict[str, tuple[int, ...]]:
    keys = {
        "norm1.weight": (d,),
        "norm1.bias": (d,),
        "attn.qkv.weight": (3 * d, d),
        "attn.proj.weight": (d, d),
        "attn.proj.bias": (d,),
        "norm2.weight": (d,),
        "norm2.bias": (d,),
        "mlp.fc1.weight": (mlp * d, d),
        "mlp.fc1.bias": (mlp * d,),
        "mlp.fc2.weight": (d, mlp * d),
        "mlp.fc2.bias": (d,),
    }
    if qkv_bias:
        keys["attn.qkv.bias"] = (3 * d,)
    return {prefix + k: v for k, v in keys.items()}


def transreid_checkpoint(
    name: str, stride: int, jpm: bool, cameras: int, seed: int = 0
) -> dict[str, torch.Tensor]:
    """Random weights under make_model.py's key names and shapes (TransReID's own format)."""
    d, depth, _, mlp, qkv_bias, _ = ARCH[name]
    ny, nx = (256 - 16) // stride + 1, (128 - 16) // stride + 1
    shapes: dict[str, tuple[int, ...]] = {
        "base.cls_token": (1, 1, d),
        "base.pos_embed": (1, ny * nx + 1, d),
        "base.patch_embed.proj.weight": (d, 3, 16, 16),
        "base.patch_embed.proj.bias": (d,),
        "base.norm.weight": (d,),
        "base.norm.bias": (d,),
        "base.fc.weight": (1000, d),  # TransReID(num_classes=1000): the ImageNet head
        "base.fc.bias": (1000,),
        "classifier.weight": (NUM_CLASSES, d),
    }
    if cameras:
        shapes["base.sie_embed"] = (cameras, 1, d)
    for i in range(depth):
        shapes.update(_block_keys(f"base.blocks.{i}.", d, mlp, qkv_bias))
    necks = ["bottleneck"]
    if jpm:
        for b in ("b1", "b2"):
            shapes.update(_block_keys(f"{b}.0.", d, mlp, qkv_bias))
            shapes.update({f"{b}.1.weight": (d,), f"{b}.1.bias": (d,)})
        for i in range(1, 5):
            shapes[f"classifier_{i}.weight"] = (NUM_CLASSES, d)
        necks += [f"bottleneck_{i}" for i in range(1, 5)]
    g = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}
    for k, shape in shapes.items():
        if k.endswith(("norm1.weight", "norm2.weight", "norm.weight", ".1.weight")):
            sd[k] = 1.0 + 0.1 * torch.randn(shape, generator=g)
        elif k.endswith("embed") or k.endswith("token"):
            sd[k] = 0.5 * torch.randn(shape, generator=g)
        else:
            sd[k] = 0.02 * torch.randn(shape, generator=g)
    for n in necks:
        sd[f"{n}.weight"] = 1.0 + 0.1 * torch.randn(d, generator=g)
        sd[f"{n}.bias"] = 0.1 * torch.randn(d, generator=g)
        sd[f"{n}.running_mean"] = 0.1 * torch.randn(d, generator=g)
        sd[f"{n}.running_var"] = 0.5 + torch.rand(d, generator=g)
        sd[f"{n}.num_batches_tracked"] = torch.tensor(100)
    return sd


# ------------------------------------------------------ the reference forward, written here


def ref_shuffle_unit(features: torch.Tensor, shift: int, group: int, begin: int = 1):
    """make_model.py's shuffle_unit, step by step, with its padding fallback."""
    batchsize, dim = features.size(0), features.size(-1)
    x = torch.cat([features[:, begin - 1 + shift :], features[:, begin : begin - 1 + shift]], 1)
    if x.shape[1] % group:
        x = torch.cat([x, x[:, -2:-1, :]], dim=1)
    x = x.view(batchsize, group, -1, dim)
    x = torch.transpose(x, 1, 2).contiguous()
    return x.view(batchsize, -1, dim)


def ref_block(sd, p: str, x: torch.Tensor, heads: int, scale: float) -> torch.Tensor:
    d = x.shape[-1]
    h = F.layer_norm(x, (d,), sd[p + "norm1.weight"], sd[p + "norm1.bias"], eps=1e-6)
    qkv = F.linear(h, sd[p + "attn.qkv.weight"], sd.get(p + "attn.qkv.bias"))
    b, n, _ = x.shape
    q, k, v = qkv.reshape(b, n, 3, heads, d // heads).permute(2, 0, 3, 1, 4)
    o = F.scaled_dot_product_attention(q, k, v, scale=scale)
    x = x + F.linear(
        o.transpose(1, 2).reshape(b, n, d), sd[p + "attn.proj.weight"], sd[p + "attn.proj.bias"]
    )
    h = F.layer_norm(x, (d,), sd[p + "norm2.weight"], sd[p + "norm2.bias"], eps=1e-6)
    h = F.gelu(F.linear(h, sd[p + "mlp.fc1.weight"], sd[p + "mlp.fc1.bias"]))
    return x + F.linear(h, sd[p + "mlp.fc2.weight"], sd[p + "mlp.fc2.bias"])


def ref_sie_tokens(sd, x, camera, stride: int, sie_coe: float, fixed: int | None = None):
    """patch embedding, class token, positions; SIE ``sie_coe * sie_embed[camera]`` on
    every token (vit_pytorch.py forward_features)."""
    t = F.conv2d(
        x, sd["base.patch_embed.proj.weight"], sd["base.patch_embed.proj.bias"], stride=stride
    )
    t = t.flatten(2).transpose(1, 2)
    t = torch.cat([sd["base.cls_token"].expand(x.shape[0], -1, -1), t], dim=1)
    t = t + sd["base.pos_embed"]
    if camera is not None:
        t = t + sie_coe * sd["base.sie_embed"][camera]
    elif fixed is not None:
        t = t + sie_coe * sd["base.sie_embed"][fixed]
    return t


def ref_transreid(
    sd,
    name,
    x,
    camera=None,
    *,
    stride,
    sie_coe=3.0,
    shift=5,
    groups=2,
    divide=4,
    fixed=None,
    neck="before",
):
    d, depth, heads, _, _, scale = ARCH[name]
    t = ref_sie_tokens(sd, x, camera, stride, sie_coe, fixed)
    jpm = "b1.0.norm1.weight" in sd

    def bn(f, n):
        return F.batch_norm(
            f,
            sd[n + ".running_mean"],
            sd[n + ".running_var"],
            sd[n + ".weight"],
            sd[n + ".bias"],
            eps=1e-5,
        )

    if not jpm:
        for i in range(depth):
            t = ref_block(sd, f"base.blocks.{i}.", t, heads, scale)
        g = F.layer_norm(t, (d,), sd["base.norm.weight"], sd["base.norm.bias"], eps=1e-6)[:, 0]
        return bn(g, "bottleneck") if neck == "after" else g
    for i in range(depth - 1):
        t = ref_block(sd, f"base.blocks.{i}.", t, heads, scale)

    def branch(b, z):
        z = ref_block(sd, f"{b}.0.", z, heads, scale)
        return F.layer_norm(z, (d,), sd[f"{b}.1.weight"], sd[f"{b}.1.bias"], eps=1e-6)[:, 0]

    g = branch("b1", t)
    patch_length = (t.size(1) - 1) // divide
    y = ref_shuffle_unit(t, shift, groups)
    loc = [
        branch("b2", torch.cat((t[:, 0:1], y[:, patch_length * i : patch_length * (i + 1)]), dim=1))
        for i in range(4)
    ]
    if neck == "after":
        g = bn(g, "bottleneck")
        loc = [bn(f, f"bottleneck_{i + 1}") for i, f in enumerate(loc)]
    return torch.cat([g] + [f / 4 for f in loc], dim=1)


_rel = rel_diff


def _save(tmp_path: Path, sd: dict[str, torch.Tensor], name: str = "transformer_120.pth") -> Path:
    return save_state_dict(tmp_path, sd, name)


def _images(batch: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, 3, 256, 128, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------- tests


@pytest.mark.parametrize(
    ("name", "stride", "jpm", "cameras"),
    [
        ("transreid_vit_base", 12, True, 6),  # vit_transreid_stride.yml
        ("transreid_vit_small", 16, False, 0),  # no qkv bias, scale 768 ** -0.5
        ("transreid_vit_small", 16, True, 8),
        ("transreid_deit_small", 12, False, 15),  # MSMT17 has 15 cameras
    ],
)
def test_checkpoint_loads_and_matches_reference_forward(tmp_path, name, stride, jpm, cameras):
    sd = transreid_checkpoint(name, stride, jpm, cameras)
    loaded = create_model(name, weights=_save(tmp_path, sd))
    m = loaded.module
    assert (m.stride, m.jpm, m.num_cameras) == (stride, jpm, cameras)
    assert m.takes_camera == (cameras > 0)
    assert m.ignored_keys == {
        "base.fc.*": 2,
        "classifier*": 5 if jpm else 1,
    }
    d = ARCH[name][0]
    assert m.output_shapes == {"feature": (5 * d if jpm else d,)}
    x = _images(3)
    cam = torch.tensor([0, cameras - 1, cameras // 2]) if cameras else None
    with torch.no_grad():
        (got,) = m(x, cam) if cameras else m(x)
        ref = ref_transreid(sd, name, x, cam, stride=stride)
    assert got.shape == (3, 5 * d if jpm else d)
    assert _rel(ref, got) <= 1e-5


def test_neck_after_and_config_settings(tmp_path: Path) -> None:
    name = "transreid_vit_small"
    sd = transreid_checkpoint(name, 16, True, 3, seed=2)
    m = create_model(name, weights=_save(tmp_path, sd)).module
    cfg = tmp_path / "vit_jpm.yml"
    cfg.write_text(
        "MODEL:\n  NAME: 'transformer'\n  TRANSFORMER_TYPE: 'vit_small_patch16_224_TransReID'\n"
        "  STRIDE_SIZE: [16, 16]\n  SIE_CAMERA: True\n  SIE_COE: 1.5\n  JPM: True\n"
        "  SHIFT_NUM: 3\n  SHUFFLE_GROUP: 4\n  DEVICE_ID: ('5')\n"
        "INPUT:\n  SIZE_TEST: [256, 128]\n  PIXEL_MEAN: [0.5, 0.5, 0.5]\n"
        "TEST:\n  NECK_FEAT: 'after'\n"
    )
    settings = m.configure(config=cfg, jpm_divide=3)  # an explicit value wins over the file
    assert settings == {
        "stride": 16,
        "jpm": True,
        "neck_feat": "after",
        "shift": 3,
        "shuffle_groups": 4,
        "divide_length": 3,
        "rearrange": True,
    }
    assert m.camera_settings()["sie_coefficient"] == 1.5
    x, cam = _images(2, seed=4), torch.tensor([2, 1])
    with torch.no_grad():
        (got,) = m(x, cam)
    ref = ref_transreid(
        sd, name, x, cam, stride=16, sie_coe=1.5, shift=3, groups=4, divide=3, neck="after"
    )
    assert _rel(ref, got) <= 1e-5

    bad = tmp_path / "vit_base.yml"
    bad.write_text("MODEL:\n  JPM: False\n")
    with pytest.raises(InputError, match=r"MODEL\.JPM is False but the weights say True"):
        m.configure(config=bad)


def test_shuffle_unit_matches_the_reference_with_and_without_padding() -> None:
    from reidctl.models.transreid import shuffle_unit

    g = torch.Generator().manual_seed(0)
    for tokens, shift, groups in [(129, 5, 2), (211, 5, 2), (130, 5, 2), (129, 3, 4), (131, 1, 2)]:
        t = torch.randn(2, tokens, 8, generator=g)
        ref = ref_shuffle_unit(t, shift, groups)
        torch.testing.assert_close(shuffle_unit(t, shift, groups), ref, rtol=0, atol=0)
    # a hand-worked case: 1 class token + 6 patches, shift 3, 2 groups
    t = torch.arange(7.0).view(1, 7, 1)
    # shifted: patches 3 4 5 6 1 2 -> rows [3 4 5], [6 1 2] -> columns: 3 6 4 1 5 2
    assert shuffle_unit(t, 3, 2).flatten().tolist() == [3, 6, 4, 1, 5, 2]


def test_sie_is_added_to_every_token() -> None:
    from reidctl.models.transreid import build

    m = build("transreid_deit_small")
    m.remap_state_dict(transreid_checkpoint("transreid_deit_small", 16, False, 4))
    with torch.no_grad():
        m.base.sie_embed.normal_()
        x = _images(2)
        cam = torch.tensor([3, 1])
        plain = m.base.embed(x, None)
        with_sie = m.base.embed(x, m._sie(cam))
    expected = plain + 3.0 * m.base.sie_embed.detach()[cam]  # [2, 1, D] broadcast on tokens
    torch.testing.assert_close(with_sie, expected)
    assert with_sie.shape == (2, 129, 384)
    assert not torch.allclose(with_sie[:, 5], plain[:, 5])  # patch tokens too, not only cls


def test_camera_changes_features_and_agnostic_modes(tmp_path: Path) -> None:
    name = "transreid_deit_small"
    sd = transreid_checkpoint(name, 16, False, 6, seed=3)
    path = _save(tmp_path, sd)
    m = create_model(name, weights=path).module
    x = _images(2, seed=5)
    with torch.no_grad():
        (f0,) = m(x, torch.tensor([0, 0]))
        (f4,) = m(x, torch.tensor([4, 4]))
    assert _rel(f0, f4) > 1e-2  # another camera, another feature

    with pytest.raises(InputError, match="camera input"):
        m(x)
    with pytest.raises(InputError, match="--camera-agnostic"):
        m.configure(sie_camera=2)
    with pytest.raises(InputError, match="out of range"):
        m.configure(camera_agnostic=True, sie_camera=6)

    m.configure(camera_agnostic=True, sie_camera=4)
    assert not m.takes_camera
    with torch.no_grad():
        (fixed,) = m(x)
    torch.testing.assert_close(fixed, f4, rtol=1e-5, atol=1e-6)
    m.configure(camera_agnostic=True)
    with torch.no_grad():
        (none,) = m(x)
    assert _rel(ref_transreid(sd, name, x, None, stride=16), none) <= 1e-5
    assert m.camera_settings() == {
        "num_cameras": 6,
        "sie_coefficient": 3.0,
        "camera_agnostic": True,
        "sie_camera": None,
    }

    # exported: one input, equal to the camera-4 model
    out = tmp_path / "agnostic.onnx"
    sidecar = onnx_from_torch(
        name,
        out,
        weights=path,
        options={"camera_agnostic": True, "sie_camera": 4},
        validate_batches=(2,),
    )
    proto = onnx.load(str(out))
    assert [i.name for i in proto.graph.input] == ["image"]
    assert [i["name"] for i in sidecar["inputs"]] == ["image"]
    assert sidecar["camera"]["sie_camera"] == 4 and sidecar["camera"]["camera_agnostic"]
    (got,) = ort.InferenceSession(str(out)).run(None, {"image": x.numpy()})
    assert _rel(f4, got) <= 1e-4


def test_unsupported_checkpoints_are_refused(tmp_path: Path) -> None:
    sd = transreid_checkpoint("transreid_deit_small", 16, False, 0)
    sd["base.pos_embed"] = torch.zeros(1, 193, 384)  # a 384x128 model
    with pytest.raises(CheckpointError, match="192 patch positions"):
        create_model("transreid_deit_small", weights=_save(tmp_path, sd, "a.pth"))
    sd = transreid_checkpoint("transreid_vit_base", 16, False, 0)
    with pytest.raises(CheckpointError, match=r"shape mismatches \(154\)"):  # ViT-B file
        create_model("transreid_deit_small", weights=_save(tmp_path, sd, "b.pth"))
    sd = transreid_checkpoint("transreid_deit_small", 16, False, 0)
    sd.update(
        {
            k: v
            for k, v in transreid_checkpoint("transreid_vit_base", 16, True, 0).items()
            if k.startswith("b2.")
        }
    )
    with pytest.raises(CheckpointError, match="JPM branches"):
        create_model("transreid_deit_small", weights=_save(tmp_path, sd, "c.pth"))


def test_cli_rejects_options_a_model_does_not_take(tmp_path: Path, capsys) -> None:
    code = main(["export", "osnet_x0_25", "--sie-coe", "2", "-o", str(tmp_path / "o.onnx")])
    assert code == 2 and "takes no model options (got --sie-coe)" in capsys.readouterr().err


@pytest.mark.slow
def test_export_stride12_jpm_sie_checkpoint_at_batch_1_3_32(tmp_path: Path, capsys) -> None:
    """vit_transreid_stride.yml's network: two-input ONNX equal to PyTorch and the reference."""
    name = "transreid_vit_base"
    sd = transreid_checkpoint(name, 12, True, 6, seed=7)
    path = _save(tmp_path, sd)
    out = tmp_path / "transreid.onnx"
    code = main(["export", name, "--weights", str(path), "-o", str(out), "--first-camera", "1"])
    log = capsys.readouterr().out
    assert code == 0
    assert "input   camera ['batch'] int64" in log and "6 cameras" in log
    assert "ignored base.fc.* (2 tensors" in log and "ignored classifier* (5 tensors" in log
    from reidctl.artifacts import read_sidecar

    sidecar = read_sidecar(out)
    assert sidecar["inputs"][1] == {"name": "camera", "shape": ["batch"], "dtype": "int64"}
    assert sidecar["outputs"] == [{"name": "feature", "shape": ["batch", 3840], "dtype": "float32"}]
    assert sidecar["camera"] == {
        "num_cameras": 6,
        "sie_coefficient": 3.0,
        "input": "camera",
        "index": "camid - first_camera",
        "first_camera": 1,
    }
    assert sidecar["model_settings"]["stride"] == 12 and sidecar["model_settings"]["jpm"]
    results = sidecar["validation"]["results"]
    assert {r["batch"] for r in results} == {1, 3, 32}
    assert all(r["rel_diff"] <= 1e-4 for r in results)

    m = create_model(name, weights=path).module
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    for batch in (1, 3, 32):
        x = _images(batch, seed=batch)
        cam = torch.arange(batch) % 6
        (got,) = sess.run(["feature"], {"image": x.numpy(), "camera": cam.numpy()})
        with torch.no_grad():
            (ref,) = m(x, cam)
        assert got.shape == (batch, 3840)
        assert _rel(ref, got) <= 1e-4
        if batch == 3:
            assert _rel(ref_transreid(sd, name, x, cam, stride=12), got) <= 1e-4
    # the camera input is live in the graph
    x = _images(1, seed=9).numpy()
    (a,) = sess.run(None, {"image": x, "camera": np.array([0])})
    (b,) = sess.run(None, {"image": x, "camera": np.array([5])})
    assert _rel(a, b) > 1e-2
    assert math.isfinite(float(np.abs(a).max()))


def test_torch_and_ort_runners_take_the_camera_input(tmp_path: Path) -> None:
    from reidctl.runners import get_runner

    name = "transreid_deit_small"
    path = _save(tmp_path, transreid_checkpoint(name, 16, False, 3, seed=8))
    out = tmp_path / "deit.onnx"
    onnx_from_torch(name, out, weights=path, options={"sie_coe": 2.0}, validate_batches=(4,))
    feeds = {"image": _images(4, seed=3).numpy(), "camera": np.array([2, 0, 1, 2])}
    results = {}
    for backend in ("torch", "ort"):
        with get_runner(backend)(str(out)) as runner:
            specs = runner.input_specs()
            assert [(s.name, s.dtype) for s in specs] == [("image", "float32"), ("camera", "int64")]
            results[backend] = runner.infer(feeds)["feature"]
    # the torch runner applied the sidecar's SIE coefficient: both run the same network
    assert _rel(results["torch"], results["ort"]) <= 1e-4
    m = create_model(name, weights=path).module
    with torch.no_grad():
        (default_coe,) = m(torch.from_numpy(feeds["image"]), torch.from_numpy(feeds["camera"]))
    assert _rel(default_coe, results["torch"]) > 1e-3  # 2.0, not the default 3.0
