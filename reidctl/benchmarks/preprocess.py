"""Preprocessing speed: reidctl's OpenCV process pool vs the reference per-image PIL loop.

Run ``python -m reidctl.benchmarks.preprocess`` (about a minute on 2 cores). It generates
``--num-images`` (default 5,000) synthetic 64x128 Market-1501-style JPEGs in a temporary
folder (or reads ``--data`` with ``--layout``, query + gallery), then, on the same images in
the same run:

1. the **reference loop** of the Ascend port, one process: ``PIL.Image.open``, RGB, resize
   to 128x256 (W x H) bilinear, ``/ 255``, ``- mean``, ``/ std`` (mean 0.486, 0.459, 0.408;
   std 0.229, 0.224, 0.225), horizontal flip, HWC -> CHW, float32 ``tofile``;
2. ``preprocess_dataset`` with the same size, mean, std and flip, float32;
3. the same with uint8 output (for models exported with ``--fold-normalize``).

Times are wall-clock for the whole call (scan, pool start, manifest and meta included).
Every method writes about 393 KB per image; on a small VM the disk and the kernel's
writeback can dominate, so ``--out-dir /dev/shm`` (tmpfs) measures the computation alone.
Outputs of one method are deleted and the page cache flushed (``os.sync``) before the next,
so each method pays for its own writes. It prints images/s and the ratio to the reference.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from reidctl.artifacts import PrepSet
from reidctl.bench import cpu_model
from reidctl.io import make_temp_dir
from reidctl.preprocess.engine import default_workers, preprocess_dataset
from reidctl.preprocess.layouts import scan_layout
from reidctl.preprocess.synthetic import make_synthetic_market
from reidctl.specs import PreprocessSpec

REF_MEAN = (0.486, 0.459, 0.408)
REF_STD = (0.229, 0.224, 0.225)
REF_SIZE = (128, 256)  # PIL wants (width, height)


def reference_loop(paths: list[Path], out_dir: Path) -> None:
    """The Ascend port's preprocessing script, one image at a time (PIL + numpy)."""
    from PIL import Image

    mean = np.array(REF_MEAN, dtype=np.float32)
    std = np.array(REF_STD, dtype=np.float32)
    for path in paths:
        img = Image.open(path).convert("RGB")
        img = img.resize(REF_SIZE, Image.BILINEAR)
        arr = np.array(img, dtype=np.float32) / 255.0
        arr -= mean
        arr /= std
        arr = arr[:, ::-1, :]  # horizontal flip
        arr = arr.transpose(2, 0, 1)
        arr.astype(np.float32).tofile(out_dir / f"{path.stem}.bin")


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _flush(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
    os.sync()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m reidctl.benchmarks.preprocess", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--data", type=Path, help="a real dataset instead of synthetic images")
    parser.add_argument("--layout", default="market1501", help="layout of --data")
    parser.add_argument("--num-images", type=int, default=5000, help="synthetic images (min)")
    parser.add_argument("--workers", type=int, default=None, help="default: all cores")
    parser.add_argument("--workdir", type=Path, default=None, help="default: a temp folder")
    parser.add_argument(
        "--out-dir",
        type=Path,
        default=None,
        help="where every method writes its tensors (default: inside the work folder); "
        "e.g. /dev/shm to take the disk out of the comparison",
    )
    args = parser.parse_args(argv)
    try:
        import PIL
    except ImportError:
        print("the reference loop needs Pillow: pip install pillow", file=sys.stderr)
        return 2

    work = make_temp_dir(args.workdir or tempfile.gettempdir(), prefix="reidctl-bench-prep-")
    try:
        if args.data is None:
            # about 5.5 test images per identity (2 queries, 3-4 gallery)
            ids = math.ceil(args.num_images / 5.5) + 1
            t = time.perf_counter()
            ds = make_synthetic_market(
                work / "data", ids, num_train_ids=0, num_distractors=0, num_junk=0
            )
            root, layout = ds.root, "market1501"
            print(
                f"generated {ds.num_query + ds.num_gallery} synthetic JPEGs in "
                f"{time.perf_counter() - t:.1f} s"
            )
        else:
            root, layout = args.data, args.layout
        scan = scan_layout(layout, root)
        paths = [scan.root / r.source for r in scan.records]
        n = len(paths)
        workers = args.workers or default_workers()
        spec = PreprocessSpec(height=256, width=128, mean=REF_MEAN, std=REF_STD)
        print(
            f"{n} images, {cpu_model()}, {os.cpu_count()} cores, {workers} workers; "
            f"Python {platform.python_version()}, numpy {np.__version__}, "
            f"Pillow {PIL.__version__}, OpenCV {__import__('cv2').__version__}"
        )
        out_base = make_temp_dir(args.out_dir or work, prefix="reidctl-bench-out-")
        print(f"tensors written under {out_base}")
        os.sync()

        rows = []
        ref_dir = out_base / "ref"
        ref_dir.mkdir()
        ref_s = _timed(lambda: reference_loop(paths, ref_dir))
        ref_first = np.fromfile(ref_dir / f"{paths[0].stem}.bin", np.float32)
        rows.append(("reference loop (PIL + numpy, 1 process)", ref_s))
        _flush(ref_dir)
        for dtype in ("float32", "uint8"):
            out = out_base / f"prep_{dtype}"
            t0 = time.perf_counter()
            preprocess_dataset(
                layout, root, out, spec=spec, dtype=dtype, flip=True, workers=workers
            )
            s = time.perf_counter() - t0
            if dtype == "float32":
                ours = PrepSet.open(out).read_batch([0])[0].ravel()
                diff = float(np.abs(ours - ref_first).max())
            rows.append((f"reidctl preprocess {dtype} ({workers} workers)", s))
            _flush(out)

        print()
        print("| method | images | seconds | images/s | vs reference |")
        print("|---|---:|---:|---:|---:|")
        for name, s in rows:
            print(f"| {name} | {n} | {s:.2f} | {n / s:,.0f} | {ref_s / s:.1f}x |")
        print()
        print(
            f"max |reidctl - reference| on the first image: {diff:.3f} "
            "(PIL's and OpenCV's bilinear resize round differently)"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if args.out_dir is not None and "out_base" in locals():
            shutil.rmtree(out_base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
