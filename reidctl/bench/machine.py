"""Where a benchmark ran: CPU model and flags, cores, GPUs, OS and package versions."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from typing import Any

from reidctl.platform import cpu_flags, cpu_model, package_versions


def gpu_names() -> list[str]:
    """GPU names: via torch.cuda when torch is already imported, else ``nvidia-smi``."""
    torch = sys.modules.get("torch")
    if torch is not None:
        try:
            if torch.cuda.is_available():
                return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        except Exception:  # a broken CUDA install must not break a CPU benchmark
            pass
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run(
                [smi, "--query-gpu=name", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=10,
                check=False,
            )
            return [ln.strip() for ln in out.stdout.splitlines() if ln.strip()]
        except (OSError, subprocess.SubprocessError):
            pass
    return []


def machine_info() -> dict[str, Any]:
    """CPU model, flags and cores, GPUs, OS, Python and package versions."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 1
    return {
        "cpu": cpu_model(),
        "cpu_flags": cpu_flags(),
        "logical_cores": os.cpu_count(),
        "usable_cores": usable,
        "gpus": gpu_names(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "versions": package_versions(),
    }


def load_average() -> tuple[float, float, float] | None:
    """The 1, 5 and 15 minute load averages (``os.getloadavg``), ``None`` where the OS
    has none. On a machine with N cores, a 1 minute figure above N means runnable threads
    waited for a core."""
    try:
        one, five, fifteen = os.getloadavg()
    except (AttributeError, OSError):
        return None
    return (float(one), float(five), float(fifteen))
