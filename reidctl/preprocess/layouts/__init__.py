"""Dataset layouts, registered by name: ``market1501``, ``dukemtmc``, ``msmt17``, ``cuhk03``
(``cuhk03_labeled``) and ``folder``. See :mod:`reidctl.preprocess.layouts.base`."""

from reidctl.preprocess.layouts import cuhk03, dukemtmc, folder, market1501, msmt17
from reidctl.preprocess.layouts.base import (
    DEFAULT_SPLITS,
    SPLITS,
    Layout,
    Record,
    ScanResult,
    get_layout,
    layout,
    layout_first_camera,
    list_layouts,
    parse_splits,
    register_layout,
    scan_layout,
)

__all__ = [
    "DEFAULT_SPLITS",
    "SPLITS",
    "Layout",
    "Record",
    "ScanResult",
    "cuhk03",
    "dukemtmc",
    "folder",
    "get_layout",
    "layout",
    "layout_first_camera",
    "list_layouts",
    "market1501",
    "msmt17",
    "parse_splits",
    "register_layout",
    "scan_layout",
]
