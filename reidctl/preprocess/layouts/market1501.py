"""Market-1501 (Zheng et al., "Scalable Person Re-identification: A Benchmark", ICCV 2015)."""

from __future__ import annotations

import re
from pathlib import Path

from reidctl.preprocess.layouts.base import (
    Layout,
    Record,
    find_dataset_dir,
    layout,
    records_from_folder,
)

_FOLDERS = {"query": "query", "gallery": "bounding_box_test", "train": "bounding_box_train"}


@layout
class Market1501(Layout):
    """Market-1501: ``query/``, ``bounding_box_test/`` (gallery), ``bounding_box_train/``.

    Dataset statistics:
        - identities: 1,501 (751 train, 750 test) plus distractors.
        - images: 12,936 train; 3,368 query; 19,732 gallery files, of which 3,819 junk
          (pid ``-1``, dropped) leave 15,913, including 2,793 distractors (pid ``0000``).
        - cameras: 6, ``c1``..``c6`` (first camera 1).

    File names ``PPPP_cCsS_FFFFFF_NN.jpg``: person id, camera, video sequence, frame, box.
    ``--root`` may be the dataset folder or a parent holding ``Market-1501-v15.09.15/``.
    """

    name = "market1501"
    pattern_help = "PPPP_cCsS_FFFFFF_NN.jpg (e.g. 0002_c1s1_000451_03.jpg, junk -1_c1s1_...)"
    _pattern = re.compile(r"(?P<pid>-1|\d{4})_c(?P<cam>\d)s\d_\d{6}_\d{2}\.jpg")

    def resolve_root(self, root: Path) -> Path:
        return find_dataset_dir(
            root, "query", ("Market-1501-v15.09.15", "market1501/Market-1501-v15.09.15"), self.name
        )

    def list_split(self, root: Path, split: str) -> list[Record]:
        return records_from_folder(
            root, _FOLDERS[split], split, self._pattern, self.name, self.pattern_help
        )
