"""INT8 static quantisation: calibration reader, exclusions, sidecar, and the accuracy guard."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from reidctl.artifacts import (
    ManifestEntry,
    ModelSidecar,
    read_sidecar,
    write_manifest,
    write_sidecar,
)
from reidctl.commands.convert.int8 import command as int8_command
from reidctl.convert import int8
from reidctl.errors import AccuracyGuardError, FormatError, InputError, OutputExistsError
from reidctl.io import sha256_file, write_json_atomic
from reidctl.platform import u8s8_saturates
from reidctl.specs import PreprocessSpec
from tests.conftest import require

H, W = 16, 8


def _tiny_onnx(path: Path) -> Path:
    """Conv -> ReLU -> depthwise Conv -> ReLU -> global mean -> MatMul: a 16-d feature."""
    torch = require("torch")

    class Tiny(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 8, 3, padding=1, bias=False)
            self.dw = torch.nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False)
            self.fc = torch.nn.Linear(8, 16, bias=False)

        def forward(self, x):
            x = torch.relu(self.dw(torch.relu(self.conv(x))))
            return self.fc(x.mean((2, 3)))

    torch.manual_seed(0)
    torch.onnx.export(
        Tiny().eval(),
        torch.randn(2, 3, H, W),
        str(path),
        input_names=["image"],
        output_names=["feature"],
        dynamic_axes={"image": {0: "batch"}, "feature": {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )
    write_sidecar(
        path,
        {
            "model": "tiny",
            "weights": None,
            "preprocess": PreprocessSpec(height=H, width=W).to_dict(),
            "inputs": [{"name": "image", "shape": ["batch", 3, H, W], "dtype": "float32"}],
            "outputs": [{"name": "feature", "shape": ["batch", 16], "dtype": "float32"}],
            "feature": "feature",
            "l2_normalize": True,
            "opset": 17,
            "static_batch": None,
            "model_file": path.name,
            "model_sha256": sha256_file(path),
        },
    )
    return path


def make_prep(root: Path, splits: dict[str, int], *, ids: int = 6, scale: float = 1.0, seed=0):
    """A labelled preprocessed set whose tensors carry their identity as a colour pattern
    (same id -> same pattern plus noise), so a working model retrieves them well."""
    rng = np.random.default_rng(seed)
    patterns = np.random.default_rng(123).standard_normal((ids + 1, 3, 1, 1)).astype(np.float32)
    root.mkdir(parents=True)
    entries = []
    for split, per_id in splits.items():
        for pid in range(1, ids + 1):
            for k in range(per_id):
                cam = 1 + k + (1 if split == "gallery" else 0)
                stem = f"{split}_{pid:04d}_c{cam}s1_{k:06d}_00"
                x = 2 * patterns[pid] + 0.2 * rng.standard_normal((3, H, W)).astype(np.float32)
                (x * scale).astype(np.float32).tofile(root / f"{stem}.bin")
                src = f"{split}/{stem.split('_', 1)[1]}.jpg"
                entries.append(ManifestEntry(len(entries), f"{stem}.bin", src, pid, cam, split))
    write_manifest(root / "manifest.jsonl", entries)
    write_json_atomic(
        root / "meta.json",
        {
            "format": "reidctl.prep/1",
            "layout": "market1501",
            "root": str(root / "images"),
            "splits": list(splits),
            "preprocess": PreprocessSpec(height=H, width=W).to_dict(),
            "flip": False,
            "dtype": "float32",
            "shape": [3, H, W],
            "counts": {s: n * ids for s, n in splits.items()},
        },
    )
    return root


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("int8")
    return {
        "model": _tiny_onnx(base / "tiny.onnx"),
        "calib": make_prep(base / "calib", {"train": 4}, seed=1),
        "eval": make_prep(base / "eval", {"query": 1, "gallery": 2}, seed=2),
        # absurd activation ranges: every real input quantises to the zero point
        "broken": make_prep(base / "broken", {"train": 2}, scale=1e5, seed=3),
    }


def test_spread_indices() -> None:
    assert int8.spread_indices(10, 3) == [0, 4, 9]  # 4.5 rounds to even
    assert int8.spread_indices(3, 8) == [0, 1, 2]
    assert int8.spread_indices(5, None) == [0, 1, 2, 3, 4]
    with pytest.raises(InputError):
        int8.spread_indices(5, 0)


def test_calibration_reader_batches(setup) -> None:
    reader = int8.PrepCalibrationReader(setup["calib"], "image", samples=10, batch_size=4)
    batches = list(reader)
    assert [len(b["image"]) for b in batches] == [4, 4, 2] == [4, 4, 2][: len(reader)]
    assert batches[0]["image"].shape == (4, 3, H, W) and batches[0]["image"].dtype == np.float32
    reader.rewind()
    assert np.array_equal(reader.get_next()["image"], batches[0]["image"])
    static = int8.PrepCalibrationReader(
        setup["calib"], "image", samples=10, batch_size=4, static_batch=True
    )
    assert len(static) == 2 and len(list(static)) == 2


def test_calibration_reader_rejects_bad_tensor(tmp_path) -> None:
    prep = make_prep(tmp_path / "p", {"train": 1}, ids=2)
    next(prep.glob("*.bin")).write_bytes(b"\0" * 10)
    with pytest.raises(FormatError, match="holds 10 bytes"):
        list(int8.PrepCalibrationReader(prep, "image", batch_size=8))


def test_resolve_exclusions(setup) -> None:
    import onnx

    model = onnx.load(str(setup["model"]))
    convs = [n.name for n in model.graph.node if n.op_type == "Conv"]
    assert int8.depthwise_conv_nodes(model) == [convs[1]]
    assert int8.resolve_exclusions(model, ["depthwise"]) == [convs[1]]
    assert int8.resolve_exclusions(model, ["Conv"]) == convs
    assert int8.resolve_exclusions(model, [convs[0], "MatMul"])[0] == convs[0]
    with pytest.raises(InputError, match=r"op types: .*Conv"):
        int8.resolve_exclusions(model, ["NoSuchLayer"])


def test_quantise_writes_qdq_model_and_sidecar(setup, tmp_path) -> None:
    import onnx

    out = tmp_path / "tiny.int8.onnx"
    side = int8.int8_from_onnx(setup["model"], setup["calib"], out, samples=16)
    q = onnx.load(str(out))
    ops = [n.op_type for n in q.graph.node]
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    assert side == read_sidecar(out)
    assert side["model_sha256"] == sha256_file(out)
    assert side["source"]["sha256"] == sha256_file(setup["model"])
    assert side["feature"] == "feature" and side["inputs"][0]["shape"] == ["batch", 3, H, W]
    conv = side["conversion"]
    assert conv["format"] == "QDQ" and conv["per_channel"] is True
    assert conv["calibration"]["samples"] == 16 and conv["method"] == "minmax"
    assert "validation" not in side
    # the model facts travel inside the INT8 file too, equal to its sidecar's
    from reidctl.runners.facts import FACTS_KEY, facts_from_proto

    stored = facts_from_proto(q)
    assert stored is not None and [p.key for p in q.metadata_props].count(FACTS_KEY) == 1
    assert stored == ModelSidecar.from_dict(side).facts

    # deterministic: the same inputs give the same bytes
    again = tmp_path / "again" / "tiny.int8.onnx"
    int8.int8_from_onnx(setup["model"], setup["calib"], again, samples=16)
    assert sha256_file(again) == sha256_file(out)

    with pytest.raises(OutputExistsError):
        int8.int8_from_onnx(setup["model"], setup["calib"], out)


def test_excluded_depthwise_stays_float(setup, tmp_path) -> None:
    import onnx

    out = tmp_path / "dw.int8.onnx"
    side = int8.int8_from_onnx(setup["model"], setup["calib"], out, exclude=["depthwise"])
    assert len(side["conversion"]["excluded_nodes"]) == 1
    q = onnx.load(str(out))
    producers = {o: n for n in q.graph.node for o in n.output}
    dw = next(n for n in q.graph.node if n.name == side["conversion"]["excluded_nodes"][0])
    # its weight stays a float initializer; the other conv's weight is dequantised int8
    assert dw.input[1] in {t.name for t in q.graph.initializer}
    other = next(n for n in q.graph.node if n.op_type == "Conv" and n.name != dw.name)
    assert producers[other.input[1]].op_type == "DequantizeLinear"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"method": "kl"}, "unknown calibration method"),
        ({"max_map_drop": 1.0}, "needs --eval"),
    ],
)
def test_bad_arguments(setup, tmp_path, kwargs, match) -> None:
    with pytest.raises(InputError, match=match):
        int8.int8_from_onnx(setup["model"], setup["calib"], tmp_path / "x.onnx", **kwargs)
    assert not (tmp_path / "x.onnx").exists()


def test_missing_sidecar_and_output_suffix(setup, tmp_path) -> None:
    bare = tmp_path / "bare.onnx"
    bare.write_bytes(setup["model"].read_bytes())
    with pytest.raises(FormatError, match="sidecar"):
        int8.int8_from_onnx(bare, setup["calib"], tmp_path / "q.onnx")
    with pytest.raises(InputError, match=r"\.onnx"):
        int8.int8_from_onnx(setup["model"], setup["calib"], tmp_path / "q.bin")


def test_overlap_counts_shared_images(setup) -> None:
    assert int8.overlapping_images(setup["eval"], setup["eval"]) == 18
    assert int8.overlapping_images(setup["calib"], setup["eval"]) == 0


def test_feature_cosines() -> None:
    a = np.array([[1.0, 0.0], [0.0, 2.0]])
    assert int8.feature_cosines(a, a * 3) == pytest.approx([1.0, 1.0])
    assert int8.feature_cosines(a, a[::-1]) == pytest.approx([0.0, 0.0])
    with pytest.raises(FormatError):
        int8.feature_cosines(a, a[:1])


def _guard_deps() -> None:
    """The guard evaluates with reidctl's own evaluation: imported, so a break fails."""
    import reidctl.evaluate.results  # noqa: F401


def test_guard_passes_a_good_quantisation_and_warns_on_same_set(setup, tmp_path) -> None:
    _guard_deps()
    out = tmp_path / "good.int8.onnx"
    with pytest.warns(int8.SameSetWarning, match="share 18 images"):
        # 8-bit weights on every CPU: the tiny model's sums stay far from int16 saturation,
        # so the guard sees the same quantisation everywhere
        side = int8.int8_from_onnx(
            setup["model"],
            setup["eval"],
            out,
            eval_dir=setup["eval"],
            max_map_drop=5.0,
            reduce_range=False,
        )
    guard = side["conversion"]["accuracy_guard"]
    assert side["conversion"]["reduce_range"] is False
    assert guard["passed"] is True and guard["num_images"] == 18
    assert guard["mean_cosine"] > 0.98
    assert guard["fp32"]["mAP"] > 0.9  # the synthetic identities are easy for FP32
    assert abs(guard["delta_map_points"]) <= 5.0


def test_guard_fails_a_broken_quantisation(setup, tmp_path) -> None:
    _guard_deps()
    out = tmp_path / "broken.int8.onnx"
    with pytest.raises(AccuracyGuardError, match="mAP dropped") as exc:
        int8.int8_from_onnx(
            setup["model"], setup["broken"], out, eval_dir=setup["eval"], max_map_drop=1.0
        )
    assert exc.value.exit_code == 1
    assert not out.exists() and not Path(f"{out}.json").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".int8-")]


def test_command_reports_guard(setup, tmp_path) -> None:
    _guard_deps()
    from click.testing import CliRunner

    out = tmp_path / "cli.int8.onnx"
    res = CliRunner().invoke(
        int8_command,
        [
            str(setup["model"]),
            "--calib",
            str(setup["calib"]),
            "-o",
            str(out),
            "--eval",
            str(setup["eval"]),
            "--exclude",
            "depthwise",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "mean cosine FP32 vs INT8" in res.output and "points" in res.output
    assert json.loads(Path(f"{out}.json").read_text())["conversion"]["exclude"] == ["depthwise"]


def test_cli_guard_failure_exits_1(setup, tmp_path, capsys) -> None:
    _guard_deps()
    from reidctl.cli import main

    out = tmp_path / "cli-broken.int8.onnx"
    argv = ["convert", "int8", str(setup["model"]), "--calib", str(setup["broken"]), "-o",
            str(out), "--eval", str(setup["eval"]), "--max-map-drop", "1"]  # fmt: skip
    assert main(argv) == 1
    assert "mAP dropped" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.slow
@pytest.mark.shared
def test_real_osnet_int8_keeps_accuracy(market_mini, osnet_weights, tmp_path) -> None:
    """osnet_x0_25 with its Market-1501 weights: percentile INT8 keeps the features (cosine
    >= 0.99) and mAP within 1 point on market1501-mini, calibrated on its train split."""
    _guard_deps()
    from reidctl.convert.onnx import onnx_from_torch
    from reidctl.models.registry import get_spec
    from reidctl.preprocess import preprocess_dataset

    model = tmp_path / "osnet.onnx"
    onnx_from_torch("osnet_x0_25", model, weights=osnet_weights, validate_batches=(1,))
    spec = get_spec("osnet_x0_25").preprocess
    train, test = tmp_path / "train", tmp_path / "test"
    preprocess_dataset("market1501", market_mini, train, spec=spec, splits=("train",))
    preprocess_dataset("market1501", market_mini, test, spec=spec, splits=("query", "gallery"))
    side = int8.int8_from_onnx(
        model, train, tmp_path / "osnet.int8.onnx", method="percentile", eval_dir=test,
        max_map_drop=1.0, threads=2,
    )  # fmt: skip
    guard = side["conversion"]["accuracy_guard"]
    # the default picks 7-bit weights exactly where uint8 x int8 kernels saturate (AVX2-only
    # x86); with 8 bits there, the mean cosine falls to about 0.89
    assert side["conversion"]["reduce_range"] is u8s8_saturates()
    assert guard["fp32"]["mAP"] == pytest.approx(0.9247, abs=1e-3)
    assert guard["mean_cosine"] >= 0.99
    assert guard["delta_map_points"] >= -1.0


def test_excluded_layers_stay_float_in_the_ort_runner(setup, tmp_path) -> None:
    """onnxruntime would re-quantise an excluded conv that sits between quantised layers
    (fed by DequantizeLinear, feeding QuantizeLinear); the runner's session keeps it in
    float, as --exclude asks."""
    import onnx
    import onnxruntime as ort
    import torch

    from reidctl.runners.ort import make_session

    class Sandwich(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 8, 3, padding=1, bias=False)
            self.dw = torch.nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False)
            self.pw = torch.nn.Conv2d(8, 16, 1, bias=False)

        def forward(self, x):
            return self.pw(self.dw(torch.relu(self.conv(x)))).mean((2, 3))

    torch.manual_seed(0)
    model = tmp_path / "sandwich.onnx"
    torch.onnx.export(
        Sandwich().eval(),
        torch.randn(2, 3, H, W),
        str(model),
        input_names=["image"],
        output_names=["feature"],
        dynamic_axes={"image": {0: "batch"}, "feature": {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )
    out = tmp_path / "sandwich.int8.onnx"
    int8.quantize_onnx(model, setup["calib"], out, exclude=["depthwise"], samples=8)

    def float_convs(runner_session: bool) -> int:
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        so.optimized_model_filepath = str(tmp_path / "optimized.onnx")
        if runner_session:
            make_session(ort, str(out), so, ["CPUExecutionProvider"])
        else:
            ort.InferenceSession(str(out), so, providers=["CPUExecutionProvider"])
        graph = onnx.load(str(tmp_path / "optimized.onnx")).graph
        return sum(n.op_type in ("Conv", "FusedConv") for n in graph.node)

    assert float_convs(runner_session=True) == 1  # the depthwise conv, as excluded
    assert float_convs(runner_session=False) == 0  # what plain onnxruntime would run
