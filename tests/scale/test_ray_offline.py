"""Ray engine parts that need no cluster: output-directory rules, shard keys, install hint."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from reidctl.errors import BackendUnavailableError, OutputExistsError
from reidctl.scale import ray_engine as re_


def test_missing_ray_gives_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(BackendUnavailableError, match=r"reidctl\[ray\]"):
        re_.connect()


def test_results_dir_rules(tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("x")
    with pytest.raises(OutputExistsError, match="not a reidctl result directory"):
        re_._prepare_results_dir(foreign, resume=False, force=True)
    with pytest.raises(OutputExistsError, match="--force"):
        re_._prepare_results_dir(foreign, resume=False, force=False)
    done = tmp_path / "done"
    done.mkdir()
    (done / "run.json").write_text("{}")
    with pytest.raises(OutputExistsError, match="nothing to resume"):
        re_._prepare_results_dir(done, resume=True, force=False)
    interrupted = tmp_path / "interrupted"
    (interrupted / re_.SHARDS_DIR).mkdir(parents=True)
    with pytest.raises(OutputExistsError, match="--resume"):
        re_._prepare_results_dir(interrupted, resume=False, force=False)
    re_._prepare_results_dir(interrupted, resume=True, force=False)
    assert (interrupted / re_.SHARDS_DIR).is_dir()
    re_._prepare_results_dir(interrupted, resume=False, force=True)
    assert not (interrupted / re_.SHARDS_DIR).exists()


def test_shard_file_is_reused_only_with_its_key(tmp_path):
    path = tmp_path / "infer-000000.npz"
    feats = np.arange(12, dtype=np.float32).reshape(3, 4)
    re_.write_npz_deterministic(path, {"feature": feats, "__key__": np.array("k1")})
    out, bad = re_._load_shard(path, "k1")
    np.testing.assert_array_equal(out["feature"], feats)
    assert bad == []
    assert re_._load_shard(path, "k2") is None
    path.write_bytes(path.read_bytes()[:50])  # truncated by a crash
    assert re_._load_shard(path, "k1") is None
    assert re_._load_shard(tmp_path / "absent.npz", "k1") is None


def test_shard_ranges_cover_rows_once():
    assert re_._shard_ranges(10, 4) == [(0, 4), (4, 8), (8, 10)]
    assert re_._shard_ranges(0, 4) == []
