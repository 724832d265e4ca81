"""Dataset layouts: names -> (split, source, pid, camid), sorted; junk, distractors, errors."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from reidctl.errors import InputError, UnknownNameError
from reidctl.preprocess.layouts import get_layout, list_layouts, parse_splits, scan_layout
from tests.preprocess.conftest import write_images, write_jpeg


def test_registry_lists_every_layout_and_rejects_unknown():
    assert {"market1501", "dukemtmc", "msmt17", "cuhk03", "folder"} <= set(list_layouts())
    with pytest.raises(UnknownNameError, match=r"valid layouts: .*market1501"):
        (get_layout("market"))


def test_every_layout_documents_statistics():
    for name in list_layouts():
        assert "statistics" in type(get_layout(name)).__doc__.lower(), name


def test_parse_splits():
    assert parse_splits("query, gallery,train") == ("query", "gallery", "train")
    with pytest.raises(UnknownNameError, match="valid splits"):
        parse_splits("query,test")
    with pytest.raises(InputError, match="twice"):
        parse_splits("query,query")


def test_market_junk_dropped_distractors_kept_in_gallery(tmp_path: Path):
    root = tmp_path / "Market-1501-v15.09.15"
    write_images(root / "query", ["0002_c2s1_000100_00.jpg", "0001_c1s1_000001_00.jpg"])
    write_images(
        root / "bounding_box_test",
        ["0001_c3s1_000200_01.jpg", "0000_c1s1_000300_01.jpg", "-1_c2s1_000400_02.jpg"],
    )
    (root / "bounding_box_test" / "Thumbs.db").write_bytes(b"not an image")
    scan = scan_layout("market1501", tmp_path)  # the parent folder is accepted too
    assert scan.root == root.resolve()
    assert [(r.split, r.source, r.pid, r.camid) for r in scan.records] == [
        ("query", "query/0001_c1s1_000001_00.jpg", 1, 1),
        ("query", "query/0002_c2s1_000100_00.jpg", 2, 2),
        ("gallery", "bounding_box_test/0000_c1s1_000300_01.jpg", 0, 1),
        ("gallery", "bounding_box_test/0001_c3s1_000200_01.jpg", 1, 3),
    ]
    assert scan.dropped["gallery"]["junk"] == 1
    assert scan.counts() == {"query": 2, "gallery": 2}


def test_market_query_distractor_never_a_query(tmp_path: Path):
    write_images(tmp_path / "query", ["0000_c1s1_000001_00.jpg", "0003_c1s1_000002_00.jpg"])
    (tmp_path / "bounding_box_test").mkdir()
    scan = scan_layout("market1501", tmp_path)
    assert [r.pid for r in scan.records] == [3]
    assert scan.dropped["query"]["distractors"] == 1


def test_market_bad_name_names_file_and_pattern(tmp_path: Path):
    write_images(tmp_path / "query", ["0001_c1s1_000001_00.jpg", "person7.jpg"])
    (tmp_path / "bounding_box_test").mkdir()
    with pytest.raises(InputError, match=r"person7\.jpg.*PPPP_cCsS_FFFFFF_NN\.jpg"):
        scan_layout("market1501", tmp_path)


def test_market_missing_split_folder_and_missing_root(tmp_path: Path):
    write_images(tmp_path / "query", ["0001_c1s1_000001_00.jpg"])
    with pytest.raises(InputError, match="bounding_box_test"):
        scan_layout("market1501", tmp_path)
    with pytest.raises(InputError, match="not a directory"):
        scan_layout("market1501", tmp_path / "nope")
    with pytest.raises(InputError, match="no market1501 dataset"):
        scan_layout("market1501", tmp_path / "query")


def test_market_empty_split_and_train_on_request(tmp_path: Path):
    (tmp_path / "query").mkdir()
    write_images(tmp_path / "bounding_box_test", ["0001_c1s1_000001_00.jpg"])
    write_images(tmp_path / "bounding_box_train", ["0009_c4s2_000001_03.jpg"])
    scan = scan_layout("market1501", tmp_path, "query,gallery,train")
    assert scan.counts() == {"query": 0, "gallery": 1, "train": 1}
    assert scan.records[-1].split == "train" and scan.records[-1].camid == 4


def test_dukemtmc_names(tmp_path: Path):
    root = tmp_path / "DukeMTMC-reID"
    write_images(root / "query", ["0005_c2_f0046985.jpg"])
    write_images(root / "bounding_box_test", ["0005_c5_f0051341.jpg", "0001_c8_f0000001.jpg"])
    scan = scan_layout("dukemtmc", tmp_path)
    assert [(r.pid, r.camid) for r in scan.records] == [(5, 2), (1, 8), (5, 5)]
    write_images(root / "query", ["0005_c2s1_000001_00.jpg"])  # a Market name
    with pytest.raises(InputError, match=r"0005_c2s1_000001_00\.jpg.*PPPP_cC_fFFFFFFF"):
        scan_layout("dukemtmc", root)


@pytest.mark.parametrize("release", ["MSMT17_V1", "MSMT17_V2"])
def test_msmt17_lists(tmp_path: Path, release: str):
    root = tmp_path / release
    test_dir = "test" if release == "MSMT17_V1" else "mask_test_v2"
    train_dir = "train" if release == "MSMT17_V1" else "mask_train_v2"
    q = ["0000/0000_000_01_0303morning_0015_0.jpg", "0001/0001_003_07_0303noon_0100_1.jpg"]
    g = ["0000/0000_010_12_0303afternoon_0400_2.jpg"]
    t = ["0002/0002_000_15_0113morning_0001_0.jpg"]
    for rel in q + g:
        write_jpeg(root / test_dir / rel, 1)
    write_jpeg(root / train_dir / t[0], 2)
    (root / "list_query.txt").write_text(f"{q[1]} 1\n{q[0]} 0\n")
    (root / "list_gallery.txt").write_text(f"{g[0]} 0\n\n")
    (root / "list_train.txt").write_text(f"{t[0]} 0\n")
    scan = scan_layout("msmt17", tmp_path, "query,gallery,train")
    assert [(r.split, r.source, r.pid, r.camid) for r in scan.records] == [
        ("query", f"{test_dir}/{q[0]}", 1, 1),  # list pid 0 stored as 1: 0 means distractor
        ("query", f"{test_dir}/{q[1]}", 2, 7),
        ("gallery", f"{test_dir}/{g[0]}", 1, 12),
        ("train", f"{train_dir}/{t[0]}", 1, 15),
    ]
    (root / "list_gallery.txt").write_text("0000/badname.jpg 0\n")
    with pytest.raises(InputError, match=r"list_gallery\.txt:1.*badname"):
        scan_layout("msmt17", root)


def test_folder_layout(tmp_path: Path):
    write_images(tmp_path / "query", ["12_c3_a.jpg", "7_c1.png"])
    write_images(tmp_path / "gallery", ["12_c1_b.JPG", "-1_c2_x.jpg", "0_c2_y.jpg"])
    scan = scan_layout("folder", tmp_path)
    assert [(r.source, r.pid, r.camid) for r in scan.records] == [
        ("query/12_c3_a.jpg", 12, 3),
        ("query/7_c1.png", 7, 1),
        ("gallery/0_c2_y.jpg", 0, 2),
        ("gallery/12_c1_b.JPG", 12, 1),
    ]
    write_images(tmp_path / "gallery", ["c1_12.jpg"])
    with pytest.raises(InputError, match=r"c1_12\.jpg.*PID_cCAM_"):
        scan_layout("folder", tmp_path)


# --------------------------------------------------------------------------- CUHK03


def _cuhk03_images(pairs: int = 2, persons: int = 3) -> dict[tuple[int, int, int], np.ndarray]:
    """(pair, person, image slot) -> RGB image; slot 4 of view 1 left empty as in the data."""
    rng = np.random.default_rng(0)
    out = {}
    for pair in range(pairs):
        for person in range(persons):
            for slot in range(10):
                if slot in (3, 4, 8, 9):
                    continue  # empty cells: some views have fewer than 5 images
                h, w = int(rng.integers(40, 60)), int(rng.integers(20, 30))
                out[pair, person, slot] = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    return out


def _write_raw_mat(path: Path, images: dict, kind: str = "detected") -> None:
    """A MATLAB v7.3-style cuhk-03.mat: HDF5 object references, arrays stored transposed."""
    h5py = pytest.importorskip("h5py")
    pairs = 1 + max(k[0] for k in images)
    persons = 1 + max(k[1] for k in images)
    with h5py.File(path, "w") as f:
        refs = f.create_group("#refs#")
        pair_refs = []
        for pair in range(pairs):
            cells = np.empty((10, persons), dtype=h5py.ref_dtype)  # MATLAB persons x 10
            for person in range(persons):
                for slot in range(10):
                    img = images.get((pair, person, slot))
                    data = np.zeros(2, np.uint64) if img is None else img.T
                    cells[slot, person] = refs.create_dataset(
                        f"i{pair}_{person}_{slot}", data=data
                    ).ref
            pair_refs.append(refs.create_dataset(f"p{pair}", data=cells).ref)
        f.create_dataset(kind, data=np.array([pair_refs], dtype=h5py.ref_dtype))


def _write_split_mat(path: Path, names: list[str], labels: list[int], q, g, t) -> None:
    from scipy.io import savemat

    filelist = np.empty((len(names), 1), dtype=object)
    for i, n in enumerate(names):
        filelist[i, 0] = n
    col = lambda v: np.asarray(v, np.float64).reshape(-1, 1)  # noqa: E731
    savemat(
        path,
        {
            "filelist": filelist,
            "labels": col(labels),
            "query_idx": col(q),
            "gallery_idx": col(g),
            "train_idx": col(t),
        },
    )


def test_cuhk03_extracts_v73_mat_and_reads_new_protocol_split(tmp_path: Path):
    images = _cuhk03_images()
    root = tmp_path / "cuhk03"
    (root / "cuhk03_release").mkdir(parents=True)
    _write_raw_mat(root / "cuhk03_release" / "cuhk-03.mat", images)
    names = sorted(f"{p + 1}_{i + 1:03d}_{1 if s < 5 else 2}_{s + 1:02d}.png" for p, i, s in images)
    labels = [int(n[0]) * 100 + int(n[2:5]) for n in names]  # any global pid
    by_name = {n: k for k, n in enumerate(names)}
    q = [by_name["1_001_1_01.png"] + 1, by_name["1_001_2_06.png"] + 1]  # 1-based, as MATLAB
    g = [by_name["1_001_2_07.png"] + 1, by_name["1_002_1_02.png"] + 1]
    t = [by_name["2_003_2_08.png"] + 1]
    _write_split_mat(root / "cuhk03_new_protocol_config_detected.mat", names, labels, q, g, t)

    scan = scan_layout("cuhk03", tmp_path, "query,gallery,train")
    assert scan.root == root.resolve()
    assert [(r.split, r.source, r.pid, r.camid) for r in scan.records] == [
        ("query", "images_detected/1_001_1_01.png", 101, 1),
        ("query", "images_detected/1_001_2_06.png", 101, 2),
        ("gallery", "images_detected/1_001_2_07.png", 101, 2),
        ("gallery", "images_detected/1_002_1_02.png", 102, 1),
        ("train", "images_detected/2_003_2_08.png", 203, 2),
    ]
    extracted = sorted(p.name for p in (root / "images_detected").iterdir())
    assert extracted == names  # empty cells skipped, every other image written once
    import cv2

    png = cv2.imread(str(root / "images_detected" / "2_003_2_08.png"))
    np.testing.assert_array_equal(png[:, :, ::-1], images[1, 2, 7])  # lossless, RGB kept

    with pytest.raises(InputError, match=r"cuhk03_new_protocol_config_labeled\.mat"):
        scan_layout("cuhk03_labeled", tmp_path)


def test_cuhk03_uses_extracted_images_without_raw_mat(tmp_path: Path):
    names = ["1_001_1_01.png", "1_001_2_06.png", "1_002_1_01.png"]
    write_images(tmp_path / "images_labeled", names)
    _write_split_mat(
        tmp_path / "cuhk03_new_protocol_config_labeled.mat", names, [5, 5, 9], [1], [2, 3], []
    )
    scan = scan_layout("cuhk03_labeled", tmp_path)
    assert [(r.pid, r.camid) for r in scan.records] == [(5, 1), (5, 2), (9, 1)]
    (tmp_path / "images_labeled" / names[2]).unlink()
    with pytest.raises(InputError, match="no raw file"):
        scan_layout("cuhk03_labeled", tmp_path)


def test_cuhk03_split_with_bad_name(tmp_path: Path):
    _write_split_mat(
        tmp_path / "cuhk03_new_protocol_config_detected.mat", ["x.png"], [1], [1], [], []
    )
    write_images(tmp_path / "images_detected", ["x.png"])
    with pytest.raises(InputError, match=re.escape("'x.png'")):
        scan_layout("cuhk03", tmp_path)
