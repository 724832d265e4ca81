"""CLIP-ReID: checkpoints in Syliz517/CLIP-ReID's own format (a bare ``state_dict`` of
``make_model_clipreid.build_transformer``, text side included) load and reproduce the
project's test forward pass, written here independently (``nn.MultiheadAttention`` and
``F.multi_head_attention_forward``, as ``model/clip/model.py`` calls them)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F

from reidctl.cli import main
from reidctl.convert.onnx import onnx_from_torch
from reidctl.errors import InputError
from reidctl.models.loading import create_model

NUM_CLASSES = 5
TEXT_LAYERS = 2  # CLIP has 12; the count does not matter to the image side


def _bn(prefix: str, c: int) -> dict[str, tuple[int, ...]]:
    return {f"{prefix}.{k}": (c,) for k in ("weight", "bias", "running_mean", "running_var")} | {
        f"{prefix}.num_batches_tracked": ()
    }


def _resblock(prefix: str, d: int) -> dict[str, tuple[int, ...]]:
    return {
        f"{prefix}.attn.in_proj_weight": (3 * d, d),
        f"{prefix}.attn.in_proj_bias": (3 * d,),
        f"{prefix}.attn.out_proj.weight": (d, d),
        f"{prefix}.attn.out_proj.bias": (d,),
        f"{prefix}.ln_1.weight": (d,),
        f"{prefix}.ln_1.bias": (d,),
        f"{prefix}.mlp.c_fc.weight": (4 * d, d),
        f"{prefix}.mlp.c_fc.bias": (4 * d,),
        f"{prefix}.mlp.c_proj.weight": (d, 4 * d),
        f"{prefix}.mlp.c_proj.bias": (d,),
        f"{prefix}.ln_2.weight": (d,),
        f"{prefix}.ln_2.bias": (d,),
    }


def _text_side() -> dict[str, tuple[int, ...]]:
    shapes = {
        "prompt_learner.cls_ctx": (NUM_CLASSES, 4, 512),
        "prompt_learner.token_prefix": (1, 5, 512),
        "prompt_learner.token_suffix": (1, 68, 512),
        "text_encoder.positional_embedding": (77, 512),
        "text_encoder.text_projection": (512, 512),
        "text_encoder.ln_final.weight": (512,),
        "text_encoder.ln_final.bias": (512,),
    }
    for i in range(TEXT_LAYERS):
        shapes |= _resblock(f"text_encoder.transformer.resblocks.{i}", 512)
    return shapes


def _randomise(shapes: dict[str, tuple[int, ...]], seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for k, shape in shapes.items():
        if k.endswith("num_batches_tracked"):
            sd[k] = torch.tensor(10)
        elif k.endswith("running_var"):
            sd[k] = 0.5 + torch.rand(shape, generator=g)
        elif k.endswith("running_mean") or k.endswith("bias"):
            sd[k] = 0.1 * torch.randn(shape, generator=g)
        elif "ln_" in k or "bn" in k or "bottleneck" in k or k.endswith("downsample.1.weight"):
            base = 0.3 if k.endswith(("bn3.weight", "downsample.1.weight")) else 1.0
            sd[k] = base + 0.1 * torch.randn(shape, generator=g)
        elif len(shape) >= 2 and "embed" not in k and not k.endswith("proj"):
            fan_in = int(np.prod(shape[1:]))
            sd[k] = torch.randn(shape, generator=g) * (1.0 / fan_in) ** 0.5
        else:
            sd[k] = 0.5 * torch.randn(shape, generator=g)
    return sd


def vit_checkpoint(stride: int = 16, cameras: int = 6, seed: int = 0) -> dict[str, torch.Tensor]:
    """build_transformer('ViT-B-16') state dict: image_encoder = CLIP visual, cv_embed (SIE),
    BN necks, classifiers, prompt learner, text encoder."""
    ny, nx = (256 - 16) // stride + 1, (128 - 16) // stride + 1
    shapes: dict[str, tuple[int, ...]] = {
        "image_encoder.conv1.weight": (768, 3, 16, 16),
        "image_encoder.class_embedding": (768,),
        "image_encoder.positional_embedding": (ny * nx + 1, 768),
        "image_encoder.ln_pre.weight": (768,),
        "image_encoder.ln_pre.bias": (768,),
        "image_encoder.ln_post.weight": (768,),
        "image_encoder.ln_post.bias": (768,),
        "image_encoder.proj": (768, 512),
        "classifier.weight": (NUM_CLASSES, 768),
        "classifier_proj.weight": (NUM_CLASSES, 512),
    }
    for i in range(12):
        shapes |= _resblock(f"image_encoder.transformer.resblocks.{i}", 768)
    if cameras:
        shapes["cv_embed"] = (cameras, 768)
    shapes |= _bn("bottleneck", 768) | _bn("bottleneck_proj", 512) | _text_side()
    sd = _randomise(shapes, seed)
    sd["image_encoder.proj"] = sd["image_encoder.proj"] * 768**-0.5
    return sd


def rn50_checkpoint(seed: int = 0, with_cv_embed: bool = True) -> dict[str, torch.Tensor]:
    """build_transformer('RN50') state dict: CLIP's ModifiedResNet (layer 4 stride 1)."""
    shapes: dict[str, tuple[int, ...]] = {
        "image_encoder.conv1.weight": (32, 3, 3, 3),
        "image_encoder.conv2.weight": (32, 32, 3, 3),
        "image_encoder.conv3.weight": (64, 32, 3, 3),
    }
    for i, c in ((1, 32), (2, 32), (3, 64)):
        shapes |= _bn(f"image_encoder.bn{i}", c)
    inplanes = 64
    for layer, (planes, blocks) in enumerate(((64, 3), (128, 4), (256, 6), (512, 3)), 1):
        for j in range(blocks):
            p = f"image_encoder.layer{layer}.{j}"
            shapes[f"{p}.conv1.weight"] = (planes, inplanes, 1, 1)
            shapes[f"{p}.conv2.weight"] = (planes, planes, 3, 3)
            shapes[f"{p}.conv3.weight"] = (planes * 4, planes, 1, 1)
            shapes |= (
                _bn(f"{p}.bn1", planes) | _bn(f"{p}.bn2", planes) | _bn(f"{p}.bn3", planes * 4)
            )
            if j == 0:
                shapes[f"{p}.downsample.0.weight"] = (planes * 4, inplanes, 1, 1)
                shapes |= _bn(f"{p}.downsample.1", planes * 4)
            inplanes = planes * 4
    shapes["image_encoder.attnpool.positional_embedding"] = (129, 2048)
    for n in ("q", "k", "v"):
        shapes[f"image_encoder.attnpool.{n}_proj.weight"] = (2048, 2048)
        shapes[f"image_encoder.attnpool.{n}_proj.bias"] = (2048,)
    shapes["image_encoder.attnpool.c_proj.weight"] = (1024, 2048)
    shapes["image_encoder.attnpool.c_proj.bias"] = (1024,)
    shapes |= {
        "classifier.weight": (NUM_CLASSES, 2048),
        "classifier_proj.weight": (NUM_CLASSES, 1024),
    }
    if with_cv_embed:
        shapes["cv_embed"] = (6, 2048)
    shapes |= _bn("bottleneck", 2048) | _bn("bottleneck_proj", 1024) | _text_side()
    return _randomise(shapes, seed)


# ------------------------------------------------------ the reference forwards, written here


def _ln(sd, p, x):
    return F.layer_norm(x, (x.shape[-1],), sd[p + ".weight"], sd[p + ".bias"], eps=1e-5)


def ref_vit_tokens(sd, x, cam=None, sie_coe=3.0, stride=16):
    """VisionTransformer.forward up to ln_pre's input, SIE on x[:, 0] only."""
    t = F.conv2d(x, sd["image_encoder.conv1.weight"], stride=stride)
    t = t.reshape(t.shape[0], t.shape[1], -1).permute(0, 2, 1)
    cls = sd["image_encoder.class_embedding"] + torch.zeros(t.shape[0], 1, t.shape[-1])
    t = torch.cat([cls, t], dim=1)
    if cam is not None:
        t[:, 0] = t[:, 0] + sie_coe * sd["cv_embed"][cam]
    return t + sd["image_encoder.positional_embedding"]


def ref_vit(sd, x, cam=None, sie_coe=3.0, stride=16, neck="before"):
    t = _ln(sd, "image_encoder.ln_pre", ref_vit_tokens(sd, x, cam, sie_coe, stride))
    t = t.permute(1, 0, 2)  # NLD -> LND, as CLIP runs nn.MultiheadAttention
    for i in range(12):
        p = f"image_encoder.transformer.resblocks.{i}"
        mha = torch.nn.MultiheadAttention(768, 12).eval()
        mha.load_state_dict(
            {k[len(p) + 6 :]: v for k, v in sd.items() if k.startswith(p + ".attn.")}
        )
        h = _ln(sd, p + ".ln_1", t)
        t = t + mha(h, h, h, need_weights=False)[0]
        h = F.linear(_ln(sd, p + ".ln_2", t), sd[p + ".mlp.c_fc.weight"], sd[p + ".mlp.c_fc.bias"])
        h = h * torch.sigmoid(1.702 * h)  # QuickGELU
        t = t + F.linear(h, sd[p + ".mlp.c_proj.weight"], sd[p + ".mlp.c_proj.bias"])
    x12 = _ln(sd, "image_encoder.ln_post", t.permute(1, 0, 2))
    proj = x12 @ sd["image_encoder.proj"]
    feat, feat_proj = x12[:, 0], proj[:, 0]
    if neck == "after":
        feat = F.batch_norm(
            feat,
            sd["bottleneck.running_mean"],
            sd["bottleneck.running_var"],
            sd["bottleneck.weight"],
            sd["bottleneck.bias"],
        )
        feat_proj = F.batch_norm(
            feat_proj,
            sd["bottleneck_proj.running_mean"],
            sd["bottleneck_proj.running_var"],
            sd["bottleneck_proj.weight"],
            sd["bottleneck_proj.bias"],
        )
    return torch.cat([feat, feat_proj], dim=1)


def ref_attnpool(sd, x4):
    """AttentionPool2d.forward as model/clip/model.py calls it; output at the mean token."""
    p = "image_encoder.attnpool."
    x = x4.reshape(x4.shape[0], x4.shape[1], -1).permute(2, 0, 1)
    x = torch.cat([x.mean(dim=0, keepdim=True), x], dim=0)
    x = x + sd[p + "positional_embedding"][:, None, :]
    out, _ = F.multi_head_attention_forward(
        query=x,
        key=x,
        value=x,
        embed_dim_to_check=x.shape[-1],
        num_heads=32,
        q_proj_weight=sd[p + "q_proj.weight"],
        k_proj_weight=sd[p + "k_proj.weight"],
        v_proj_weight=sd[p + "v_proj.weight"],
        in_proj_weight=None,
        in_proj_bias=torch.cat(
            [sd[p + "q_proj.bias"], sd[p + "k_proj.bias"], sd[p + "v_proj.bias"]]
        ),
        bias_k=None,
        bias_v=None,
        add_zero_attn=False,
        dropout_p=0.0,
        out_proj_weight=sd[p + "c_proj.weight"],
        out_proj_bias=sd[p + "c_proj.bias"],
        use_separate_proj_weight=True,
        training=False,
        need_weights=False,
    )
    return out[0]


def ref_rn50(sd, x):
    def bn(p, z):
        return F.batch_norm(
            z, sd[p + ".running_mean"], sd[p + ".running_var"], sd[p + ".weight"], sd[p + ".bias"]
        )

    e = "image_encoder."
    for i in (1, 2, 3):
        x = F.relu(
            bn(
                f"{e}bn{i}",
                F.conv2d(x, sd[f"{e}conv{i}.weight"], stride=2 if i == 1 else 1, padding=1),
            )
        )
    x = F.avg_pool2d(x, 2)
    for layer, (blocks, stride) in enumerate(((3, 1), (4, 2), (6, 2), (3, 1)), 1):
        for j in range(blocks):
            p = f"{e}layer{layer}.{j}"
            s = stride if j == 0 else 1
            out = F.relu(bn(p + ".bn1", F.conv2d(x, sd[p + ".conv1.weight"])))
            out = F.relu(bn(p + ".bn2", F.conv2d(out, sd[p + ".conv2.weight"], padding=1)))
            if s > 1:
                out = F.avg_pool2d(out, s)
            out = bn(p + ".bn3", F.conv2d(out, sd[p + ".conv3.weight"]))
            if j == 0:
                idn = F.avg_pool2d(x, s) if s > 1 else x
                idn = bn(p + ".downsample.1", F.conv2d(idn, sd[p + ".downsample.0.weight"]))
            else:
                idn = x
            x = F.relu(out + idn)
    return torch.cat([x.mean(dim=(2, 3)), ref_attnpool(sd, x)], dim=1)


def _rel(ref, got) -> float:
    """max |ref - got| / max |ref| (tensors or arrays)."""
    ref, got = (t.detach().numpy() if isinstance(t, torch.Tensor) else t for t in (ref, got))
    ref, got = np.asarray(ref, np.float64), np.asarray(got, np.float64)
    return float(np.max(np.abs(ref - got)) / np.max(np.abs(ref)))


def _images(batch: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, 3, 256, 128, generator=torch.Generator().manual_seed(seed))


def _save(tmp_path: Path, sd, name: str = "ViT-B-16_60.pth") -> Path:
    path = tmp_path / name
    torch.save(sd, path)  # processor_clipreid_stage2.py: torch.save(model.state_dict(), ...)
    return path


@pytest.fixture(scope="module")
def vit_ckpt(tmp_path_factory) -> tuple[dict[str, torch.Tensor], Path]:
    sd = vit_checkpoint(cameras=6, seed=3)
    return sd, _save(tmp_path_factory.mktemp("clipreid"), sd)


# ------------------------------------------------------------------------------- tests


def test_vit_checkpoint_loads_ignores_text_side_and_matches_reference(vit_ckpt) -> None:
    sd, path = vit_ckpt
    m = create_model("clipreid_vit_b16", weights=path).module
    assert (m.stride, m.num_cameras, m.takes_camera) == (16, 6, True)
    assert m.ignored_keys == {
        "classifier*": 2,
        "prompt_learner.*": 3,
        "text_encoder.*": 4 + 12 * TEXT_LAYERS,
    }
    x, cam = _images(3), torch.tensor([0, 5, 2])
    with torch.no_grad():
        (got,) = m(x, cam)
        ref = ref_vit(sd, x, cam)
    assert got.shape == (3, 1280)
    assert _rel(ref, got) <= 1e-5
    with torch.no_grad():  # a different camera, a different feature
        (other,) = m(x, torch.tensor([1, 1, 1]))
    assert _rel(got, other) > 1e-3


def test_vit_sie_goes_to_the_class_token_only(vit_ckpt) -> None:
    sd, path = vit_ckpt
    m = create_model("clipreid_vit_b16", weights=path).module
    seen: list[torch.Tensor] = []
    m.image_encoder.ln_pre.register_forward_pre_hook(lambda mod, args: seen.append(args[0]))
    x = _images(2, seed=2)
    with torch.no_grad():
        m(x, torch.tensor([4, 0]))
        m(x, torch.tensor([1, 3]))
    torch.testing.assert_close(seen[0], ref_vit_tokens(sd, x, torch.tensor([4, 0])))
    diff = (seen[0] - seen[1]).abs().amax(dim=(0, 2))
    assert diff[0] > 0.1 and diff[1:].max() == 0  # only token 0 depends on the camera


def test_vit_camera_agnostic_is_the_projects_no_camera_path(vit_ckpt, tmp_path: Path) -> None:
    sd, path = vit_ckpt
    m = create_model("clipreid_vit_b16", weights=path).module
    x = _images(2, seed=6)
    m.configure(camera_agnostic=True)
    assert not m.takes_camera
    with torch.no_grad():
        (none,) = m(x)
    assert _rel(ref_vit(sd, x, None), none) <= 1e-5
    m.configure(camera_agnostic=True, sie_camera=3, sie_coe=1.0)
    with torch.no_grad():
        (fixed,) = m(x)
    assert _rel(ref_vit(sd, x, torch.tensor([3, 3]), sie_coe=1.0), fixed) <= 1e-5


def test_vit_stride12_without_sie_and_config(tmp_path: Path) -> None:
    sd = vit_checkpoint(stride=12, cameras=0, seed=4)
    path = _save(tmp_path, sd)
    m = create_model("clipreid_vit_b16", weights=path).module
    assert (m.stride, m.num_cameras, m.takes_camera) == (12, 0, False)
    cfg = tmp_path / "vit_clipreid.yml"
    cfg.write_text(
        "MODEL:\n  NAME: 'ViT-B-16'\n  STRIDE_SIZE: [12, 12]\n"
        "INPUT:\n  SIZE_TEST: [256, 128]\nTEST:\n  NECK_FEAT: 'after'\n"
    )
    assert m.configure(config=cfg) == {"stride": 12, "neck_feat": "after"}
    x = _images(1, seed=8)
    with torch.no_grad():
        (got,) = m(x)
    assert _rel(ref_vit(sd, x, None, stride=12, neck="after"), got) <= 1e-5
    with pytest.raises(InputError, match="no SIE table"):
        m.configure(camera_agnostic=True)
    cfg.write_text("MODEL:\n  NAME: 'RN50'\n")
    with pytest.raises(InputError, match=r"MODEL\.NAME is 'RN50'"):
        m.configure(config=cfg)


def test_rn50_attention_pool_matches_torch_mha() -> None:
    from reidctl.models.clipreid import AttentionPool2d

    sd = rn50_checkpoint(seed=1)
    pool = AttentionPool2d(128, 2048, 32, 1024).eval()
    pool.load_state_dict(
        {k[len("image_encoder.attnpool.") :]: v for k, v in sd.items() if "attnpool" in k}
    )
    x4 = torch.randn(3, 2048, 16, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        got = pool(x4)
    assert got.shape == (3, 1024)
    assert _rel(ref_attnpool(sd, x4), got) <= 1e-5


def test_rn50_checkpoint_loads_and_matches_reference(tmp_path: Path) -> None:
    sd = rn50_checkpoint(seed=2)
    m = create_model("clipreid_rn50", weights=_save(tmp_path, sd, "RN50_120.pth")).module
    assert not m.takes_camera
    assert m.ignored_keys == {
        "classifier*": 2,
        "cv_embed": 1,
        "prompt_learner.*": 3,
        "text_encoder.*": 4 + 12 * TEXT_LAYERS,
    }
    x = _images(2, seed=3)
    with torch.no_grad():
        (got,) = m(x)
        ref = ref_rn50(sd, x)
    assert got.shape == (2, 3072)
    assert _rel(ref, got) <= 1e-5


@pytest.mark.slow
def test_export_vit_with_sie_at_batch_1_3_32_and_agnostic(vit_ckpt, tmp_path, capsys) -> None:
    sd, path = vit_ckpt
    out = tmp_path / "clipreid.onnx"
    assert main(["export", "clipreid_vit_b16", "--weights", str(path), "-o", str(out)]) == 0
    log = capsys.readouterr().out
    assert "input   camera ['batch'] int64" in log
    assert "ignored text_encoder.* (28 tensors" in log and "ignored prompt_learner.*" in log
    from reidctl.artifacts import read_sidecar

    side = read_sidecar(out)
    assert [i["name"] for i in side["inputs"]] == ["image", "camera"]
    assert side["camera"]["num_cameras"] == 6 and side["camera"]["first_camera"] == 1
    assert side["ignored_weights"]["text_encoder.*"] == 28
    assert {r["batch"] for r in side["validation"]["results"]} == {1, 3, 32}
    assert all(r["rel_diff"] <= 1e-4 for r in side["validation"]["results"])
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    m = create_model("clipreid_vit_b16", weights=path).module
    for batch in (1, 3, 32):
        x, cam = _images(batch, seed=batch), torch.arange(batch) % 6
        (got,) = sess.run(None, {"image": x.numpy(), "camera": cam.numpy()})
        with torch.no_grad():
            (ref,) = m(x, cam)
        assert _rel(ref, got) <= 1e-4
    # LayerNorm and Softmax stay plain ops (a float16 converter can keep them in float32)
    ops = {n.op_type for n in onnx.load(str(out)).graph.node}
    assert {"Softmax", "LayerNormalization"} <= ops

    one = tmp_path / "agnostic.onnx"
    side = onnx_from_torch(
        "clipreid_vit_b16",
        one,
        weights=path,
        options={"camera_agnostic": True},
        validate_batches=(2,),
    )
    assert [i.name for i in onnx.load(str(one)).graph.input] == ["image"]
    assert side["camera"] == {
        "num_cameras": 6,
        "sie_coefficient": 3.0,
        "camera_agnostic": True,
        "sie_camera": None,
    }
    x = _images(2, seed=11)
    (got,) = ort.InferenceSession(str(one)).run(None, {"image": x.numpy()})
    assert _rel(ref_vit(sd, x, None), got) <= 1e-4


@pytest.mark.slow
def test_export_rn50_at_batch_1_3_32(tmp_path: Path) -> None:
    sd = rn50_checkpoint(seed=5)
    path = _save(tmp_path, sd, "RN50_120.pth")
    out = tmp_path / "rn50.onnx"
    side = onnx_from_torch("clipreid_rn50", out, weights=path)
    assert [i["name"] for i in side["inputs"]] == ["image"]
    assert side["outputs"] == [{"name": "feature", "shape": ["batch", 3072], "dtype": "float32"}]
    assert "camera" not in side  # RN50 takes no camera
    assert {r["batch"] for r in side["validation"]["results"]} == {1, 3, 32}
    assert all(r["rel_diff"] <= 1e-4 for r in side["validation"]["results"])
    x = _images(3, seed=12)
    (got,) = ort.InferenceSession(str(out)).run(None, {"image": x.numpy()})
    assert _rel(ref_rn50(sd, x), got) <= 1e-4
