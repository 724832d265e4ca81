"""INT8 goal benchmark: ``python -m reidctl.benchmarks.int8``.

In one run, on this machine:

* ``aligned_reid`` (ResNet-50, 256x128, random weights: throughput does not depend on them)
  FP32 vs INT8 throughput at batch 8 with ``ort`` (goal: INT8 >= 3x FP32 on 2 cores with
  AVX-512 VNNI), and the same pair on ``openvino``;
* ``osnet_x0_25`` with the real Market-1501 weights, quantised three ways (everything; the
  depthwise convolutions kept in float; the channel gates kept in float): mean FP32-vs-INT8
  feature cosine (goal >= 0.99), mAP drop on market1501-mini (goal <= 1 point), and INT8
  throughput against FP32 (goal: not slower), on ``ort`` and ``openvino``.

Calibration uses the train split of market1501-mini (or, with ``--calib-tensors N``, N
tensors made from its crops: :mod:`reidctl.benchmarks.calib_sets`); accuracy is measured on
its query and gallery splits. The FP32 and INT8 models of each pair run in alternating
rounds in the same loop (:func:`reidctl.bench.run_bench`), so the ratios are measured under
the same conditions. Data and weights come from ``$REIDCTL_SAMPLE_DIR`` (default ``../shared``).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from reidctl.bench import BenchSettings, cache_dir, machine_info, run_bench


def shared_dir() -> Path:
    default = Path(__file__).resolve().parents[2].parent / "shared"
    return Path(os.environ.get("REIDCTL_SAMPLE_DIR", default)).resolve()


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _prep(model_file: Path, data: Path, out: Path, splits: tuple[str, ...]) -> Path:
    from reidctl.preprocess import preprocess_dataset
    from reidctl.preprocess.config import spec_from_sidecar

    if not (out / "meta.json").is_file():
        preprocess_dataset(
            "market1501",
            data,
            out,
            spec=spec_from_sidecar(f"{model_file}.json"),
            splits=splits,
            force=True,
        )
    return out


def _export(name: str, out: Path, weights: Path | None) -> Path:
    from reidctl.convert.onnx import onnx_from_torch

    path = out / name / "model.onnx"
    if not (path.is_file() and Path(f"{path}.json").is_file()):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            onnx_from_torch(name, path, weights=weights, force=True)
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2, help="back-end threads (default 2)")
    ap.add_argument("--batch", type=int, default=8, help="batch size (default 8)")
    ap.add_argument("--seconds", type=float, default=8.0, help="inference time per cell (s)")
    ap.add_argument("--samples", type=int, default=32, help="calibration tensors (default 32)")
    ap.add_argument(
        "--calib-tensors",
        type=int,
        default=0,
        help="calibrate on this many tensors made from the real train crops (flips, crops, "
        "brightness/contrast jitter; reidctl.benchmarks.calib_sets) instead of the train "
        "split itself (default 0: the train split); --samples of them are used",
    )
    ap.add_argument("--work", type=Path, default=None, help="work dir (default: the cache)")
    ap.add_argument("--backends", default="ort,openvino", help="default: ort,openvino")
    args = ap.parse_args(argv)

    from reidctl.convert.int8 import accuracy_guard, int8_from_onnx

    shared = shared_dir()
    data = shared / "data" / "market1501-mini"
    weights = shared / "weights" / "osnet_x0_25_market1501.pth"
    for p in (data, weights):
        if not p.exists():
            _log(f"{p} is missing: set REIDCTL_SAMPLE_DIR to the shared/ folder")
            return 2
    work = args.work or cache_dir() / "int8-bench"
    work.mkdir(parents=True, exist_ok=True)
    backends = tuple(b for b in args.backends.split(",") if b)
    settings = BenchSettings(
        batch_sizes=(args.batch,), seconds=args.seconds, warmup=3, threads=args.threads, repeat=8
    )
    machine = machine_info()
    _log(
        f"machine: {machine['cpu']}, {machine['usable_cores']} cores, flags "
        f"{' '.join(machine['cpu_flags'])}; threads {args.threads}, batch {args.batch}"
    )
    t_start = time.perf_counter()
    rows: list[dict[str, Any]] = []

    # ---------------------------------------------------------------- aligned_reid
    _log("aligned_reid: export (random weights), preprocess, quantise")
    ar = _export("aligned_reid", work, None)
    ar_train = _prep(ar, data, work / "aligned_reid" / "prep-train", ("train",))
    if args.calib_tensors:
        from reidctl.benchmarks.calib_sets import augmented_set
        from reidctl.preprocess.config import spec_from_sidecar

        ar_train = augmented_set(
            data / "bounding_box_train",
            work / "aligned_reid" / f"calib-{args.calib_tensors}",
            spec_from_sidecar(f"{ar}.json"),
            args.calib_tensors,
        )
    ar_q = ar.with_name("model.int8.onnx")
    int8_from_onnx(ar, ar_train, ar_q, samples=args.samples, force=True)
    _log("aligned_reid: bench INT8 vs FP32")
    res = run_bench([ar_q, ar], backends, settings, progress=_log)
    for b in backends:
        q, f = (
            res.throughput("model.int8.onnx", b, args.batch),
            res.throughput("model.onnx", b, args.batch),
        )
        rows.append(
            {
                "model": "aligned_reid",
                "variant": "all, minmax",
                "backend": b,
                "fp32": f,
                "int8": q,
                "ratio": q / f if q and f else None,
            }
        )

    # ---------------------------------------------------------------- osnet_x0_25
    _log("osnet_x0_25: export (shared weights), preprocess, quantise 4 ways, guard each")
    os_fp = _export("osnet_x0_25", work, weights)
    os_train = _prep(os_fp, data, work / "osnet_x0_25" / "prep-train", ("train",))
    if args.calib_tensors:
        os_train = augmented_set(
            data / "bounding_box_train",
            work / "osnet_x0_25" / f"calib-{args.calib_tensors}",
            spec_from_sidecar(f"{os_fp}.json"),
            args.calib_tensors,
        )

    os_test = _prep(os_fp, data, work / "osnet_x0_25" / "prep-test", ("query", "gallery"))
    # what is kept in float: nothing; the channel gates (global pool -> sigmoid -> multiply),
    # whose tiny tensors gain nothing from INT8 kernels; the depthwise convolutions
    variants = {
        "all, minmax": ("minmax", []),
        "all, percentile": ("percentile", []),
        "gates in float, percentile": ("percentile", ["GlobalAveragePool", "Sigmoid", "Mul"]),
        "depthwise in float, percentile": ("percentile", ["depthwise"]),
    }
    files = {}
    guards: dict[tuple[str, str], Any] = {}
    for label, (method, exclude) in variants.items():
        q = os_fp.with_name(f"model.int8.v{len(files)}.onnx")
        int8_from_onnx(
            os_fp, os_train, q, method=method, samples=args.samples, exclude=exclude, force=True
        )
        files[label] = q
        for b in backends:
            guards[(label, b)] = accuracy_guard(
                os_fp,
                q,
                os_test,
                work / "osnet_x0_25" / "guard",
                backend=b,
                threads=args.threads,
            )
            _log(f"  {label} on {b}: {guards[(label, b)].summary()}")
    _log("osnet_x0_25: bench INT8 variants vs FP32")
    res = run_bench([*files.values(), os_fp], backends, settings, progress=_log)
    for label, q in files.items():
        for b in backends:
            qi, fi = (
                res.throughput(q.name, b, args.batch),
                res.throughput("model.onnx", b, args.batch),
            )
            g = guards[(label, b)]
            rows.append(
                {
                    "model": "osnet_x0_25",
                    "variant": label,
                    "backend": b,
                    "fp32": fi,
                    "int8": qi,
                    "ratio": qi / fi if qi and fi else None,
                    "cosine": g.mean_cosine,
                    "d_map": g.delta_map_points,
                    "d_r1": g.delta_rank1_points,
                    "map_fp32": g.fp32["mAP"],
                    "map_int8": g.int8["mAP"],
                }
            )

    # ---------------------------------------------------------------- table
    print(
        f"\nINT8 vs FP32, batch {args.batch}, {args.threads} threads, on {machine['cpu']} "
        f"({machine['usable_cores']} cores; {' '.join(machine['cpu_flags'])})\n"
    )
    print(
        "| model | INT8 variant | back end | FP32 img/s | INT8 img/s | INT8/FP32 | mean cosine "
        "| mAP FP32 -> INT8 | ΔmAP (pt) | Δrank-1 (pt) |"
    )
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        acc = (
            f"{r['cosine']:.4f} | {r['map_fp32']:.4f} -> {r['map_int8']:.4f} | "
            f"{r['d_map']:+.2f} | {r['d_r1']:+.2f}"
            if "cosine" in r
            else "- | - | - | -"
        )
        print(
            f"| {r['model']} | {r['variant']} | {r['backend']} | {r['fp32']:.1f} | "
            f"{r['int8']:.1f} | {r['ratio']:.2f}x | {acc} |"
        )
    print("\ngoals:")
    ar_ort = next((r for r in rows if r["model"] == "aligned_reid" and r["backend"] == "ort"), None)
    if ar_ort:
        print(
            f"  aligned_reid INT8/FP32 on ort >= 3x: {ar_ort['ratio']:.2f}x "
            f"{'PASS' if ar_ort['ratio'] >= 3 else 'MISS'}"
        )
    for r in rows:
        if r["model"] == "osnet_x0_25" and r["backend"] == "ort":
            ok = r["cosine"] >= 0.99 and -r["d_map"] <= 1.0 and r["ratio"] >= 1.0
            print(
                f"  osnet_x0_25 {r['variant']} on ort: cosine {r['cosine']:.4f} (>= 0.99), "
                f"mAP drop {-r['d_map']:.2f} pt (<= 1), speed {r['ratio']:.2f}x (>= 1): "
                f"{'PASS' if ok else 'MISS'}"
            )
    print(
        f"\ntotal {time.perf_counter() - t_start:.0f} s; command: python -m "
        f"reidctl.benchmarks.int8 {' '.join(argv if argv is not None else sys.argv[1:])}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
