"""Ray engine on a real two-node Ray cluster on this machine (loopback only).

The cluster (two raylets, one CPU and 200 MB of object store each) starts once per module;
every test compares against the single-machine functions byte for byte.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import pytest

from reidctl.errors import FormatError, OutputExistsError
from reidctl.runners.ort import OrtRunner
from reidctl.scale import ray_engine as re_
from tests.scale.helpers import export_tiny_onnx

ray = pytest.importorskip("ray", reason="ray is not installed (reidctl[ray])")
pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.shared]

OBJECT_STORE = 200 * 1024 * 1024


@pytest.fixture(scope="module")
def cluster() -> Iterator[object]:
    from ray._private import ray_constants
    from ray.cluster_utils import Cluster

    # Ray swaps 127.0.0.1 in a join address for the host's outward IP unless "cluster mode"
    # (its multi-host IP discovery) is off; off, every node and driver stays on loopback.
    mp = pytest.MonkeyPatch()
    mp.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    mp.setattr(ray_constants, "ENABLE_RAY_CLUSTER", False)
    node = {"num_cpus": 1, "object_store_memory": OBJECT_STORE, "node_ip_address": "127.0.0.1"}
    c = Cluster(initialize_head=True, head_node_args={**node, "include_dashboard": False})
    c.add_node(**node)
    # Workers unpickle this module's runner classes by value: they cannot import tests/.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(address=c.address, logging_level="WARNING")
    try:
        yield c
    finally:
        ray.shutdown()
        c.shutdown()
        mp.undo()


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory) -> Path:
    """A small conv net on 256x128 inputs: `feature` [B, 16]."""
    return export_tiny_onnx(tmp_path_factory.mktemp("model") / "tiny.onnx")


@pytest.fixture(scope="module")
def single(tmp_path_factory, market_mini, tiny_onnx) -> dict[str, Path]:
    """The single-machine preprocess and infer outputs to compare against."""
    from reidctl.preprocess import preprocess_dataset
    from reidctl.runners.infer import run_inference

    base = tmp_path_factory.mktemp("single")
    preprocess_dataset("market1501", market_mini, base / "prep", workers=1, relative_info=True)
    run_inference(tiny_onnx, base / "prep", base / "results", batch_size=8)
    return {"prep": base / "prep", "results": base / "results"}


def tree_bytes(root: Path, skip: tuple[str, ...] = ()) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name not in skip
    }


def assert_same_results(a: Path, b: Path) -> None:
    assert tree_bytes(a, skip=("run.json",)) == tree_bytes(b, skip=("run.json",))
    assert not (b / re_.SHARDS_DIR).exists()


def test_preprocess_ray_equals_single_machine(cluster, market_mini, single, tmp_path):
    summary = re_.preprocess_ray(
        "market1501", market_mini, tmp_path / "prep", shard_size=10, relative_info=True
    )
    assert summary.written == 64 and summary.counts == {"query": 32, "gallery": 32}
    assert tree_bytes(tmp_path / "prep") == tree_bytes(single["prep"])
    assert not (tmp_path / "prep" / re_.SHARDS_DIR).exists()
    # An interrupted run (no meta.json, three tensors missing) resumes with only those three.
    (tmp_path / "prep" / "meta.json").unlink()
    for p in sorted((tmp_path / "prep").glob("gallery_*.bin"))[:3]:
        p.unlink()
    again = re_.preprocess_ray(
        "market1501", market_mini, tmp_path / "prep", shard_size=10, relative_info=True, resume=True
    )
    assert (again.written, again.skipped) == (3, 61)
    assert tree_bytes(tmp_path / "prep") == tree_bytes(single["prep"])


def test_infer_ray_equals_single_machine_on_two_nodes(cluster, single, tiny_onnx, tmp_path):
    run = re_.infer_ray(
        tiny_onnx, single["prep"], tmp_path / "res", batch_size=8, workers=2, shard_size=8
    )
    assert_same_results(single["results"], tmp_path / "res")
    eng = run["engine"]
    assert (eng["workers"], eng["nodes"], eng["shards"], eng["retried_shards"]) == (2, 2, 8, 0)
    assert run["num_images"] == 64 and run["options"] == {"threads": 1}


class StallOnceRunner(OrtRunner):
    """ort that, in the first worker to claim ``barrier/victim``, stalls on its first batch
    after writing its pid there, so the test can kill that worker mid-shard."""

    name = "ort-stall-once"
    accepted_options = ("threads", "barrier")

    def infer_impl(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        victim = Path(self.options["barrier"]) / "victim"
        try:
            fd = os.open(victim, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return super().infer_impl(feeds)
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        time.sleep(120)  # killed long before this returns
        raise RuntimeError("the test did not kill the stalled worker")


def test_killed_worker_shard_is_retried_with_identical_results(
    cluster, single, tiny_onnx, tmp_path
):
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    killed: list[int] = []

    def killer() -> None:
        victim = barrier / "victim"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if victim.is_file() and victim.read_text():
                pid = int(victim.read_text())
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                return
            time.sleep(0.05)

    t = threading.Thread(target=killer, daemon=True)
    t.start()
    run = re_.infer_ray(
        tiny_onnx,
        single["prep"],
        tmp_path / "res",
        backend=StallOnceRunner,
        batch_size=8,
        workers=2,
        shard_size=16,
        barrier=str(barrier),
    )
    t.join(5)
    assert killed, "no worker reached the barrier"
    assert run["engine"]["retried_shards"] == 1
    assert_same_results(single["results"], tmp_path / "res")


class FailWhileFlaggedRunner(OrtRunner):
    """ort that raises a typed error past manifest row ``fail_after`` while the file
    ``flag`` exists: the first run fails part-way, a resumed one (same options) does not."""

    name = "ort-fail-flagged"
    accepted_options = ("threads", "fail_after", "flag")

    def infer_impl(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.rows = getattr(self, "rows", 0) + len(next(iter(feeds.values())))
        if self.rows > int(self.options["fail_after"]) and Path(self.options["flag"]).exists():
            raise FormatError("tensor file gallery_x.bin is truncated (simulated)")
        return super().infer_impl(feeds)


def test_typed_error_surfaces_and_resume_skips_finished_shards(
    cluster, single, tiny_onnx, tmp_path
):
    out, flag = tmp_path / "res", tmp_path / "flag"
    flag.touch()
    opts = {"backend": FailWhileFlaggedRunner, "batch_size": 8, "shard_size": 16}
    opts.update(fail_after=32, flag=str(flag))
    with pytest.raises(FormatError, match="truncated"):
        re_.infer_ray(tiny_onnx, single["prep"], out, workers=1, **opts)
    assert sorted(p.name for p in (out / re_.SHARDS_DIR).iterdir()) == [
        "infer-000000.npz",
        "infer-000001.npz",
    ]
    with pytest.raises(OutputExistsError, match="--resume"):
        re_.infer_ray(tiny_onnx, single["prep"], out, workers=1, **opts)
    flag.unlink()
    run = re_.infer_ray(tiny_onnx, single["prep"], out, workers=2, resume=True, **opts)
    assert (run["engine"]["resumed_shards"], run["engine"]["shards"]) == (2, 4)
    assert_same_results(single["results"], out)
