"""A small synthetic dataset in the Market-1501 layout, for demos, tests and benchmarks.

Each identity is a procedurally drawn person (head, torso with arms, legs, shoes) whose hair,
skin, clothing colours, clothing pattern and build come from the identity; each camera has
its own background, colour cast, brightness and noise; each image moves, scales, mirrors and
poses the person a little. Colour is enough to tell identities apart, but the cameras' light
makes the same person look different across views, so retrieval is not trivial.

Everything derives from ``seed``, and the JPEGs are encoded by OpenCV at a fixed quality, so
the same call writes byte-identical files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from reidctl.errors import InputError, OutputExistsError
from reidctl.io import write_bytes_atomic

WIDTH, HEIGHT = 64, 128  # Market-1501 crop size, pixels
_FOLDERS = ("query", "bounding_box_test", "bounding_box_train")
_PATTERNS = ("solid", "hstripes", "vstripes", "checks", "sash", "split")


@dataclass(frozen=True)
class SyntheticMarket:
    """What :func:`make_synthetic_market` wrote (image counts include junk and distractors)."""

    root: Path
    num_query: int
    num_gallery: int
    num_train: int
    num_junk: int
    num_distractors: int
    test_ids: tuple[int, ...]
    train_ids: tuple[int, ...]
    num_cameras: int


@dataclass(frozen=True)
class _Identity:
    skin: tuple[int, int, int]
    hair: tuple[int, int, int]
    top: tuple[int, int, int]
    top2: tuple[int, int, int]
    bottom: tuple[int, int, int]
    shoes: tuple[int, int, int]
    pattern: str
    width: int  # torso half-width, pixels
    shorts: bool


@dataclass(frozen=True)
class _Camera:
    bg_top: np.ndarray
    bg_bottom: np.ndarray
    gain: np.ndarray  # per BGR channel
    offset: float
    noise: float
    clutter: tuple[tuple[int, int, int, int, tuple[int, int, int]], ...]


def _rng(*key: int) -> np.random.Generator:
    return np.random.default_rng(list(key))


def _hsv_colour(rng: np.random.Generator, sat: tuple[float, float], val: tuple[float, float]):
    hsv = np.uint8([[[rng.integers(0, 180), rng.uniform(*sat) * 255, rng.uniform(*val) * 255]]])
    return tuple(int(v) for v in cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0])


def _identity(seed: int, pid: int) -> _Identity:
    rng = _rng(seed, 1, pid)
    skin_tone = rng.uniform(0.35, 0.95)
    skin = (int(90 * skin_tone + 40), int(140 * skin_tone + 40), int(170 * skin_tone + 60))
    return _Identity(
        skin=skin,
        hair=_hsv_colour(rng, (0.2, 0.7), (0.05, 0.45)),
        top=_hsv_colour(rng, (0.45, 1.0), (0.35, 1.0)),
        top2=_hsv_colour(rng, (0.0, 1.0), (0.1, 1.0)),
        bottom=_hsv_colour(rng, (0.2, 0.9), (0.15, 0.8)),
        shoes=_hsv_colour(rng, (0.0, 0.4), (0.05, 0.5)),
        pattern=_PATTERNS[int(rng.integers(len(_PATTERNS)))],
        width=int(rng.integers(10, 15)),
        shorts=bool(rng.random() < 0.25),
    )


def _camera(seed: int, cam: int) -> _Camera:
    rng = _rng(seed, 2, cam)
    clutter = tuple(
        (
            int(rng.integers(0, WIDTH)),
            int(rng.integers(0, HEIGHT)),
            int(rng.integers(6, 30)),
            int(rng.integers(6, 40)),
            _hsv_colour(rng, (0.0, 0.5), (0.2, 0.9)),
        )
        for _ in range(int(rng.integers(2, 6)))
    )
    return _Camera(
        bg_top=np.array(_hsv_colour(rng, (0.0, 0.4), (0.3, 0.9)), np.float32),
        bg_bottom=np.array(_hsv_colour(rng, (0.0, 0.3), (0.2, 0.7)), np.float32),
        gain=rng.uniform(0.7, 1.3, 3).astype(np.float32),
        offset=float(rng.uniform(-30, 30)),
        noise=float(rng.uniform(2, 7)),
        clutter=clutter,
    )


def _background(cam: _Camera) -> np.ndarray:
    t = np.linspace(0.0, 1.0, HEIGHT, dtype=np.float32)[:, None, None]
    img = (1 - t) * cam.bg_top + t * cam.bg_bottom
    img = np.repeat(img, WIDTH, axis=1)
    for x, y, w, h, colour in cam.clutter:
        cv2.rectangle(img, (x, y), (x + w, y + h), colour, -1)
    return img


def _draw_torso(img: np.ndarray, who: _Identity, x0: int, y0: int, x1: int, y1: int) -> None:
    cv2.rectangle(img, (x0, y0), (x1, y1), who.top, -1)
    if who.pattern == "hstripes":
        for y in range(y0 + 3, y1, 7):
            cv2.rectangle(img, (x0, y), (x1, min(y + 2, y1)), who.top2, -1)
    elif who.pattern == "vstripes":
        for x in range(x0 + 3, x1, 7):
            cv2.rectangle(img, (x, y0), (min(x + 2, x1), y1), who.top2, -1)
    elif who.pattern == "checks":
        for y in range(y0, y1, 8):
            for x in range(x0 + ((y - y0) // 8 % 2) * 4, x1, 8):
                cv2.rectangle(img, (x, y), (min(x + 3, x1), min(y + 3, y1)), who.top2, -1)
    elif who.pattern == "sash":
        cv2.line(img, (x0, y0), (x1, y1), who.top2, 4, cv2.LINE_AA)
    elif who.pattern == "split":
        cv2.rectangle(img, (x0, (y0 + y1) // 2), (x1, y1), who.top2, -1)


def _draw_person(img: np.ndarray, who: _Identity, rng: np.random.Generator) -> None:
    s = rng.uniform(0.88, 1.05)
    cx = WIDTH / 2 + rng.uniform(-5, 5)
    top = 6 + rng.uniform(-3, 5)

    def p(x: float, y: float) -> tuple[int, int]:
        return round(cx + x * s), round(top + y * s)

    w = who.width
    stride = rng.uniform(-6, 6)
    leg = who.skin if who.shorts else who.bottom
    # legs, then shorts, then shoes
    for side in (-1, 1):
        hip, foot = p(side * w * 0.45, 62), p(side * w * 0.45 + side * stride * 0.5, 110)
        cv2.line(img, hip, foot, leg, max(3, int(7 * s)), cv2.LINE_AA)
        cv2.ellipse(img, (foot[0], foot[1] + 2), (5, 3), 0, 0, 360, who.shoes, -1, cv2.LINE_AA)
    if who.shorts:
        cv2.rectangle(img, p(-w, 60), p(w, 78), who.bottom, -1)
    cv2.rectangle(img, p(-w, 58), p(w, 66), who.bottom, -1)
    # arms swing with the stride
    for side in (-1, 1):
        sh = p(side * (w + 2), 24)
        hand = p(side * (w + 4) - side * stride * 0.3, 58)
        cv2.line(img, sh, hand, who.top, max(3, int(5 * s)), cv2.LINE_AA)
        cv2.circle(img, hand, 2, who.skin, -1, cv2.LINE_AA)
    x0, y0 = p(-w, 21)
    x1, y1 = p(w, 62)
    _draw_torso(img, who, x0, y0, x1, y1)
    cv2.rectangle(img, p(-3, 16), p(3, 22), who.skin, -1)  # neck
    head = p(0, 10)
    r = max(5, int(8 * s))
    cv2.circle(img, head, r, who.skin, -1, cv2.LINE_AA)
    cv2.ellipse(img, (head[0], head[1] - 2), (r, r - 2), 0, 180, 360, who.hair, -1, cv2.LINE_AA)


def _finish(img: np.ndarray, cam: _Camera, rng: np.random.Generator) -> np.ndarray:
    img = img * cam.gain[None, None, :] + cam.offset * rng.uniform(0.7, 1.3)
    img = img + rng.normal(0.0, cam.noise, img.shape).astype(np.float32)
    if rng.random() < 0.5:
        img = img[:, ::-1]
    img = cv2.GaussianBlur(np.ascontiguousarray(img), (3, 3), float(rng.uniform(0.3, 0.9)))
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def render_person(seed: int, pid: int, cam: int, k: int) -> np.ndarray:
    """Image ``k`` of identity ``pid`` seen by camera ``cam``: 128x64x3 uint8 BGR."""
    camera = _camera(seed, cam)
    rng = _rng(seed, 3, pid, cam, k)
    img = _background(camera)
    _draw_person(img, _identity(seed, pid), rng)
    return _finish(img, camera, rng)


def _render_distractor(seed: int, cam: int, k: int, junk: bool) -> np.ndarray:
    """Background with a fragment of a random person: a bad detection (Market's 0000 / -1)."""
    camera = _camera(seed, cam)
    rng = _rng(seed, 4 if junk else 5, cam, k)
    img = _background(camera)
    fragment = np.zeros_like(img)
    _draw_person(fragment, _identity(seed, 100_000 + k + (50_000 if junk else 0)), rng)
    dy = int(rng.integers(40, 90)) * (1 if rng.random() < 0.5 else -1)
    fragment = np.roll(fragment, (dy, int(rng.integers(-25, 25))), axis=(0, 1))
    mask = fragment.sum(axis=2, keepdims=True) > 0
    img = np.where(mask, fragment, img)
    if junk:
        img = cv2.GaussianBlur(img, (9, 9), 4.0)
    return _finish(img, camera, rng)


def _encode(img: np.ndarray, quality: int) -> bytes:
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise InputError("OpenCV could not encode a JPEG")
    return buf.tobytes()


def make_synthetic_market(
    root: str | os.PathLike[str],
    num_ids: int = 25,
    *,
    num_train_ids: int = 8,
    queries_per_id: int = 2,
    gallery_per_id: tuple[int, int] = (3, 4),
    train_per_id: int = 4,
    num_cameras: int = 6,
    num_distractors: int = 6,
    num_junk: int = 4,
    seed: int = 0,
    quality: int = 90,
    force: bool = False,
) -> SyntheticMarket:
    """Write a synthetic Market-1501-style dataset (64x128 JPEGs) under ``root``.

    Test identities are pids 1..``num_ids``; each has ``queries_per_id`` query images on
    distinct cameras and between ``gallery_per_id[0]`` and ``gallery_per_id[1]`` gallery
    images, the first of them on cameras none of its queries uses, so every query has a
    valid cross-camera match. Train identities follow (``num_train_ids`` of them, each with
    ``train_per_id`` images). The gallery also holds ``num_distractors`` images of pid
    ``0000`` and ``num_junk`` of pid ``-1``. Names are ``PPPP_cCsS_FFFFFF_NN.jpg``.

    Defaults give 50 query, about 98 gallery and 32 train images: small enough to run the
    whole demo chain in seconds. Same arguments, same bytes. Refuses (``OutputExistsError``)
    to write into non-empty Market folders unless ``force``, which first deletes their JPEGs.
    """
    if not 2 <= num_cameras <= 9:
        raise InputError(f"num_cameras must be 2..9 (one digit in the name), got {num_cameras}")
    if not 1 <= queries_per_id <= num_cameras:
        raise InputError(f"queries_per_id must be 1..num_cameras, got {queries_per_id}")
    lo, hi = gallery_per_id
    if not 1 <= lo <= hi:
        raise InputError(f"gallery_per_id must be (min, max) with 1 <= min <= max, got {lo, hi}")
    if num_ids < 1 or num_ids + num_train_ids > 9999:
        raise InputError(f"need 1 <= num_ids and num_ids + num_train_ids <= 9999, got {num_ids}")
    root = Path(root)
    for folder in _FOLDERS:
        d = root / folder
        if d.is_dir() and any(d.iterdir()):
            if not force:
                raise OutputExistsError(
                    f"{d} is not empty; use force=True (--force) or choose another folder"
                )
            for p in d.glob("*.jpg"):
                p.unlink()
        d.mkdir(parents=True, exist_ok=True)

    frame = 0

    def write(folder: str, pid_text: str, cam: int, img: np.ndarray) -> None:
        nonlocal frame
        frame += 37  # distinct, increasing frame numbers like a real video index
        seq = 1 + (frame // 1000) % 6
        name = f"{pid_text}_c{cam}s{seq}_{frame:06d}_{frame % 7:02d}.jpg"
        write_bytes_atomic(root / folder / name, _encode(img, quality))

    counts = {"query": 0, "gallery": 0, "train": 0}
    test_ids = tuple(range(1, num_ids + 1))
    for pid in test_ids:
        rng = _rng(seed, 6, pid)
        cams = [int(c) + 1 for c in rng.permutation(num_cameras)]
        q_cams = cams[:queries_per_id]
        others = cams[queries_per_id:] or q_cams
        n_gallery = int(rng.integers(lo, hi + 1))
        # first the other views of each query camera's identity, then random cameras
        g_cams = [others[i % len(others)] for i in range(min(n_gallery, len(q_cams)))]
        g_cams += [int(c) + 1 for c in rng.integers(0, num_cameras, n_gallery - len(g_cams))]
        k = 0
        for cam in q_cams:
            write("query", f"{pid:04d}", cam, render_person(seed, pid, cam, k))
            k += 1
        for cam in g_cams:
            write("bounding_box_test", f"{pid:04d}", cam, render_person(seed, pid, cam, k))
            k += 1
        counts["query"] += len(q_cams)
        counts["gallery"] += len(g_cams)
    for i in range(num_distractors):
        cam = 1 + i % num_cameras
        write("bounding_box_test", "0000", cam, _render_distractor(seed, cam, i, junk=False))
    for i in range(num_junk):
        cam = 1 + (i * 5) % num_cameras
        write("bounding_box_test", "-1", cam, _render_distractor(seed, cam, i, junk=True))
    train_ids = tuple(range(num_ids + 1, num_ids + num_train_ids + 1))
    for pid in train_ids:
        for k in range(train_per_id):
            cam = 1 + (pid + k) % num_cameras
            write("bounding_box_train", f"{pid:04d}", cam, render_person(seed, pid, cam, k))
        counts["train"] += train_per_id
    return SyntheticMarket(
        root=root.resolve(),
        num_query=counts["query"],
        num_gallery=counts["gallery"] + num_distractors + num_junk,
        num_train=counts["train"],
        num_junk=num_junk,
        num_distractors=num_distractors,
        test_ids=test_ids,
        train_ids=train_ids,
        num_cameras=num_cameras,
    )
