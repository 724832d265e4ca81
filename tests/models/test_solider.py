"""SOLIDER-REID: checkpoints in tinyvision/SOLIDER-REID's own format (a bare ``state_dict``
of ``make_model``'s ``build_transformer`` around the mmcv-style Swin of
``model/backbones/swin_transformer.py``) load and reproduce the project's test forward pass,
written here independently from the state dict alone: the (shifted) window attention as ONE
masked attention over the whole padded map (no roll, no window partition: pairs in different
windows are excluded, pairs of different regions inside a shifted window get -100), patch
merging with ``F.unfold`` (the reference's ``nn.Unfold``), the semantic modulation with the
batch-expanded ``w = [s, 1 - s]``."""

from __future__ import annotations

import math
from pathlib import Path

import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F

from reidctl.cli import main
from reidctl.errors import CheckpointError, InputError
from reidctl.models.loading import create_model
from tests.models.helpers import rel_diff, save_state_dict

# swin_transformer.py's factories: embed dims, depths, heads (patch 4, window 7)
ARCH = {
    "solider_swin_tiny": (96, (2, 2, 6, 2), (3, 6, 12, 24)),
    "solider_swin_small": (96, (2, 2, 18, 2), (3, 6, 12, 24)),
    "solider_swin_base": (128, (2, 2, 18, 2), (4, 8, 16, 32)),
}
FACTORY = {
    "solider_swin_tiny": "swin_tiny_patch4_window7_224",
    "solider_swin_small": "swin_small_patch4_window7_224",
    "solider_swin_base": "swin_base_patch4_window7_224",
}
WINDOW = 7
NUM_CLASSES = 5
H, W = 384, 128


def mmcv_relative_position_index(ws: int) -> torch.Tensor:
    """WindowMSA.__init__: double_step_seq(2 * Ww - 1, Wh, 1, Ww), plus its transpose,
    flipped along dim 1 (the persistent buffer every checkpoint holds)."""
    seq1 = torch.arange(0, (2 * ws - 1) * ws, 2 * ws - 1)
    seq2 = torch.arange(0, ws, 1)
    coords = (seq1[:, None] + seq2[None, :]).reshape(1, -1)
    return (coords + coords.T).flip(1).contiguous()


def solider_checkpoint(
    name: str, seed: int = 0, semantic: bool = True, feat_dim: int | None = None
) -> dict[str, torch.Tensor]:
    """Random weights under build_transformer's key names and shapes (SOLIDER-REID's own
    format, as ``torch.save(model.state_dict())`` writes it)."""
    d, depths, heads = ARCH[name]
    widths = [d * 2**i for i in range(4)]
    shapes: dict[str, tuple[int, ...]] = {
        "base.patch_embed.projection.weight": (d, 3, 4, 4),
        "base.patch_embed.projection.bias": (d,),
        "base.patch_embed.norm.weight": (d,),
        "base.patch_embed.norm.bias": (d,),
    }
    for i in range(4):
        c = widths[i]
        for j in range(depths[i]):
            p = f"base.stages.{i}.blocks.{j}."
            shapes.update(
                {
                    p + "norm1.weight": (c,),
                    p + "norm1.bias": (c,),
                    p + "attn.w_msa.relative_position_bias_table": (13 * 13, heads[i]),
                    p + "attn.w_msa.qkv.weight": (3 * c, c),
                    p + "attn.w_msa.qkv.bias": (3 * c,),
                    p + "attn.w_msa.proj.weight": (c, c),
                    p + "attn.w_msa.proj.bias": (c,),
                    p + "norm2.weight": (c,),
                    p + "norm2.bias": (c,),
                    p + "ffn.layers.0.0.weight": (4 * c, c),
                    p + "ffn.layers.0.0.bias": (4 * c,),
                    p + "ffn.layers.1.weight": (c, 4 * c),
                    p + "ffn.layers.1.bias": (c,),
                }
            )
        if i < 3:
            p = f"base.stages.{i}.downsample."
            shapes.update(
                {
                    p + "norm.weight": (4 * c,),
                    p + "norm.bias": (4 * c,),
                    p + "reduction.weight": (2 * c, 4 * c),
                }
            )
        shapes[f"base.norm{i}.weight"] = (c,)
        shapes[f"base.norm{i}.bias"] = (c,)
    if semantic:
        for i in range(4):
            out = widths[min(i, 2) + 1]  # the last stage's embeddings as wide as stage 3
            for kind in ("w", "b"):
                shapes[f"base.semantic_embed_{kind}.{i}.weight"] = (out, 2)
                shapes[f"base.semantic_embed_{kind}.{i}.bias"] = (out,)
    planes = widths[3]
    if feat_dim is not None:
        shapes["fcneck.weight"] = (feat_dim, planes)
        planes = feat_dim
    shapes["classifier.weight"] = (NUM_CLASSES, planes)

    g = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}
    for k, shape in shapes.items():
        if "norm" in k and k.endswith(".weight"):
            sd[k] = 1.0 + 0.1 * torch.randn(shape, generator=g)
        elif k.endswith("relative_position_bias_table"):
            sd[k] = 0.5 * torch.randn(shape, generator=g)  # large enough to matter
        elif "semantic_embed" in k:
            sd[k] = 0.5 * torch.randn(shape, generator=g)
        elif k.endswith(".weight") and len(shape) >= 2:
            fan_in = math.prod(shape[1:])
            sd[k] = torch.randn(shape, generator=g) / math.sqrt(fan_in)
        else:
            sd[k] = 0.1 * torch.randn(shape, generator=g)
        if k.endswith("relative_position_bias_table"):
            sd[k.replace("bias_table", "index")] = mmcv_relative_position_index(WINDOW)
    sd["bottleneck.weight"] = 1.0 + 0.1 * torch.randn(planes, generator=g)
    sd["bottleneck.bias"] = 0.1 * torch.randn(planes, generator=g)
    sd["bottleneck.running_mean"] = 0.1 * torch.randn(planes, generator=g)
    sd["bottleneck.running_var"] = 0.5 + torch.rand(planes, generator=g)
    sd["bottleneck.num_batches_tracked"] = torch.tensor(100)
    return sd


# ------------------------------------------------------ the reference forward, written here

_LAYOUTS: dict[tuple[int, int, int], tuple[torch.Tensor, ...]] = {}


def _layout(hp: int, wp: int, shift: int) -> tuple[torch.Tensor, ...]:
    """For every pair of tokens of a padded ``hp`` x ``wp`` map: whether they share a
    (shifted) window, the row of the bias table, and the -100 region penalty."""
    key = (hp, wp, shift)
    if key not in _LAYOUTS:
        r = torch.arange(hp).repeat_interleave(wp)
        c = torch.arange(wp).repeat(hp)
        # torch.roll(x, -shift) puts the token of row r at row (r - shift) mod hp
        rs, cs = (r - shift) % hp, (c - shift) % wp
        window = (rs // WINDOW) * (wp // WINDOW) + cs // WINDOW
        same = window[:, None] == window[None, :]
        pr, pc = rs % WINDOW, cs % WINDOW
        dh = pr[:, None] - pr[None, :] + WINDOW - 1
        dw = pc[:, None] - pc[None, :] + WINDOW - 1
        index = (dh * (2 * WINDOW - 1) + dw).clamp(0, (2 * WINDOW - 1) ** 2 - 1)
        penalty = torch.zeros(hp * wp, hp * wp)
        if shift:
            # the regions the reference labels in the shifted frame:
            # [0, size - window), [size - window, size - shift), [size - shift, size)
            def region(v: torch.Tensor, size: int) -> torch.Tensor:
                return (v >= size - WINDOW).long() + (v >= size - shift).long()

            label = region(rs, hp) * 3 + region(cs, wp)
            penalty = torch.where(label[:, None] != label[None, :], -100.0, 0.0)
        _LAYOUTS[key] = (same, index, penalty)
    return _LAYOUTS[key]


def ref_attention(sd, p: str, x: torch.Tensor, heads: int, shift: int) -> torch.Tensor:
    """``x`` [B, h, w, C] (after norm1) -> [B, h, w, C]: zero padding to whole windows,
    every token attends over the padded map with the other windows excluded."""
    b, h, w, c = x.shape
    hp, wp = math.ceil(h / WINDOW) * WINDOW, math.ceil(w / WINDOW) * WINDOW
    xp = torch.zeros(b, hp, wp, c)
    xp[:, :h, :w] = x
    tokens = xp.reshape(b, hp * wp, c)
    same, index, penalty = _layout(hp, wp, shift)
    qkv = F.linear(tokens, sd[p + "qkv.weight"], sd[p + "qkv.bias"])
    q, k, v = qkv.split(c, dim=-1)
    hd = c // heads
    table = sd[p + "relative_position_bias_table"]
    outs = []
    for head in range(heads):
        sl = slice(head * hd, (head + 1) * hd)
        logits = (q[..., sl] * hd**-0.5) @ k[..., sl].transpose(1, 2)
        logits = logits + table[:, head][index] + penalty
        logits = logits.masked_fill(~same, float("-inf"))
        outs.append(torch.softmax(logits, dim=-1) @ v[..., sl])
    o = F.linear(torch.cat(outs, dim=-1), sd[p + "proj.weight"], sd[p + "proj.bias"])
    return o.reshape(b, hp, wp, c)[:, :h, :w]


def _ln(sd, p: str, x: torch.Tensor) -> torch.Tensor:
    return F.layer_norm(x, (x.shape[-1],), sd[p + "weight"], sd[p + "bias"], eps=1e-5)


def ref_block(sd, p: str, x: torch.Tensor, hw: tuple[int, int], heads: int, shift: int):
    b, _, c = x.shape
    h, w = hw
    a = ref_attention(
        sd, p + "attn.w_msa.", _ln(sd, p + "norm1.", x).reshape(b, h, w, c), heads, shift
    )
    x = x + a.reshape(b, h * w, c)
    y = F.gelu(
        F.linear(
            _ln(sd, p + "norm2.", x), sd[p + "ffn.layers.0.0.weight"], sd[p + "ffn.layers.0.0.bias"]
        )
    )
    return x + F.linear(y, sd[p + "ffn.layers.1.weight"], sd[p + "ffn.layers.1.bias"])


def ref_merge(sd, p: str, x: torch.Tensor, hw: tuple[int, int]):
    """PatchMerging.forward: nn.Unfold(2, stride 2) on the NCHW map, LayerNorm, reduction."""
    b, _, c = x.shape
    h, w = hw
    m = x.reshape(b, h, w, c).permute(0, 3, 1, 2)
    m = F.unfold(m, kernel_size=2, stride=2).transpose(1, 2)  # [B, h/2 * w/2, 4C]
    return F.linear(_ln(sd, p + "norm.", m), sd[p + "reduction.weight"]), (h // 2, w // 2)


def ref_solider(sd, name: str, x: torch.Tensor, semantic_weight: float = 0.2, neck: str = "before"):
    """SwinTransformer.forward then build_transformer's test branch."""
    _, depths, heads = ARCH[name]
    b = x.shape[0]
    t = F.conv2d(
        x,
        sd["base.patch_embed.projection.weight"],
        sd["base.patch_embed.projection.bias"],
        stride=4,
    )
    hw = (t.shape[2], t.shape[3])
    t = _ln(sd, "base.patch_embed.norm.", t.flatten(2).transpose(1, 2))
    semantic = "base.semantic_embed_w.0.weight" in sd
    w = torch.ones(b, 1) * semantic_weight
    w = torch.cat([w, 1 - w], dim=-1)
    out, out_hw = t, hw
    for i in range(4):
        for j in range(depths[i]):
            t = ref_block(
                sd, f"base.stages.{i}.blocks.{j}.", t, hw, heads[i], 0 if j % 2 == 0 else 3
            )
        out, out_hw = t, hw  # SwinBlockSequence returns (x_down, ..., x, ...)
        if i < 3:
            t, hw = ref_merge(sd, f"base.stages.{i}.downsample.", t, hw)
        if semantic:
            sw = F.linear(
                w, sd[f"base.semantic_embed_w.{i}.weight"], sd[f"base.semantic_embed_w.{i}.bias"]
            )
            sb = F.linear(
                w, sd[f"base.semantic_embed_b.{i}.weight"], sd[f"base.semantic_embed_b.{i}.bias"]
            )
            t = t * F.softplus(sw).unsqueeze(1) + sb.unsqueeze(1)
    c = out.shape[-1]
    o = _ln(sd, "base.norm3.", out).view(-1, *out_hw, c).permute(0, 3, 1, 2)
    g = torch.flatten(F.adaptive_avg_pool2d(o, (1, 1)), 1)
    if "fcneck.weight" in sd:
        g = F.linear(g, sd["fcneck.weight"])
    if neck == "after":
        g = F.batch_norm(
            g,
            sd["bottleneck.running_mean"],
            sd["bottleneck.running_var"],
            sd["bottleneck.weight"],
            sd["bottleneck.bias"],
            eps=1e-5,
        )
    return g


_rel = rel_diff


def _save(tmp_path: Path, sd: dict[str, torch.Tensor], name: str = "transformer_120.pth") -> Path:
    return save_state_dict(tmp_path, sd, name)


def _images(batch: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, 3, H, W, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory) -> tuple[dict[str, torch.Tensor], Path]:
    sd = solider_checkpoint("solider_swin_tiny", seed=3)
    return sd, _save(tmp_path_factory.mktemp("solider"), sd)


# ------------------------------------------------------------------------------- tests


def test_relative_position_index_is_the_references() -> None:
    from reidctl.models.solider import relative_position_index

    assert torch.equal(relative_position_index(WINDOW), mmcv_relative_position_index(WINDOW))


def test_shift_mask_matches_the_reference_construction() -> None:
    """ShiftWindowMSA's img_mask: 9 regions by slices, window partition, pairwise -100."""
    from reidctl.models.solider import shift_mask

    hp, wp, ws, s = 28, 14, WINDOW, 3
    img = torch.zeros(1, hp, wp, 1)
    cnt = 0
    for hs in (slice(0, -ws), slice(-ws, -s), slice(-s, None)):
        for wsl in (slice(0, -ws), slice(-ws, -s), slice(-s, None)):
            img[:, hs, wsl, :] = cnt
            cnt += 1
    win = img.view(1, hp // ws, ws, wp // ws, ws, 1).permute(0, 1, 3, 2, 4, 5).reshape(-1, ws * ws)
    diff = win.unsqueeze(1) - win.unsqueeze(2)
    ref = diff.masked_fill(diff != 0, -100.0).masked_fill(diff == 0, 0.0)
    got = shift_mask(hp, wp, ws, s)
    assert got.shape == (8, 49, 49)
    assert torch.equal(got, ref)


def test_tiny_checkpoint_loads_and_matches_reference_forward(tiny_ckpt) -> None:
    sd, path = tiny_ckpt
    loaded = create_model("solider_swin_tiny", weights=path)
    m = loaded.module
    assert m.ignored_keys == {"classifier*": 1}
    assert not m.takes_camera and m.num_cameras == 0
    assert m.output_shapes == {"feature": (768,)}
    assert m.settings() == {"semantic_weight": 0.2, "neck_feat": "before"}
    own = m.state_dict()
    for k, v in sd.items():
        if not k.startswith("classifier"):
            assert torch.equal(own[k], v), k
    x = _images(2)
    with torch.no_grad():
        (got,) = m(x)
        ref = ref_solider(sd, "solider_swin_tiny", x)
    assert got.shape == (2, 768)
    assert _rel(ref, got) <= 1e-4


def test_semantic_weight_neck_and_the_unused_last_embedding(tiny_ckpt) -> None:
    sd, path = tiny_ckpt
    m = create_model("solider_swin_tiny", weights=path).module
    x = _images(1, seed=5)
    with torch.no_grad():
        (default,) = m(x)
        assert m.configure(semantic_weight=0.7, neck_feat="after") == {
            "semantic_weight": 0.7,
            "neck_feat": "after",
        }
        (got,) = m(x)
    assert _rel(ref_solider(sd, "solider_swin_tiny", x, 0.7, "after"), got) <= 1e-4
    assert _rel(default, got) > 1e-2  # another weight, another feature
    # the reference modulates a copy of the last stage that the pooled feature never reads
    changed = dict(sd)
    changed["base.semantic_embed_w.3.weight"] = sd["base.semantic_embed_w.3.weight"] + 1.0
    assert _rel(ref_solider(changed, "solider_swin_tiny", x, 0.7, "after"), got) <= 1e-4
    with pytest.raises(InputError, match=">= 0"):
        m.configure(semantic_weight=-1.0)


def test_shift_mask_is_live(tiny_ckpt, monkeypatch) -> None:
    """Without the -100 mask the features change: the reference comparison would notice."""
    from reidctl.models import solider

    _, path = tiny_ckpt
    x = _images(1, seed=6)
    with torch.no_grad():
        (good,) = create_model("solider_swin_tiny", weights=path).module(x)
        monkeypatch.setattr(
            solider,
            "shift_mask",
            lambda h, w, ws, s: torch.zeros(h // ws * (w // ws), ws * ws, ws * ws),
        )
        (no_mask,) = create_model("solider_swin_tiny", weights=path).module(x)
    assert _rel(good, no_mask) > 1e-3


def test_reduced_dim_without_semantic_embeddings_and_config(tmp_path: Path) -> None:
    name = "solider_swin_tiny"
    sd = solider_checkpoint(name, seed=4, semantic=False, feat_dim=512)
    m = create_model(name, weights=_save(tmp_path, sd)).module
    assert m.output_shapes == {"feature": (512,)}
    cfg = tmp_path / "swin_tiny.yml"
    cfg.write_text(
        f"MODEL:\n  NAME: 'transformer'\n  TRANSFORMER_TYPE: '{FACTORY[name]}'\n"
        "  REDUCE_FEAT_DIM: True\n  FEAT_DIM: 512\n"
        "INPUT:\n  SIZE_TEST: [384, 128]\n  PIXEL_MEAN: [0.5, 0.5, 0.5]\n"
        "TEST:\n  NECK_FEAT: 'after'\n"
    )
    assert m.configure(config=cfg) == {
        "semantic_weight": None,
        "neck_feat": "after",
        "feat_dim": 512,
    }
    x = _images(1, seed=7)
    with torch.no_grad():
        (got,) = m(x)
    assert got.shape == (1, 512)
    assert _rel(ref_solider(sd, name, x, neck="after"), got) <= 1e-4
    with pytest.raises(InputError, match="no semantic embeddings"):
        m.configure(semantic_weight=0.2)
    cfg.write_text(f"MODEL:\n  TRANSFORMER_TYPE: '{FACTORY['solider_swin_base']}'\n")
    with pytest.raises(InputError, match=r"MODEL\.TRANSFORMER_TYPE is 'swin_base"):
        m.configure(config=cfg)
    cfg.write_text("INPUT:\n  SIZE_TEST: [256, 128]\n")
    with pytest.raises(InputError, match=r"INPUT\.SIZE_TEST is \[256, 128\]"):
        m.configure(config=cfg)


def test_config_semantic_weight_and_explicit_value_wins(tiny_ckpt, tmp_path: Path) -> None:
    _, path = tiny_ckpt
    m = create_model("solider_swin_tiny", weights=path).module
    cfg = tmp_path / "swin_tiny.yml"
    cfg.write_text("MODEL:\n  SEMANTIC_WEIGHT: 0.5\n")
    assert m.configure(config=cfg)["semantic_weight"] == 0.5
    assert m.configure(config=cfg, semantic_weight=0.1)["semantic_weight"] == 0.1


@pytest.mark.parametrize(
    "other", ["solider_swin_small", pytest.param("transreid_vit_base", marks=pytest.mark.slow)]
)
def test_wrong_family_names_the_model_the_keys_fit(tiny_ckpt, other: str) -> None:
    _, path = tiny_ckpt
    with pytest.raises(CheckpointError, match=f"keys fit `solider_swin_tiny`, not `{other}`"):
        create_model(other, weights=path)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["solider_swin_small", "solider_swin_base"])
def test_small_and_base_checkpoints_match_reference_forward(tmp_path: Path, name: str) -> None:
    sd = solider_checkpoint(name, seed=8)
    m = create_model(name, weights=_save(tmp_path, sd)).module
    dim = 1024 if name == "solider_swin_base" else 768
    assert m.output_shapes == {"feature": (dim,)}
    x = _images(1, seed=9)
    with torch.no_grad():
        (got,) = m(x)
    assert got.shape == (1, dim)
    assert _rel(ref_solider(sd, name, x), got) <= 1e-4


def test_cli_rejects_options_the_model_does_not_take(tmp_path: Path, capsys) -> None:
    code = main(
        ["export", "osnet_x0_25", "--semantic-weight", "0.2", "-o", str(tmp_path / "o.onnx")]
    )
    assert code == 2 and "takes no model options (got --semantic-weight)" in capsys.readouterr().err
    code = main(["export", "solider_swin_tiny", "--sie-coe", "2", "-o", str(tmp_path / "s.onnx")])
    assert code == 2 and "solider_swin_tiny does not take --sie-coe" in capsys.readouterr().err


@pytest.mark.slow
def test_export_at_batch_1_3_32_and_runners_apply_the_sidecar(tiny_ckpt, tmp_path, capsys) -> None:
    sd, path = tiny_ckpt
    out = tmp_path / "solider.onnx"
    code = main(
        [
            "export",
            "solider_swin_tiny",
            "--weights",
            str(path),
            "-o",
            str(out),
            "--semantic-weight",
            "0.5",
        ]
    )
    log = capsys.readouterr().out
    assert code == 0
    assert "ignored classifier* (1 tensors" in log
    from reidctl.artifacts import read_sidecar

    side = read_sidecar(out)
    assert side["inputs"] == [
        {"name": "image", "shape": ["batch", 3, 384, 128], "dtype": "float32"}
    ]
    assert side["outputs"] == [{"name": "feature", "shape": ["batch", 768], "dtype": "float32"}]
    assert side["model_settings"] == {"semantic_weight": 0.5, "neck_feat": "before"}
    assert side["preprocess"]["mean"] == [0.5, 0.5, 0.5] and side["preprocess"]["height"] == 384
    assert "camera" not in side
    assert {r["batch"] for r in side["validation"]["results"]} == {1, 3, 32}
    assert all(r["rel_diff"] <= 1e-4 for r in side["validation"]["results"])
    proto = onnx.load(str(out))
    assert [i.name for i in proto.graph.input] == ["image"]
    ops = {n.op_type for n in proto.graph.node}
    assert {"Softmax", "LayerNormalization"} <= ops and not ops & {"Loop", "If"}

    m = create_model("solider_swin_tiny", weights=path).module
    m.configure(semantic_weight=0.5)
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    for batch in (1, 3, 32):
        x = _images(batch, seed=batch)
        (got,) = sess.run(["feature"], {"image": x.numpy()})
        with torch.no_grad():
            (ref,) = m(x)
        assert got.shape == (batch, 768)
        assert _rel(ref, got) <= 1e-4
        if batch == 3:
            assert _rel(ref_solider(sd, "solider_swin_tiny", x, 0.5), got) <= 1e-4

    # the torch runner rebuilds the sidecar's semantic weight: both run the same network
    from reidctl.runners import get_runner

    feeds = {"image": _images(2, seed=12).numpy()}
    results = {}
    for backend in ("torch", "ort"):
        with get_runner(backend)(str(out)) as runner:
            assert [s.name for s in runner.input_specs()] == ["image"]
            results[backend] = runner.infer(feeds)["feature"]
    assert _rel(results["torch"], results["ort"]) <= 1e-4
    with torch.no_grad():
        (default,) = create_model("solider_swin_tiny", weights=path).module(
            torch.from_numpy(feeds["image"])
        )
    assert _rel(default, results["torch"]) > 1e-3  # 0.5, not the default 0.2
