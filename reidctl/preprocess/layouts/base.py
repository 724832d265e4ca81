"""The layout contract: a dataset folder -> sorted ``(split, source, pid, camid)`` records.

A layout knows where a dataset keeps its query, gallery and train images and how to read
identity and camera from each image's name (or from the dataset's list files). It does not
decode images: scanning is kept apart from tensor writing so another engine (e.g. Ray) can
reuse it.

Conventions shared by every layout (those of Market-1501, see ``docs/formats.md``):

* ``pid`` ``-1`` is junk (dropped by :func:`scan_layout`), ``0`` a distractor that may sit in
  the gallery but is never a query;
* ``camid`` is the camera number as written in the file name; :attr:`Layout.first_camera`
  is the number of a dataset's first camera (1 for every built-in dataset), recorded in
  ``meta.json`` so that a camera-aware model gets ``camid - first_camera`` as its index;
* ``source`` is the image path relative to the resolved dataset root, with ``/`` separators;
* records of one split come sorted by ``source``.
"""

from __future__ import annotations

import os
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, TypeVar

from reidctl.errors import InputError, UnknownNameError

SPLITS: tuple[str, ...] = ("query", "gallery", "train")
DEFAULT_SPLITS: tuple[str, ...] = ("query", "gallery")
IMAGE_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp")
JUNK_PID = -1
DISTRACTOR_PID = 0


@dataclass(frozen=True, order=True)
class Record:
    """One image of a dataset: its split, path relative to the dataset root, pid and camid."""

    split: str
    source: str
    pid: int
    camid: int


@dataclass
class ScanResult:
    """What :func:`scan_layout` found.

    ``records`` are in output order (the splits in the order asked for, each sorted by
    source). ``dropped`` counts, per split, the junk images (and for the query split the
    distractors) left out.
    """

    layout: str
    root: Path
    splits: tuple[str, ...]
    records: list[Record]
    dropped: dict[str, dict[str, int]] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        out = {s: 0 for s in self.splits}
        for r in self.records:
            out[r.split] += 1
        return out


class Layout(ABC):
    """A dataset layout. Subclasses document the dataset's statistics in their docstring."""

    #: registry name, e.g. ``"market1501"``
    name: ClassVar[str] = ""
    #: the file-name pattern in words, quoted in errors, e.g. ``"PPPP_cCsS_FFFFFF_NN.jpg"``
    pattern_help: ClassVar[str] = ""
    #: the camera number of the dataset's first camera (``None``: the names decide)
    first_camera: ClassVar[int | None] = 1

    def resolve_root(self, root: Path) -> Path:
        """The folder that holds the dataset (``root`` itself or a known sub-folder).

        Raises :class:`InputError` naming what was expected when nothing fits.
        """
        return root

    def prepare(self, root: Path) -> None:  # noqa: B027 - optional hook, no-op by default
        """One-off work before :meth:`list_split` (e.g. extracting images from a ``.mat``)."""

    @abstractmethod
    def list_split(self, root: Path, split: str) -> list[Record]:
        """Every image of ``split`` under the resolved ``root``, junk included, any order."""


_L = TypeVar("_L", bound=type[Layout])
_LAYOUTS: dict[str, Callable[[], Layout]] = {}


def register_layout(name: str, factory: Callable[[], Layout]) -> None:
    """Register a layout under ``name``; ``factory()`` builds it."""
    if name in _LAYOUTS:
        raise ValueError(f"layout {name!r} registered twice")
    _LAYOUTS[name] = factory


def layout(cls: _L) -> _L:
    """Class decorator: register ``cls`` under ``cls.name``."""
    register_layout(cls.name, cls)
    return cls


def get_layout(name: str) -> Layout:
    """The layout registered as ``name``; :class:`UnknownNameError` lists the valid ones."""
    try:
        return _LAYOUTS[name]()
    except KeyError:
        raise UnknownNameError("layout", name, _LAYOUTS) from None


def layout_first_camera(name: str) -> int | None:
    """The first camera number of the layout registered as ``name``; ``None`` for an
    unknown name or a layout whose file names decide (``folder``)."""
    factory = _LAYOUTS.get(name)
    return None if factory is None else factory().first_camera


def list_layouts() -> list[str]:
    return sorted(_LAYOUTS)


def parse_splits(splits: str | Iterable[str]) -> tuple[str, ...]:
    """``"query,gallery"`` -> ``("query", "gallery")``, checking names and duplicates."""
    items = [s.strip() for s in splits.split(",")] if isinstance(splits, str) else list(splits)
    items = [s for s in items if s]
    if not items:
        raise InputError(f"no split given; valid splits: {', '.join(SPLITS)}")
    for s in items:
        if s not in SPLITS:
            raise UnknownNameError("split", s, SPLITS)
    if len(set(items)) != len(items):
        raise InputError(f"split listed twice in {','.join(items)!r}")
    return tuple(items)


def scan_layout(
    layout_name: str | Layout,
    root: str | os.PathLike[str],
    splits: str | Sequence[str] = DEFAULT_SPLITS,
    *,
    keep_junk: bool = False,
) -> ScanResult:
    """Find every image of ``splits`` under ``root`` with the named layout.

    Junk (pid -1) is dropped unless ``keep_junk``; distractors (pid 0) are kept in the gallery
    and train splits but never become queries. Raises :class:`InputError` for a missing root
    or split folder and for a file name that does not parse.
    """
    lay = get_layout(layout_name) if isinstance(layout_name, str) else layout_name
    split_names = parse_splits(splits)
    root_path = Path(root).expanduser()
    if not root_path.is_dir():
        raise InputError(f"dataset root {root_path} is not a directory; pass --root DATA")
    resolved = lay.resolve_root(root_path.resolve())
    lay.prepare(resolved)
    records: list[Record] = []
    dropped: dict[str, dict[str, int]] = {}
    for split in split_names:
        found = sorted(lay.list_split(resolved, split), key=lambda r: r.source)
        junk = [r for r in found if r.pid == JUNK_PID]
        query_distractors = [r for r in found if split == "query" and r.pid == DISTRACTOR_PID]
        if not keep_junk:
            found = [r for r in found if r.pid != JUNK_PID]
        found = [r for r in found if not (split == "query" and r.pid == DISTRACTOR_PID)]
        dropped[split] = {"junk": 0 if keep_junk else len(junk)}
        if split == "query":
            dropped[split]["distractors"] = len(query_distractors)
        records.extend(found)
    return ScanResult(lay.name, resolved, split_names, records, dropped)


# --------------------------------------------------------------------------- helpers


def list_images(folder: Path) -> list[Path]:
    """Image files directly in ``folder`` (by suffix, case-insensitive), sorted by name.

    Other files (``Thumbs.db`` in the official Market-1501 archive) are ignored.
    """
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def require_dir(path: Path, what: str, hint: str) -> Path:
    if not path.is_dir():
        raise InputError(f"{what} not found: {path} ({hint})")
    return path


def parse_name(
    path: Path, pattern: re.Pattern[str], layout_name: str, pattern_help: str
) -> tuple[int, int]:
    """``(pid, camid)`` from a file name matched by ``pattern`` (groups ``pid``, ``cam``)."""
    m = pattern.fullmatch(path.name)
    if m is None:
        raise InputError(
            f"cannot read pid and camera from {path}: {layout_name} names look like "
            f"{pattern_help}; rename or remove the file, or choose another layout"
        )
    return int(m.group("pid")), int(m.group("cam"))


def records_from_folder(
    root: Path,
    folder: str,
    split: str,
    pattern: re.Pattern[str],
    layout_name: str,
    pattern_help: str,
) -> list[Record]:
    """Parse every image directly in ``root/folder`` with ``pattern``."""
    d = require_dir(
        root / folder, f"{layout_name} {split} folder", f"expected {folder}/ under {root}"
    )
    out = []
    for p in list_images(d):
        pid, cam = parse_name(p, pattern, layout_name, pattern_help)
        out.append(Record(split, f"{folder}/{p.name}", pid, cam))
    return out


def find_dataset_dir(root: Path, marker: str, candidates: Sequence[str], layout_name: str) -> Path:
    """``root`` if it holds ``marker``, else the first ``root/candidate`` that does."""
    for c in ("", *candidates):
        d = root / c if c else root
        if (d / marker).exists():
            return d
    tried = ", ".join(str(root / c) if c else str(root) for c in ("", *candidates))
    raise InputError(
        f"no {layout_name} dataset under {root}: looked for {marker} in {tried}; "
        "pass the dataset folder with --root"
    )
