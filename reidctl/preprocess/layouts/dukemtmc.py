"""DukeMTMC-reID (Zheng et al., ICCV 2017; Ristani et al., ECCVW 2016)."""

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
class DukeMTMC(Layout):
    """DukeMTMC-reID: the Market-1501 folders, names ``PPPP_cC_fFFFFFFF.jpg``.

    Dataset statistics:
        - identities: 1,404 appearing in at least two cameras (702 train, 702 test) plus
          408 that appear in one camera only and serve as gallery distractors (real ids).
        - images: 16,522 train; 2,228 query; 17,661 gallery. No junk.
        - cameras: 8, ``c1``..``c8`` (first camera 1).

    ``--root`` may be the dataset folder or a parent holding ``DukeMTMC-reID/``.
    """

    name = "dukemtmc"
    pattern_help = "PPPP_cC_fFFFFFFF.jpg (e.g. 0005_c2_f0046985.jpg)"
    _pattern = re.compile(r"(?P<pid>-1|\d{4})_c(?P<cam>\d)_f\d{7}\.jpg")

    def resolve_root(self, root: Path) -> Path:
        return find_dataset_dir(
            root, "query", ("DukeMTMC-reID", "dukemtmc-reid/DukeMTMC-reID"), self.name
        )

    def list_split(self, root: Path, split: str) -> list[Record]:
        return records_from_folder(
            root, _FOLDERS[split], split, self._pattern, self.name, self.pattern_help
        )
