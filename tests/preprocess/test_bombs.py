"""A decompression bomb (a small file whose header claims a huge image) is a bad image like
any other: named, counted, skipped with --skip-bad, refused before decoding."""

from __future__ import annotations

import struct
from pathlib import Path

import cv2
import numpy as np
import pytest

from reidctl.artifacts import read_manifest, read_prep_meta
from reidctl.cli import main
from reidctl.preprocess.transform import BadImageError, decode_image, header_size
from tests.preprocess.conftest import write_images, write_jpeg


def jpeg_claiming(path: Path, width: int, height: int) -> Path:
    """A real small JPEG whose frame header is patched to claim ``width`` x ``height``."""
    data = bytearray(write_jpeg(path, 0).read_bytes())
    i = 2
    while data[i + 1] not in (0xC0, 0xC1, 0xC2):
        i += 2 + struct.unpack(">H", data[i + 2 : i + 4])[0]
    data[i + 5 : i + 9] = struct.pack(">HH", height, width)
    path.write_bytes(bytes(data))
    return path


def png_claiming(path: Path, width: int, height: int) -> Path:
    _ok, buf = cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))
    data = bytearray(buf.tobytes())
    data[16:24] = struct.pack(">II", width, height)
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize(
    ("ext", "size"),
    [(".jpg", (128, 64)), (".png", (40, 30)), (".bmp", (50, 20)), (".gif", None)],
)
def test_header_size_matches_the_image(tmp_path, ext, size) -> None:
    if size is None:
        assert header_size(b"GIF89a" + struct.pack("<HH", 33, 44)) == (33, 44)
        return
    h, w = size
    img = np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8)
    data = cv2.imencode(ext, img)[1].tobytes()
    assert header_size(data) == (w, h)


@pytest.mark.parametrize("maker", [jpeg_claiming, png_claiming])
def test_bomb_is_refused_before_decoding(tmp_path, maker) -> None:
    p = maker(tmp_path / "bomb.img", 60000, 60000)
    with pytest.raises(BadImageError, match=r"bomb\.img: its header states 60000x60000"):
        decode_image(p.read_bytes(), "bomb.img")


def test_decoded_size_limit_and_opencv_errors_are_bad_images(tmp_path) -> None:
    img = write_jpeg(tmp_path / "a.jpg", 1, size=(200, 200)).read_bytes()
    with pytest.raises(BadImageError, match=r"a\.jpg: its header states 200x200"):
        decode_image(img, "a.jpg", max_pixels=1000)
    assert decode_image(img, "a.jpg", max_pixels=40000).shape == (200, 200, 3)


def _dataset(root: Path, n: int = 64) -> list[str]:
    names = [f"{i % 8 + 1}_c{i % 3 + 1}_{i:03d}.jpg" for i in range(n)]
    write_images(root / "gallery", names)
    return names


def test_bomb_in_a_run_is_counted_named_and_skipped(tmp_path, capsys) -> None:
    root = tmp_path / "data"
    _dataset(root)
    bomb = jpeg_claiming(root / "gallery" / "5_c1_bomb.jpg", 60000, 60000)
    out = tmp_path / "p"
    args = ["preprocess", "folder", "--root", str(root), "-o", str(out), "--splits", "gallery",
            "--workers", "1"]  # fmt: skip
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "1 of 65 images" in err and bomb.name in err and "60000x60000" in err
    assert "Traceback" not in err and not (out / "meta.json").exists()
    assert len(list(out.glob("*.bin"))) == 64  # every other image was done
    assert main([*args, "--resume", "--skip-bad"]) == 0
    meta = read_prep_meta(out)
    assert [b["source"] for b in meta["bad_files"]] == [f"gallery/{bomb.name}"]
    assert len(read_manifest(out)) == 64


def test_max_pixels_option(tmp_path, capsys) -> None:
    root = tmp_path / "data"
    _dataset(root, 3)
    write_jpeg(root / "gallery" / "9_c1_big.jpg", 7, size=(400, 300))
    args = ["preprocess", "folder", "--root", str(root), "--splits", "gallery", "--workers", "1"]
    assert main([*args, "-o", str(tmp_path / "a"), "--max-pixels", "100000"]) == 1
    err = capsys.readouterr().err
    assert "9_c1_big.jpg" in err and "300x400" in err and "--max-pixels 100000" in err
    assert main([*args, "-o", str(tmp_path / "b"), "--max-pixels", "120000"]) == 0
    assert main([*args, "-o", str(tmp_path / "c"), "--max-pixels", "0"]) == 2
