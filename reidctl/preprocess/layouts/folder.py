"""A generic layout for one's own data: ``query/``, ``gallery/`` and ``train/`` folders."""

from __future__ import annotations

import re
from pathlib import Path

from reidctl.preprocess.layouts.base import Layout, Record, layout, records_from_folder


@layout
class Folder(Layout):
    """Generic folders ``query/``, ``gallery/`` (and ``train/``) under ``--root``.

    Dataset statistics: whatever the folders hold. File names start with the person id and
    the camera, ``PID_cCAM_*``: ``12_c3_anything.jpg``, ``0012_c3.png``. PID ``-1`` marks
    junk (dropped), ``0`` distractors (gallery only). Images: ``.jpg``, ``.jpeg``, ``.png``,
    ``.bmp``; other files are ignored. The first camera number is not fixed (``c0`` or ``c1``):
    ``meta.json`` records ``first_camera: null`` and a camera-aware model then uses its
    sidecar's ``first_camera`` (or ``reidctl infer --camera-offset``).
    """

    name = "folder"
    first_camera = None  # cameras are numbered as the names say (c0 or c1 first)
    pattern_help = "PID_cCAM_*.jpg (e.g. 0012_c3_000101.jpg or 12_c3.png; PID -1 is junk)"
    _pattern = re.compile(
        r"(?P<pid>-1|\d+)_c(?P<cam>\d+)(?:_[^/]*)?\.(?:jpg|jpeg|png|bmp)", re.IGNORECASE
    )

    def list_split(self, root: Path, split: str) -> list[Record]:
        return records_from_folder(root, split, split, self._pattern, self.name, self.pattern_help)
