"""MSMT17 (Wei et al., "Person Transfer GAN to Bridge Domain Gap", CVPR 2018)."""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

from reidctl.errors import InputError
from reidctl.preprocess.layouts.base import Layout, Record, layout, require_dir

# list file per split, and whether its paths are relative to the train or the test folder
_LISTS = {
    "query": ("list_query.txt", "test"),
    "gallery": ("list_gallery.txt", "test"),
    "train": ("list_train.txt", "train"),
}
# image folders of each release
_IMAGE_DIRS = {"train": ("train", "mask_train_v2"), "test": ("test", "mask_test_v2")}


@layout
class MSMT17(Layout):
    """MSMT17_V1 / MSMT17_V2: ``list_{query,gallery,train}.txt`` with ``path pid`` lines.

    Dataset statistics:
        - identities: 4,101 (1,041 train, 3,060 test).
        - images: 32,621 train (``list_train.txt``; ``list_val.txt`` is a subset of it and
          is not used); 11,659 query; 82,161 gallery.
        - cameras: 15, ``01``..``15`` (first camera 1).

    Paths in the lists are relative to ``train/`` and ``test/`` (V1) or ``mask_train_v2/``
    and ``mask_test_v2/`` (V2), e.g. ``0000/0000_000_01_0303morning_0015_0.jpg 0``. The
    camera is the third field of the file name (``01``). The lists number test identities
    from 0, which would read as "distractor" in reidctl's manifest, so pids are stored as
    list pid + 1 (the source path keeps the original). ``--root`` may be the release folder
    or a parent holding ``MSMT17_V2/`` or ``MSMT17_V1/``.
    """

    name = "msmt17"
    pattern_help = (
        "'PPPP/PPPP_III_CC_*.jpg PID' lines (e.g. 0000/0000_000_01_0303morning_0015_0.jpg 0)"
    )
    _name_pattern = re.compile(r"\d+_\d+_(?P<cam>\d+)_.*\.jpg")

    def resolve_root(self, root: Path) -> Path:
        for d in (root, root / "MSMT17_V2", root / "MSMT17_V1", root / "msmt17" / "MSMT17_V2"):
            if (d / "list_query.txt").is_file():
                return d
        raise InputError(
            f"no msmt17 dataset under {root}: expected list_query.txt in it or in "
            "MSMT17_V2/ or MSMT17_V1/; pass the release folder with --root"
        )

    def list_split(self, root: Path, split: str) -> list[Record]:
        list_name, part = _LISTS[split]
        list_path = root / list_name
        if not list_path.is_file():
            raise InputError(f"msmt17 {split} list not found: {list_path}")
        image_dir = next((d for d in _IMAGE_DIRS[part] if (root / d).is_dir()), None)
        if image_dir is None:
            require_dir(
                root / _IMAGE_DIRS[part][0],
                f"msmt17 {part} image folder",
                f"expected {' or '.join(_IMAGE_DIRS[part])}/ under {root}",
            )
        out = []
        with open(list_path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                fields = line.split()
                m = self._name_pattern.fullmatch(PurePosixPath(fields[0]).name)
                if len(fields) != 2 or not fields[1].lstrip("-").isdigit() or m is None:
                    raise InputError(
                        f"{list_path}:{lineno}: cannot parse {line.strip()!r}; msmt17 list "
                        f"lines look like {self.pattern_help}"
                    )
                pid = int(fields[1])
                out.append(
                    Record(
                        split,
                        f"{image_dir}/{fields[0]}",
                        pid + 1 if pid >= 0 else pid,
                        int(m.group("cam")),
                    )
                )
        return out
