"""PreprocessSpec refuses values that make every tensor NaN, meta.json invalid JSON, or a
tensor larger than memory; raw-pixel models (mean 0, std 1/255) stay possible."""

from __future__ import annotations

import json

import numpy as np
import pytest

from reidctl.cli import main
from reidctl.errors import InputError
from reidctl.preprocess.transform import ImageTransform, TensorSettings
from reidctl.specs import PreprocessSpec
from tests.preprocess.conftest import write_images


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"mean": (float("nan"), 0.5, 0.5)}, "finite"),
        ({"mean": (0.5, float("inf"), 0.5)}, "finite"),
        ({"std": (0.2, float("nan"), 0.2)}, "finite"),
        ({"std": (float("inf"), 0.2, 0.2)}, "finite"),
        ({"mean": (2.0, 2.0, 2.0)}, r"outside \[0, 1\]"),
        ({"mean": (-0.1, 0.5, 0.5)}, r"outside \[0, 1\]"),
        ({"std": (0.0, 0.2, 0.2)}, "> 0"),
        ({"std": (-1.0, 0.2, 0.2)}, "> 0"),
        ({"mean": (0.5, 0.5)}, "3 values"),
        ({"height": 100000, "width": 100000}, "larger than 4096"),
        ({"height": 5000, "width": 128}, "larger than 4096"),
    ],
)
def test_spec_refuses(kwargs, match) -> None:
    with pytest.raises(InputError, match=match):
        PreprocessSpec(**kwargs)


def test_raw_pixel_models_stay_possible() -> None:
    spec = PreprocessSpec(mean=(0.0, 0.0, 0.0), std=(1 / 255,) * 3, height=4096, width=4096)
    small = PreprocessSpec(mean=(0.0, 0.0, 0.0), std=(1 / 255,) * 3, height=2, width=2)
    img = np.arange(12, dtype=np.uint8).reshape(2, 2, 3)
    out = ImageTransform(TensorSettings(small))(img)
    np.testing.assert_allclose(out, img[:, :, ::-1].transpose(2, 0, 1).astype(np.float32))
    assert spec.height == 4096


@pytest.mark.parametrize(
    "extra",
    [
        ["--mean", "nan,0.5,0.5"],
        ["--mean", "inf,inf,inf"],
        ["--std", "0.2,nan,0.2"],
        ["--mean", "2,2,2"],
        ["--std", "0,1,1"],
        ["--size", "100000x100000"],
    ],
)
def test_cli_refuses_before_writing(tmp_path, capsys, extra) -> None:
    write_images(tmp_path / "data" / "gallery", ["1_c1_a.jpg"])
    out = tmp_path / "p"
    rc = main(["preprocess", "folder", "--root", str(tmp_path / "data"), "-o", str(out),
               "--splits", "gallery", *extra])  # fmt: skip
    err = capsys.readouterr().err
    assert (rc == 2 and "Traceback" not in err and extra[0] in err) or "larger than" in err
    assert not out.exists()


def test_sidecar_with_nan_is_refused(tmp_path) -> None:
    from reidctl.preprocess.config import spec_from_sidecar

    side = tmp_path / "m.onnx.json"
    block = PreprocessSpec().to_dict()
    block["mean"] = [float("nan")] * 3
    side.write_text(json.dumps({"format": "reidctl.model/1", "preprocess": block}))
    with pytest.raises(InputError, match="finite"):
        spec_from_sidecar(side)
