"""Peak memory of INT8 calibration by calibration-set size:
``python -m reidctl.benchmarks.int8_calib_memory``.

For each size (default 128 and 2000 tensors) and method, a fresh child process pre-processes
``osnet_x0_25`` (random weights: memory does not depend on them), calibrates it on that many
tensors made from the real train crops of ``$REIDCTL_SAMPLE_DIR`` (default ``../shared``;
see :mod:`reidctl.benchmarks.calib_sets`) and reports its peak resident memory
(``VmHWM``) and wall time. Calibration holds one batch of intermediate outputs at a
time, so the peak should not grow with the set.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _status_mib(field: str) -> float:
    """``VmHWM`` (peak resident memory of this process image) or ``VmRSS`` in MiB, from
    /proc/self/status (``ru_maxrss`` would carry the parent's peak across ``exec``)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def _child(model: str, calib: str, method: str, work: str) -> None:
    from reidctl.convert.int8 import PrepCalibrationReader, calibrate_ranges

    t0 = time.perf_counter()
    reader = PrepCalibrationReader(calib, "image", samples=None, batch_size=8)
    base = _status_mib("VmRSS")
    ranges = calibrate_ranges(model, reader, method, work)
    peak = _status_mib("VmHWM")
    print(json.dumps({
        "tensors": len(reader.files), "method": method, "tensors_ranged": len(list(ranges.keys())),
        "peak_rss_mib": peak, "rss_before_mib": base, "wall_s": time.perf_counter() - t0,
    }))  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="128,2000", help="calibration-set sizes (default 128,2000)")
    ap.add_argument("--methods", default="minmax,entropy", help="default minmax,entropy")
    ap.add_argument("--work", type=Path, default=None, help="work dir (default: a temp dir)")
    ap.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        _child(*args.child)
        return 0

    import warnings

    from onnxruntime.quantization.shape_inference import quant_pre_process

    from reidctl.benchmarks.calib_sets import augmented_set
    from reidctl.benchmarks.int8 import shared_dir
    from reidctl.convert.onnx import onnx_from_torch
    from reidctl.models.registry import get_spec

    crops = shared_dir() / "data" / "market1501-mini" / "bounding_box_train"
    if not crops.is_dir():
        print(f"{crops} is missing: set REIDCTL_SAMPLE_DIR to the shared/ folder", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="int8-mem-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        model = work / "osnet.onnx"
        if not model.is_file():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                onnx_from_torch("osnet_x0_25", model, validate_batches=(1,), force=True)
        pre = work / "osnet.pre.onnx"
        quant_pre_process(str(model), str(pre), skip_symbolic_shape=False)
        spec = get_spec("osnet_x0_25").preprocess
        rows = []
        for n in (int(v) for v in args.sizes.split(",")):
            calib = augmented_set(crops, work / f"calib-{n}", spec, n)
            for method in args.methods.split(","):
                cmd = [sys.executable, "-m", "reidctl.benchmarks.int8_calib_memory", "--child",
                       str(pre), str(calib), method, str(work)]  # fmt: skip
                out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
                rows.append(json.loads(out.strip().splitlines()[-1]))
                print(f"  {rows[-1]}", file=sys.stderr, flush=True)
    print("\n| tensors | method | peak RSS (MiB) | RSS before calibrating (MiB) | wall (s) |")
    print("|---:|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['tensors']} | {r['method']} | {r['peak_rss_mib']:.0f} | "
              f"{r['rss_before_mib']:.0f} | {r['wall_s']:.1f} |")  # fmt: skip
    cmd_args = " ".join(argv if argv is not None else sys.argv[1:])
    print(f"\ncommand: python -m reidctl.benchmarks.int8_calib_memory {cmd_args}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
