"""Deterministic ``.npz`` files (fixed zip timestamps): Ray shard files, top-k lists."""

from __future__ import annotations

import os
import zipfile
from collections.abc import Mapping

import numpy as np

from reidctl.io import atomic_path


def write_npz_deterministic(path: str | os.PathLike[str], arrays: Mapping[str, np.ndarray]) -> None:
    """``np.savez`` with fixed zip timestamps (byte-identical on re-runs), written atomically."""
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as zf:
        for name in sorted(arrays):
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            with zf.open(info, "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.asarray(arrays[name]), allow_pickle=False)
