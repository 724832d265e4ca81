"""CUHK03 (Li et al., "DeepReID", CVPR 2014) under the new protocol (Zhong et al., CVPR 2017)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from reidctl.errors import BackendUnavailableError, InputError
from reidctl.preprocess.layouts.base import Layout, Record, register_layout

RAW_MAT_NAMES = ("cuhk03_release/cuhk-03.mat", "cuhk-03.mat", "cuhk03.mat")
_NAME = re.compile(r"(?P<pair>\d)_(?P<pid>\d{3})_(?P<cam>[12])_(?P<img>\d{2})\.png")
_SPLIT_KEYS = {"query": "query_idx", "gallery": "gallery_idx", "train": "train_idx"}


class CUHK03(Layout):
    """CUHK03, new protocol (767 training / 700 test identities), detected or labeled boxes.

    Dataset statistics:
        - identities: 1,467 (767 train, 700 test).
        - images (detected): 7,365 train; 1,400 query; 5,332 gallery.
        - images (labeled): 7,368 train; 1,400 query; 5,328 gallery.
        - cameras: 10, as 5 pairs; the camid stored is the view within its pair (1 or 2,
          first camera 1), which is all the protocol needs since an identity appears in
          one pair only.

    ``--root`` holds ``cuhk03_new_protocol_config_{detected,labeled}.mat`` (the split:
    ``filelist``, ``labels``, ``train_idx``, ``query_idx``, ``gallery_idx``, 1-based) and
    either the extracted images ``images_{detected,labeled}/`` (names
    ``P_III_V_NN.png``: pair, person in pair, view, image) or the original MATLAB v7.3 file
    ``cuhk03_release/cuhk-03.mat`` (also found as ``cuhk-03.mat`` or ``cuhk03.mat``). In the
    second case the images are extracted once into ``images_{kind}/`` inside ``--root`` (the
    folder must be writable); reading the v7.3 file needs ``h5py`` (``pip install
    'reidctl[cuhk03]'``). The pid is the split's ``labels`` value.
    """

    pattern_help = "P_III_V_NN.png (camera pair, person, view 1|2, image; e.g. 1_001_1_01.png)"

    def __init__(self, kind: str = "detected") -> None:
        if kind not in ("detected", "labeled"):
            raise InputError(f"unknown cuhk03 kind {kind!r}; valid: detected, labeled")
        self.kind = kind
        self.name = "cuhk03" if kind == "detected" else "cuhk03_labeled"
        self._split: dict[str, Any] | None = None

    @property
    def image_dir(self) -> str:
        return f"images_{self.kind}"

    @property
    def config_name(self) -> str:
        return f"cuhk03_new_protocol_config_{self.kind}.mat"

    def resolve_root(self, root: Path) -> Path:
        for d in (root, root / "cuhk03"):
            if (d / self.config_name).is_file():
                return d
        raise InputError(
            f"no cuhk03 split under {root}: expected {self.config_name} in it or in cuhk03/ "
            "(the new-protocol files of Zhong et al.); pass that folder with --root"
        )

    def _load_split(self, root: Path) -> dict[str, Any]:
        if self._split is None:
            self._split = load_split_config(root / self.config_name)
        return self._split

    def prepare(self, root: Path) -> None:
        names = [str(n) for n in self._load_split(root)["filelist"]]
        img_dir = root / self.image_dir
        if all((img_dir / n).is_file() for n in names):
            return
        raw = next((root / n for n in RAW_MAT_NAMES if (root / n).is_file()), None)
        if raw is None:
            raise InputError(
                f"cuhk03 images missing in {img_dir} and no raw file to extract them from: "
                f"expected one of {', '.join(RAW_MAT_NAMES)} under {root}"
            )
        extract_cuhk03_images(raw, self.kind, img_dir)

    def list_split(self, root: Path, split: str) -> list[Record]:
        cfg = self._load_split(root)
        out = []
        for i in cfg[_SPLIT_KEYS[split]]:
            name = cfg["filelist"][i]
            m = _NAME.fullmatch(name)
            if m is None:
                raise InputError(
                    f"{root / self.config_name}: cannot read the view from {name!r}; cuhk03 "
                    f"names look like {self.pattern_help}"
                )
            out.append(
                Record(
                    split, f"{self.image_dir}/{name}", int(cfg["labels"][i]), int(m.group("cam"))
                )
            )
        return out


register_layout("cuhk03", lambda: CUHK03("detected"))
register_layout("cuhk03_labeled", lambda: CUHK03("labeled"))


def load_split_config(path: Path) -> dict[str, Any]:
    """Read a ``cuhk03_new_protocol_config_*.mat`` (MATLAB v5, read with SciPy).

    Returns ``filelist`` (list of image names), ``labels`` (int array, one per file) and
    ``train_idx`` / ``query_idx`` / ``gallery_idx`` as 0-based int arrays.
    """
    from scipy.io import loadmat

    try:
        mat = loadmat(str(path))
    except (OSError, ValueError, NotImplementedError) as e:
        raise InputError(f"cannot read {path} as a MATLAB v5 file: {e}") from e
    missing = [k for k in ("filelist", "labels", *_SPLIT_KEYS.values()) if k not in mat]
    if missing:
        raise InputError(f"{path} lacks {', '.join(missing)}; is it a new-protocol split file?")
    filelist = [_mat_string(v) for v in np.asarray(mat["filelist"]).flatten()]
    labels = np.asarray(mat["labels"]).astype(np.int64).flatten()
    if len(labels) != len(filelist):
        raise InputError(f"{path}: {len(labels)} labels for {len(filelist)} files")
    out: dict[str, Any] = {"filelist": filelist, "labels": labels}
    for key in _SPLIT_KEYS.values():
        idx = np.asarray(mat[key]).astype(np.int64).flatten() - 1
        if idx.size and (idx.min() < 0 or idx.max() >= len(filelist)):
            raise InputError(f"{path}: {key} holds indices outside 1..{len(filelist)}")
        out[key] = idx
    return out


def _mat_string(v: Any) -> str:
    # a MATLAB cell of strings loads as an object array of 1-element string arrays
    while isinstance(v, np.ndarray):
        v = v.flatten()[0] if v.size else ""
    return str(v)


def iter_raw_images(raw_mat: Path, kind: str) -> Iterator[tuple[str, np.ndarray]]:
    """Yield ``(name, HxWx3 uint8 RGB image)`` from the original v7.3 ``cuhk-03.mat``.

    The file holds ``detected`` and ``labeled``: 5 cells (camera pairs), each a
    persons x 10 cell of images (5 per view; empty cells where a view has fewer). HDF5
    stores MATLAB arrays transposed, hence the ``.T``. Names follow the convention of the
    split files, ``{pair}_{person:03d}_{view}_{image:02d}.png``, all 1-based.
    """
    try:
        import h5py
    except ImportError as e:
        raise BackendUnavailableError(
            f"reading {raw_mat} (MATLAB v7.3) needs h5py: pip install 'reidctl[cuhk03]'"
        ) from e
    try:
        mat = h5py.File(raw_mat, "r")
    except OSError as e:
        raise InputError(f"cannot read {raw_mat} as a MATLAB v7.3 (HDF5) file: {e}") from e
    with mat:
        if kind not in mat:
            raise InputError(f"{raw_mat} lacks the {kind!r} images; is it cuhk-03.mat?")
        for pair, pair_ref in enumerate(mat[kind][0]):
            cells = mat[pair_ref][:].T
            for person in range(cells.shape[0]):
                for img_no, img_ref in enumerate(cells[person, :]):
                    img = mat[img_ref][:].T
                    if img.size == 0 or img.ndim < 3:
                        continue
                    view = 1 if img_no < 5 else 2
                    name = f"{pair + 1}_{person + 1:03d}_{view}_{img_no + 1:02d}.png"
                    yield name, np.ascontiguousarray(img.astype(np.uint8))


def extract_cuhk03_images(raw_mat: Path, kind: str, dest: Path) -> int:
    """Write the ``kind`` images of ``raw_mat`` as PNG files in ``dest``; returns how many.

    Files already present are kept, so an interrupted extraction resumes. Each file is
    written to a temporary name and renamed.
    """
    import cv2

    from reidctl.io import write_bytes_atomic

    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"cannot create {dest} to extract cuhk03 images: {e}") from e
    n = 0
    for name, rgb in iter_raw_images(raw_mat, kind):
        target = dest / name
        if not target.is_file():
            ok, buf = cv2.imencode(".png", rgb[:, :, ::-1])
            if not ok:
                raise InputError(f"cannot encode {name} from {raw_mat} as PNG")
            write_bytes_atomic(target, buf.tobytes())
        n += 1
    return n
