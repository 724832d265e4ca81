"""Facts about the machine that change what reidctl does (no heavy imports here)."""

from __future__ import annotations

import os
import platform
from collections.abc import Sequence

INT8_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")
# x86 instruction sets with an 8-bit dot product that accumulates in int32; without one,
# onnxruntime's U8S8 kernels use vpmaddubsw, whose int16 intermediate sums saturate
VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")


def usable_cores() -> int:
    """The cores this process may use (its CPU affinity; ``os.cpu_count()`` off Linux)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (``platform.processor()`` elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def cpu_flags(wanted: Sequence[str] = INT8_FLAGS, cpuinfo: str = "/proc/cpuinfo") -> list[str]:
    """Which of ``wanted`` CPU flags ``cpuinfo`` lists (empty where it cannot be read)."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    have = set(line.split(":", 1)[1].split())
                    return [w for w in wanted if w in have]
    except OSError:
        pass
    return []


def u8s8_saturates(machine: str | None = None, flags: Sequence[str] | None = None) -> bool:
    """Whether uint8 x int8 products can saturate in onnxruntime's CPU kernels here.

    True on x86-64 without VNNI (AVX2 only): 8-bit weights then need ``reduce_range``
    (7-bit) to keep the features, as onnxruntime's quantisation guide advises. Arm and x86
    with VNNI accumulate in int32 and are not affected.
    """
    machine = (machine or platform.machine()).lower()
    if machine not in ("x86_64", "amd64", "i386", "i686"):
        return False
    have = cpu_flags(VNNI_FLAGS) if flags is None else flags
    return not any(f in have for f in VNNI_FLAGS)


# the packages whose versions change reidctl's results or speed
VERSION_PACKAGES = (
    "reidctl",
    "torch",
    "onnx",
    "onnxruntime",
    "onnxruntime-gpu",
    "openvino",
    "numpy",
    "opencv-python-headless",
    "faiss-cpu",
    "ray",
    "tensorrt",
)


def package_versions(names: Sequence[str] = VERSION_PACKAGES) -> dict[str, str]:
    """Installed versions of ``names`` (distribution names), read from package metadata
    without importing the packages; absent ones are left out."""
    from importlib import metadata

    out: dict[str, str] = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def version_report() -> str:
    """``reidctl X (python Y; torch Z, ...)``: what ``reidctl --version`` prints."""
    from reidctl import __version__ as own  # the code running, whatever pip last recorded

    versions = package_versions()
    versions.pop("reidctl", None)
    deps = ", ".join(f"{k} {v}" for k, v in versions.items())
    return f"reidctl {own} (python {platform.python_version()}; {deps})"
