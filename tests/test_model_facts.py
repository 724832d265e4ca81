"""Model facts inside the model file: ONNX metadata, ``reidctl adopt``, ``reidctl inspect``."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest

from reidctl import Embedder
from reidctl.artifacts import ModelSidecar, read_sidecar
from reidctl.cli import main
from reidctl.errors import FormatError, InputError, OutputExistsError
from reidctl.runners.facts import FACTS_KEY, facts_from_proto, sidecar_or_none

torch = pytest.importorskip("torch")

STD_255 = ",".join(["0.00392156862745098"] * 3)


def _export(
    net: torch.nn.Module, path: Path, example: tuple, inputs: list[str], outputs: list[str]
):
    """A plain torch.onnx.export, as another project would write its model."""
    axes = {n: {0: "n"} for n in inputs + outputs}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net.eval(),
            example,
            str(path),
            input_names=inputs,
            output_names=outputs,
            dynamic_axes=axes,
            dynamo=False,
        )
    return path


class Foreign(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 8, 3, stride=2)
        self.fc = torch.nn.Linear(8, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv(x / 255.0))
        return self.fc(x.mean(dim=(2, 3)))


class WithCamera(Foreign):
    def __init__(self) -> None:
        super().__init__()
        self.cam = torch.nn.Embedding(6, 16)

    def forward(self, image: torch.Tensor, camera: torch.Tensor) -> torch.Tensor:
        return super().forward(image) + self.cam(camera)


@pytest.fixture
def foreign(tmp_path: Path) -> Path:
    return _export(
        Foreign(), tmp_path / "foreign.onnx", (torch.zeros(2, 3, 64, 32),), ["data"], ["fc1"]
    )


@pytest.mark.shared
def test_adopted_foreign_onnx_runs_flag_free(
    foreign: Path, market_mini: Path, tmp_path: Path
) -> None:
    assert sidecar_or_none(foreign) is None
    args = ["adopt", str(foreign), "--size", "64x32", "--bgr", "--mean", "0,0,0"]
    assert main([*args, "--std", STD_255, "--feature", "fc1", "--normalize"]) == 0
    side = read_sidecar(foreign)
    assert side["inputs"] == [{"name": "data", "shape": ["n", 3, 64, 32], "dtype": "float32"}]
    assert side["feature"] == "fc1" and side["l2_normalize"] is True
    assert side["preprocess"]["color"] == "bgr"
    stored = facts_from_proto(onnx.load(str(foreign)))
    assert stored == ModelSidecar.from_dict(side).facts
    assert main([*args, "--std", STD_255]) == 2  # an existing sidecar needs --force

    # flag-free chain: preprocess --model-config, infer, eval
    prep, res = tmp_path / "prep", tmp_path / "res"
    root = ["preprocess", "market1501", "--root", str(market_mini)]
    assert main([*root, "--model-config", f"{foreign}.json", "-o", str(prep)]) == 0
    meta = json.loads((prep / "meta.json").read_text())
    assert meta["shape"] == [3, 64, 32]
    # BGR 0..255 as the model wants: the tensor is the resized BGR crop, independently
    entry = json.loads((prep / "manifest.jsonl").read_text().splitlines()[0])
    tensor = np.fromfile(prep / entry["bin"], "<f4").reshape(3, 64, 32)
    bgr = cv2.resize(cv2.imread(str(market_mini / entry["source"])), (32, 64))
    np.testing.assert_allclose(tensor, bgr.transpose(2, 0, 1).astype(np.float32), atol=1e-4)

    assert main(["infer", str(foreign), str(prep), "-o", str(res), "--threads", "1"]) == 0
    model_json = json.loads((res / "model.json").read_text())
    assert model_json["feature"] == "fc1" and model_json["l2_normalize"] is True
    assert main(["eval", str(res)]) == 0
    features = np.load(res / "features" / "fc1.npy")
    sources = [json.loads(x)["source"] for x in (prep / "manifest.jsonl").read_text().splitlines()]
    with Embedder(foreign, threads=1) as e:
        got = e.embed([market_mini / s for s in sources], normalize=False)
    assert np.array_equal(got, features)

    # copied without its sidecar: preprocess --model-config MODEL.onnx reads the metadata
    bare = tmp_path / "bare" / "foreign.onnx"
    bare.parent.mkdir()
    shutil.copy(foreign, bare)
    prep2 = tmp_path / "prep2"
    assert main([*root, "--model-config", str(bare), "-o", str(prep2), "--splits", "query"]) == 0
    assert json.loads((prep2 / "meta.json").read_text())["preprocess"] == meta["preprocess"]


def test_adopt_checks_the_model(foreign: Path) -> None:
    from reidctl.runners.adopt import adopt_model
    from reidctl.specs import PreprocessSpec

    with pytest.raises(InputError, match="give --size 64x32"):
        adopt_model(foreign, PreprocessSpec())  # 256x128 does not fit the graph
    with pytest.raises(InputError, match="unknown output 'nope'"):
        adopt_model(foreign, PreprocessSpec(64, 32), feature="nope")
    adopt_model(foreign, PreprocessSpec(64, 32))
    with pytest.raises(OutputExistsError):
        adopt_model(foreign, PreprocessSpec(64, 32))
    # the size defaults to the graph's fixed height and width
    assert main(["adopt", str(foreign), "--force"]) == 0
    assert read_sidecar(foreign)["preprocess"]["height"] == 64


@pytest.mark.shared
def test_camera_aware_model_gets_its_cameras(tmp_path: Path, market_mini: Path) -> None:
    import onnxruntime as ort

    model = _export(
        WithCamera(),
        tmp_path / "cam.onnx",
        (torch.zeros(2, 3, 64, 32), torch.zeros(2, dtype=torch.int64)),
        ["image", "camera"],
        ["feature"],
    )
    assert main(["adopt", str(model), "--bgr", "--mean", "0,0,0", "--std", STD_255]) == 0
    crops = sorted((market_mini / "query").glob("*.jpg"))[:5]
    cams = [int(p.name.split("_c")[1][0]) - 1 for p in crops]
    with Embedder(model, batch_size=2) as e:
        assert e.camera_aware
        got = e.embed(crops, cameras=cams)
        x = e.preprocess_images(crops)
        with pytest.raises(InputError, match="camera-aware"):
            e.embed(crops)
        with pytest.raises(InputError, match="cameras must be 5 integers"):
            e.embed(crops, cameras=[0, 1])
        one = e.embed_tracklets([crops[:2], crops[2:]], cameras=[0, 3], normalize=False)
    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    (ref,) = sess.run(["feature"], {"image": x, "camera": np.asarray(cams, np.int64)})
    (no_cams,) = sess.run(["feature"], {"image": x, "camera": np.zeros(5, np.int64)})
    assert not np.allclose(got, no_cams)  # the cameras reached the model
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-6)  # adopt: l2_normalize off
    (t0,) = sess.run(["feature"], {"image": x[:2], "camera": np.zeros(2, np.int64)})
    np.testing.assert_allclose(one[0], t0.mean(axis=0), rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_export_stores_the_facts_and_re_exports_byte_identically(tmp_path: Path) -> None:
    from reidctl.convert.onnx import onnx_from_torch

    a, b = tmp_path / "a" / "m.onnx", tmp_path / "b" / "m.onnx"
    side = onnx_from_torch("osnet_x0_25", a, validate_batches=(1,))
    onnx_from_torch("osnet_x0_25", b, validate_batches=(1,))
    assert a.read_bytes() == b.read_bytes()
    proto = onnx.load(str(a))
    (entry,) = [p for p in proto.metadata_props if p.key == FACTS_KEY]
    stored = json.loads(entry.value)
    assert sorted(stored) == [
        "feature",
        "format",
        "inputs",
        "l2_normalize",
        "model",
        "outputs",
        "preprocess",
    ]
    assert entry.value == json.dumps(stored, sort_keys=True, separators=(",", ":"))
    assert "sha256" not in entry.value and str(tmp_path) not in entry.value
    assert facts_from_proto(proto) == ModelSidecar.from_dict(side).facts
    # nothing but the metadata was added: the graph is the one validated
    assert side["model_sha256"] == __import__("hashlib").sha256(a.read_bytes()).hexdigest()


def test_inspect_reports_the_source_of_the_facts(foreign: Path, tmp_path: Path, capsys) -> None:
    from reidctl.runners.inspect_model import inspect_model

    r = inspect_model(foreign)
    assert r["facts_source"] == "derived" and r["opset"]["ai.onnx"] >= 7
    assert r["inputs"][0]["name"] == "data" and r["dynamic_axes"]["data"] == {"0": "n"}
    assert main(["adopt", str(foreign), "--bgr", "--feature", "fc1"]) == 0
    assert inspect_model(foreign)["facts_source"] == "sidecar"
    bare = tmp_path / "copy.onnx"
    shutil.copy(foreign, bare)
    assert inspect_model(bare)["facts_source"] == "metadata"
    capsys.readouterr()
    assert main(["inspect", str(bare)]) == 0
    text = capsys.readouterr().out
    assert "facts      from the ONNX metadata" in text and "fc1" in text and "<- feature" in text
    assert main(["inspect", str(foreign), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["facts"]["preprocess"]["color"] == "bgr" and report["facts_differ"] == []
    # a stale sidecar is reported, not raised
    side = json.loads(Path(f"{foreign}.json").read_text())
    side["feature"] = "other"
    Path(f"{foreign}.json").write_text(json.dumps(side))
    assert inspect_model(foreign)["facts_differ"] == ["feature"]
    with pytest.raises(FormatError, match="disagree on feature"):
        sidecar_or_none(foreign)
    assert main(["inspect", str(tmp_path / "none.onnx")]) == 2


@pytest.mark.openvino
@pytest.mark.shared
def test_adopt_an_openvino_ir(foreign: Path, tmp_path: Path, market_mini: Path) -> None:
    ov = pytest.importorskip("openvino")
    xml = tmp_path / "ir" / "foreign.xml"
    xml.parent.mkdir()
    ov.save_model(ov.convert_model(str(foreign)), str(xml))
    args = ["adopt", str(xml), "--size", "64x32", "--bgr", "--mean", "0,0,0", "--std", STD_255]
    assert main(args) == 0
    assert read_sidecar(xml)["inputs"][0]["name"] == "data"
    crops = sorted((market_mini / "query").glob("*.jpg"))[:3]
    with Embedder(xml) as e_ir:
        assert e_ir.backend == "openvino" and e_ir.facts_source == "sidecar"
        got = e_ir.embed(crops)
    assert main(["adopt", str(foreign), "--bgr", "--mean", "0,0,0", "--std", STD_255]) == 0
    with Embedder(foreign) as e_onnx:
        ref = e_onnx.embed(crops)
    # another back end with its own kernels: equal up to float rounding, not bitwise
    np.testing.assert_allclose(got, ref, rtol=0, atol=5e-4)
    assert (
        np.sum(got * ref, axis=1) / np.linalg.norm(got, axis=1) / np.linalg.norm(ref, axis=1)
    ).min() > 0.9999
