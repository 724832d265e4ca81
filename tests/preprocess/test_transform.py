"""One image -> one tensor: normalisation, dtypes, flip, colour order, bad bytes."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from reidctl.errors import BadDataError, InputError
from reidctl.preprocess.transform import (
    ImageTransform,
    TensorSettings,
    decode_image,
    truncation_reason,
)
from reidctl.specs import PreprocessSpec
from tests.preprocess.conftest import write_jpeg

MEAN, STD = (0.486, 0.459, 0.408), (0.229, 0.224, 0.225)


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    rng = np.random.default_rng(3)
    return rng.integers(0, 256, (128, 64, 3), dtype=np.uint8)


def _reference(bgr: np.ndarray, spec: PreprocessSpec, flip: bool) -> np.ndarray:
    """The float64 path written out step by step."""
    img = bgr[:, :, ::-1] if spec.color == "rgb" else bgr
    img = cv2.resize(
        np.ascontiguousarray(img), (spec.width, spec.height), interpolation=cv2.INTER_LINEAR
    )
    if flip:
        img = img[:, ::-1]
    x = (img.astype(np.float64) / 255.0 - np.array(spec.mean)) / np.array(spec.std)
    return x.transpose(2, 0, 1)


@pytest.mark.parametrize("color", ["rgb", "bgr"])
@pytest.mark.parametrize("flip", [False, True])
def test_float32_matches_float64_reference(image: np.ndarray, color: str, flip: bool):
    spec = PreprocessSpec(mean=MEAN, std=STD, color=color)
    out = ImageTransform(TensorSettings(spec, "float32", flip))(image)
    assert out.shape == (3, 256, 128) and out.dtype == np.dtype("<f4")
    np.testing.assert_allclose(out, _reference(image, spec, flip), rtol=0, atol=1e-6)


def test_float16_and_uint8(image: np.ndarray):
    spec = PreprocessSpec(height=64, width=32)
    half = ImageTransform(TensorSettings(spec, "float16"))(image)
    assert half.dtype == np.float16
    np.testing.assert_allclose(half, _reference(image, spec, False), atol=4e-3)
    raw = ImageTransform(TensorSettings(spec, "uint8"))(image)
    resized = cv2.resize(image, (32, 64), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_array_equal(raw, resized[:, :, ::-1].transpose(2, 0, 1))


def test_interpolations_differ(image: np.ndarray):
    outs = {
        name: ImageTransform(TensorSettings(PreprocessSpec(interpolation=name)))(image)
        for name in ("bilinear", "bicubic", "area", "nearest")
    }
    assert not np.array_equal(outs["bilinear"], outs["bicubic"])
    assert not np.array_equal(outs["bilinear"], outs["nearest"])


def test_settings_sizes_and_bad_dtype():
    s = TensorSettings(PreprocessSpec(), "float32")
    assert s.shape == (3, 256, 128) and s.nbytes == 393_216
    assert TensorSettings(PreprocessSpec(), "uint8").nbytes == 98_304
    with pytest.raises(InputError, match="valid: float32, float16, uint8"):
        TensorSettings(PreprocessSpec(), "int8")


def test_truncated_and_corrupt_bytes(tmp_path: Path):
    data = write_jpeg(tmp_path / "a.jpg", 0).read_bytes()
    assert truncation_reason(data) is None
    assert decode_image(data).shape == (128, 64, 3)
    assert "truncated JPEG" in truncation_reason(data[: len(data) // 2])
    assert truncation_reason(b"") == "empty file"
    with pytest.raises(BadDataError, match=r"x\.jpg: truncated JPEG"):
        decode_image(data[:-200], "x.jpg")
    with pytest.raises(BadDataError, match=r"y\.jpg: not a decodable image"):
        decode_image(b"hello, not an image", "y.jpg")
    png = cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))[1].tobytes()
    assert truncation_reason(png) is None
    assert "truncated PNG" in truncation_reason(png[:-20])


def test_grayscale_decodes_to_three_channels():
    gray = cv2.imencode(".png", np.full((10, 5), 77, np.uint8))[1].tobytes()
    img = decode_image(gray)
    assert img.shape == (10, 5, 3) and (img == 77).all()
