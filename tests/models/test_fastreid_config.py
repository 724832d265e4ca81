"""Reading fast-reid YAML configs (``_BASE_`` chains) and ``reidctl export fastreid``."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from reidctl.cli import main
from reidctl.errors import FormatError, InputError
from reidctl.models import fastreid as fr
from reidctl.models.fastreid_config import config_from_yaml, load_fastreid, read_yaml_with_base

# the inference-relevant parts of fast-reid's configs/ (Base-*.yml, Market1501/*.yml)
CONFIGS = {
    "Base-bagtricks.yml": """
MODEL:
  META_ARCHITECTURE: Baseline
  BACKBONE:
    NAME: build_resnet_backbone
    NORM: BN
    DEPTH: 50x
    LAST_STRIDE: 1
    FEAT_DIM: 2048
    WITH_IBN: False
    PRETRAIN: True
  HEADS:
    NAME: EmbeddingHead
    NORM: BN
    WITH_BNNECK: True
    POOL_LAYER: GlobalAvgPool
    NECK_FEAT: before
    CLS_LAYER: Linear
  LOSSES:
    NAME: ("CrossEntropyLoss", "TripletLoss",)
INPUT:
  SIZE_TRAIN: [ 256, 128 ]
  SIZE_TEST: [ 256, 128 ]
""",
    "Base-AGW.yml": """
_BASE_: Base-bagtricks.yml
MODEL:
  BACKBONE:
    WITH_NL: True
  HEADS:
    POOL_LAYER: GeneralizedMeanPooling
""",
    "Base-SBS.yml": """
_BASE_: Base-bagtricks.yml
MODEL:
  FREEZE_LAYERS: [ backbone ]
  BACKBONE:
    WITH_NL: True
  HEADS:
    NECK_FEAT: after
    POOL_LAYER: GeneralizedMeanPoolingP
    CLS_LAYER: CircleSoftmax
    SCALE: 64
    MARGIN: 0.35
INPUT:
  SIZE_TRAIN: [ 384, 128 ]
  SIZE_TEST: [ 384, 128 ]
""",
    "Base-MGN.yml": """
_BASE_: Base-SBS.yml
MODEL:
  META_ARCHITECTURE: MGN
  FREEZE_LAYERS: [backbone, b1, b2, b3,]
  BACKBONE:
    WITH_NL: False
  HEADS:
    EMBEDDING_DIM: 256
""",
    "Market1501/bagtricks_R50.yml": "_BASE_: ../Base-bagtricks.yml\nOUTPUT_DIR: logs/x\n",
    "Market1501/bagtricks_R50-ibn.yml": (
        "_BASE_: ../Base-bagtricks.yml\nMODEL:\n  BACKBONE:\n    WITH_IBN: True\n"
    ),
    "Market1501/AGW_R50.yml": "_BASE_: ../Base-AGW.yml\n",
    "Market1501/sbs_R50-ibn.yml": (
        "_BASE_: ../Base-SBS.yml\nMODEL:\n  BACKBONE:\n    WITH_IBN: True\n"
    ),
    "Market1501/mgn_R50-ibn.yml": (
        "_BASE_: ../Base-MGN.yml\nMODEL:\n  BACKBONE:\n    WITH_IBN: True\n"
    ),
}


@pytest.fixture
def configs(tmp_path: Path) -> Path:
    for rel, text in CONFIGS.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    return tmp_path


@pytest.mark.parametrize(
    ("file", "name"),
    [
        ("bagtricks_R50.yml", "fastreid_bot_r50"),
        ("bagtricks_R50-ibn.yml", "fastreid_bot_r50_ibn"),
        ("AGW_R50.yml", "fastreid_agw_r50"),
        ("sbs_R50-ibn.yml", "fastreid_sbs_r50_ibn"),
        ("mgn_R50-ibn.yml", "fastreid_mgn_r50_ibn"),
    ],
)
def test_published_configs_give_the_registered_models(configs: Path, file: str, name: str) -> None:
    assert config_from_yaml(configs / "Market1501" / file) == fr.VARIANTS[name]


def test_base_chain_merges_key_by_key(configs: Path) -> None:
    raw = read_yaml_with_base(configs / "Market1501" / "mgn_R50-ibn.yml")
    heads = raw["MODEL"]["HEADS"]
    assert heads["EMBEDDING_DIM"] == 256 and heads["POOL_LAYER"] == "GeneralizedMeanPoolingP"
    assert heads["WITH_BNNECK"] is True  # from Base-bagtricks, two levels up
    assert raw["MODEL"]["BACKBONE"]["WITH_NL"] is False and raw["MODEL"]["BACKBONE"]["WITH_IBN"]


def test_user_options(configs: Path) -> None:
    cfg_file = configs / "custom.yml"
    cfg_file.write_text(
        "_BASE_: Base-SBS.yml\n"
        "MODEL:\n  BACKBONE:\n    DEPTH: 101x\n    WITH_IBN: True\n    LAST_STRIDE: 2\n"
        "  HEADS:\n    EMBEDDING_DIM: 512\n    POOL_LAYER: GlobalMaxPool\n"
        "  PIXEL_MEAN: [127.5, 127.5, 127.5]\n  PIXEL_STD: [127.5, 127.5, 127.5]\n"
        "INPUT:\n  SIZE_TEST: [320, 160]\n"
    )
    cfg = config_from_yaml(cfg_file)
    assert (cfg.depth, cfg.with_ibn, cfg.with_nl, cfg.last_stride) == (101, True, True, 2)
    assert (cfg.pool, cfg.embedding_dim, cfg.feature_dim) == ("max", 512, 512)
    pre = cfg.preprocess()
    assert (pre.height, pre.width, pre.mean, pre.std) == (320, 160, (0.5,) * 3, (0.5,) * 3)
    with torch.device("meta"):
        sd = fr.build_from_config(cfg).state_dict()
    assert len([k for k in sd if k.startswith("backbone.NL_3.") and k.endswith("g.weight")]) == 9
    assert "backbone.layer3.22.bn1.IN.weight" in sd
    assert tuple(sd["heads.bottleneck.0.weight"].shape) == (512, 2048, 1, 1)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("MODEL:\n  BACKBONE:\n    NAME: build_osnet_backbone\n", "BACKBONE.NAME"),
        ("MODEL:\n  BACKBONE:\n    DEPTH: 34x\n", "BACKBONE.DEPTH"),
        ("MODEL:\n  HEADS:\n    POOL_LAYER: Magic\n", "POOL_LAYER"),
        ("MODEL:\n  BACKBONE:\n    WITH_SE: True\n", "WITH_SE"),
        ("_BASE_: nowhere.yml\n", "nowhere.yml"),
        ("INPUT:\n  SIZE_TEST: 256\n", "SIZE_TEST"),
    ],
)
def test_unsupported_configs_name_the_option(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "c.yml").write_text(text)
    with pytest.raises(InputError, match=message):
        config_from_yaml(tmp_path / "c.yml")


def test_bad_yaml_is_a_format_error(tmp_path: Path) -> None:
    (tmp_path / "c.yml").write_text("MODEL: [unclosed\n")
    with pytest.raises(FormatError, match=r"c\.yml"):
        read_yaml_with_base(tmp_path / "c.yml")


def _small_config(folder: Path) -> Path:
    path = folder / "small.yml"
    path.write_text(
        "_BASE_: Base-AGW.yml\nMODEL:\n  HEADS:\n    EMBEDDING_DIM: 128\n"
        "INPUT:\n  SIZE_TEST: [128, 64]\n"
    )
    return path


def test_load_fastreid_reads_the_checkpoint_into_the_config_network(configs: Path) -> None:
    cfg_file = _small_config(configs)
    with pytest.warns(UserWarning, match="RANDOM"):
        random = load_fastreid(cfg_file)
    sd = {
        k: torch.randn_like(v.float()) if v.is_floating_point() else v
        for k, v in random.module.state_dict().items()
    }
    sd = {k: (v.abs() + 0.5 if k.endswith("running_var") else v) for k, v in sd.items()}
    torch.save(
        {"model": {**sd, "heads.weight": torch.randn(5, 128)}, "epoch": 3}, configs / "w.pth"
    )
    loaded = load_fastreid(cfg_file, configs / "w.pth")
    assert loaded.spec.outputs[0].shape == ("batch", 128)
    assert all(torch.equal(loaded.module.state_dict()[k], v) for k, v in sd.items())
    wrong = configs / "Market1501" / "sbs_R50-ibn.yml"
    with pytest.raises(Exception, match="trained with the config"):
        load_fastreid(wrong, configs / "w.pth")


@pytest.mark.slow
def test_cli_export_fastreid_with_config(configs: Path, capsys) -> None:
    cfg_file = _small_config(configs)
    out = configs / "m.onnx"
    assert main(["export", "fastreid", "--config", str(cfg_file), "-o", str(out)]) == 0
    import json

    side = json.loads(Path(f"{out}.json").read_text())
    assert side["model"] == "fastreid"
    assert side["inputs"][0]["shape"] == ["batch", 3, 128, 64]
    assert side["outputs"] == [{"name": "feature", "shape": ["batch", 128], "dtype": "float32"}]
    assert side["preprocess"]["interpolation"] == "bicubic"
    assert {r["batch"] for r in side["validation"]["results"]} == {1, 3, 32}


def test_cli_config_and_model_must_agree(configs: Path, capsys) -> None:
    out = str(configs / "m.onnx")
    assert main(["export", "fastreid", "-o", out]) == 2
    assert "--config" in capsys.readouterr().err
    assert main(["export", "osnet_x0_25", "--config", str(_small_config(configs)), "-o", out]) == 2
    err = capsys.readouterr().err
    assert "takes no model options (got --config)" in err and "MODEL fastreid" in err
