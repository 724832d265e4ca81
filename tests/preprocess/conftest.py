"""Fixtures of the preprocess tests: tiny datasets written into temporary folders."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from reidctl.preprocess.synthetic import SyntheticMarket, make_synthetic_market


def write_jpeg(path: Path, seed: int, size: tuple[int, int] = (128, 64)) -> Path:
    """A small smooth JPEG (H x W = ``size``) whose colours depend on ``seed``."""
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, (size[0] // 8, size[1] // 8, 3), dtype=np.uint8)
    img = cv2.resize(img, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes())
    return path


def write_images(folder: Path, names: list[str], seed: int = 0) -> None:
    for i, name in enumerate(names):
        write_jpeg(folder / name, seed + i)


@pytest.fixture(scope="session")
def synth_market(tmp_path_factory: pytest.TempPathFactory) -> SyntheticMarket:
    """A tiny synthetic Market-1501 set: 6 test ids, 2 train ids, 2 distractors, 2 junk."""
    root = tmp_path_factory.mktemp("synth") / "Market-1501-v15.09.15"
    return make_synthetic_market(root, 6, num_train_ids=2, num_distractors=2, num_junk=2)
