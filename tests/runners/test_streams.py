"""Several batches at once: ``Runner.concurrency``, :func:`run_calls` and ort's ``streams``."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest

from reidctl.cli import main
from reidctl.commands.infer import default_streams
from reidctl.errors import InputError
from reidctl.platform import usable_cores
from reidctl.runners import get_runner
from reidctl.runners.base import Runner
from reidctl.runners.infer import run_calls, run_inference
from reidctl.specs import TensorSpec


class Doubler(Runner):
    """``y = 2 x`` after ``delay_s``; counts how many calls run at once."""

    name = "doubler"

    def __init__(self, concurrency: int, delay_s: float = 0.0, fail_at: int | None = None):
        super().__init__("doubler.onnx")
        self._concurrency, self.delay_s, self.fail_at = concurrency, delay_s, fail_at
        self.lock = threading.Lock()
        self.running = self.peak = self.calls = 0
        self.threads: set[int] = set()

    @property
    def concurrency(self) -> int:
        return self._concurrency

    def activate_impl(self) -> None:
        pass

    def input_specs_impl(self) -> tuple[TensorSpec, ...]:
        return (TensorSpec("x", ("batch", 2), "float32"),)

    def infer_impl(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        with self.lock:
            self.running += 1
            self.calls += 1
            call = self.calls
            self.peak = max(self.peak, self.running)
            self.threads.add(threading.get_ident())
        try:
            time.sleep(self.delay_s)
            if call == self.fail_at:
                raise RuntimeError(f"call {call} failed")
            return {"y": feeds["x"] * 2}
        finally:
            with self.lock:
                self.running -= 1


def _calls(n: int) -> list[tuple[int, dict[str, np.ndarray]]]:
    return [(i, {"x": np.full((3, 2), i, np.float32)}) for i in range(n)]


def test_concurrent_calls_come_back_in_order_and_overlap() -> None:
    with Doubler(2, delay_s=0.2) as runner:
        got = list(run_calls(runner, _calls(6)))
    assert [k for k, _ in got] == list(range(6))
    for k, out in got:
        assert np.array_equal(out["y"], np.full((3, 2), 2 * k, np.float32))
    assert runner.peak == 2 and len(runner.threads) == 2


def test_one_at_a_time_runs_in_the_calling_thread() -> None:
    with Doubler(1) as runner:
        got = list(run_calls(runner, _calls(4)))
    assert [k for k, _ in got] == [0, 1, 2, 3]
    assert runner.peak == 1 and runner.threads == {threading.get_ident()}


def test_a_producer_reusing_its_buffer_is_copied() -> None:
    buf = np.empty((3, 2), np.float32)

    def reused():
        for i in range(8):
            buf[...] = i  # the next batch overwrites the one handed out before
            yield i, {"x": buf}

    with Doubler(3, delay_s=0.05) as runner:
        got = list(run_calls(runner, reused()))
    assert [float(out["y"][0, 0]) for _, out in got] == [2.0 * i for i in range(8)]


def test_a_failing_call_raises_and_leaves_no_threads() -> None:
    with Doubler(2, delay_s=0.05, fail_at=3) as runner, pytest.raises(RuntimeError, match="call 3"):
        list(run_calls(runner, _calls(10)))
    assert runner.calls < 10  # later calls were cancelled, not all run
    time.sleep(0.1)
    assert not [t for t in threading.enumerate() if t.name.startswith("reidctl-infer")]


def test_ort_streams_split_the_threads(tiny_onnx: Path) -> None:
    pytest.importorskip("onnxruntime")
    cases = [({"threads": 4, "streams": 2}, 2, 2), ({"threads": 1, "streams": 2}, 1, 2)]
    cases.append(({"threads": 3}, 3, 1))
    for options, intra, streams in cases:
        with get_runner("ort")(str(tiny_onnx), **options) as runner:
            assert runner.concurrency == streams, options
            so = runner.session.get_session_options()
            assert so.intra_op_num_threads == intra, options


@pytest.mark.parametrize("bad", [0, -1, True, "2", 1.5])
def test_bad_streams_are_refused(tiny_onnx: Path, bad) -> None:
    pytest.importorskip("onnxruntime")
    with pytest.raises(InputError, match="--streams must be a positive integer"):
        get_runner("ort")(str(tiny_onnx), streams=bad).activate()


def test_streams_give_the_same_result_directory(tiny_onnx: Path, prep, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    prep_dir, tensors = prep
    one = run_inference(tiny_onnx, prep_dir, tmp_path / "one", "ort", 3)
    two = run_inference(tiny_onnx, prep_dir, tmp_path / "two", "ort", 3, streams=2)
    assert one["options"] == {} and two["options"] == {"streams": 2}
    assert two["num_images"] == len(tensors) == 10
    for name in ("feature.npy", "local.npy"):
        a = (tmp_path / "one" / "features" / name).read_bytes()
        assert a == (tmp_path / "two" / "features" / name).read_bytes(), name
    # and they are the model's outputs for the tensors, in manifest order
    with get_runner("ort")(str(tiny_onnx)) as runner:
        want = runner.infer({"image": tensors})["feature"]
    assert np.array_equal(np.load(tmp_path / "two" / "features" / "feature.npy"), want)


def test_infer_defaults_to_two_streams_on_ort_only(tiny_onnx: Path) -> None:
    pytest.importorskip("onnxruntime")
    cores = usable_cores()
    assert default_streams(tiny_onnx, None, None) == (2 if cores >= 2 else None)
    assert default_streams(tiny_onnx, "ort", 2) == 2
    assert default_streams(tiny_onnx, "ort", 1) is None  # one thread: nothing to share
    assert default_streams(tiny_onnx, "torch", 4) is None  # torch takes no streams
    assert default_streams(tiny_onnx, "no-such-backend", 4) is None  # its error comes later
    assert default_streams(Path("model.xyz"), None, 4) is None


def test_cli_streams(tiny_onnx: Path, prep, tmp_path: Path, capsys) -> None:
    pytest.importorskip("onnxruntime")
    prep_dir, _ = prep
    base = ["infer", str(tiny_onnx), str(prep_dir)]
    assert main([*base, "-o", str(tmp_path / "a"), "--streams", "3", "--bs", "2"]) == 0
    run = json.loads((tmp_path / "a" / "run.json").read_text())
    assert run["options"] == {"streams": 3} and run["num_images"] == 10
    assert main([*base, "-o", str(tmp_path / "b"), "--threads", "1"]) == 0
    assert json.loads((tmp_path / "b" / "run.json").read_text())["options"] == {"threads": 1}
    for name in ("feature.npy", "local.npy"):
        a = (tmp_path / "a" / "features" / name).read_bytes()
        assert a == (tmp_path / "b" / "features" / name).read_bytes(), name
    capsys.readouterr()
    assert main([*base, "-o", str(tmp_path / "c"), "--streams", "0"]) == 2
    assert "must be a positive integer" in capsys.readouterr().err
    args = [*base, "-o", str(tmp_path / "d"), "--streams", "2", "--backend", "torch"]
    assert main([*args, "--model", "osnet_x0_25"]) == 2
    assert "streams do not apply to back end 'torch'" in capsys.readouterr().err
    assert not (tmp_path / "c").exists() and not (tmp_path / "d").exists()
