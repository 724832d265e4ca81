"""Split / pad / trim planning and the registry (pure, no back end needed)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from collections.abc import Mapping

import numpy as np
import pytest

from reidctl.errors import BackendUnavailableError, InputError, UnknownNameError
from reidctl.runners import get_runner, list_runners, runner_for_file
from reidctl.runners.acl import limits_from_dynamic_batch
from reidctl.runners.base import Runner
from reidctl.runners.batching import BatchLimits, parse_batch_sizes, plan_batches, run_size
from reidctl.runners.trt import limits_from_profile, spec_dims
from reidctl.specs import TensorSpec


def steps(n, bs, limits=None):
    return [(s.start, s.count, s.run) for s in plan_batches(n, bs, limits)]


def test_plan_unbounded_runs_last_batch_at_its_own_size():
    assert steps(70, 32) == [(0, 32, 32), (32, 32, 32), (64, 6, 6)]
    assert steps(0, 32) == []


def test_plan_splits_batches_beyond_the_profile_max_and_pads_below_min():
    # TensorRT profile [4, 16]: bs 32 is split to 16, the 5-row tail runs at 5, 2 rows pad to 4
    assert steps(37, 32, BatchLimits(4, 16)) == [(0, 16, 16), (16, 16, 16), (32, 5, 5)]
    assert steps(18, 16, BatchLimits(4, 16)) == [(0, 16, 16), (16, 2, 4)]


def test_plan_with_gears_uses_the_largest_fitting_gear_and_pads_only_the_tail():
    gears = BatchLimits(choices=(8, 1, 4, 16, 32))
    assert gears.choices == (1, 4, 8, 16, 32)
    assert steps(45, 20, gears) == [(0, 16, 16), (16, 16, 16), (32, 13, 16)]
    assert steps(3, 32, gears) == [(0, 3, 4)]
    # a static engine (one gear) pads the last batch
    assert steps(10, 32, BatchLimits(choices=(4,))) == [(0, 4, 4), (4, 4, 4), (8, 2, 4)]
    # bs below the smallest gear: every call padded up to it
    assert steps(5, 2, BatchLimits(choices=(4, 8))) == [(0, 2, 4), (2, 2, 4), (4, 1, 4)]


def test_run_size_and_invalid_limits():
    assert run_size(5, BatchLimits(choices=(1, 4, 8))) == 8
    assert run_size(1, BatchLimits(min_batch=2, max_batch=8)) == 2
    with pytest.raises(InputError, match="exceed"):
        run_size(9, BatchLimits(max_batch=8))
    with pytest.raises(InputError, match="min <= max"):
        BatchLimits(min_batch=8, max_batch=4)
    with pytest.raises(InputError, match="positive"):
        plan_batches(4, 0)


def test_parse_batch_sizes():
    assert parse_batch_sizes("32,1, 8,8") == [1, 8, 32]
    for bad in ("", "1,x", "0,4"):
        with pytest.raises(InputError, match="--bs"):
            parse_batch_sizes(bad)


def test_trt_profile_limits():
    prof = [[1, 3, 256, 128], [32, 3, 256, 128], [32, 3, 256, 128]]
    lim = limits_from_profile([-1, 3, 256, 128], prof)
    assert (lim.min_batch, lim.max_batch, lim.choices) == (1, 32, None)
    assert limits_from_profile([8, 3, 256, 128], None).choices == (8,)
    assert spec_dims([-1, 3, 256, 128]) == ("batch", 3, 256, 128)


def test_acl_dynamic_batch_gears():
    info = {"batchCount": 3, "batch": [8, 1, 4, 0, 0]}  # pyACL pads the list
    assert limits_from_dynamic_batch(info, 0).choices == (1, 4, 8)
    assert limits_from_dynamic_batch({"batchCount": 0, "batch": []}, 16).choices == (16,)
    with pytest.raises(InputError, match="dynamic batch gears"):
        limits_from_dynamic_batch(None, 0)


class GearRunner(Runner):
    """A pure-numpy runner accepting only batches 2 and 4; records the batches it ran."""

    name = "gears"

    def activate_impl(self) -> None:
        self.calls: list[int] = []

    def input_specs_impl(self):
        return (TensorSpec("x", ("batch", 3)),)

    def batch_limits(self) -> BatchLimits:
        return BatchLimits(choices=(2, 4))

    def infer_impl(self, feeds: Mapping[str, np.ndarray]):
        self.calls.append(len(feeds["x"]))
        return {"y": feeds["x"] * 2.0}


def test_infer_rows_splits_pads_and_trims():
    x = np.arange(21, dtype=np.float32).reshape(7, 3)
    with GearRunner("none") as r:
        out = r.infer_rows({"x": x})
        assert r.calls == [4, 4]  # 4 rows, then 3 rows padded to 4
        assert len(r.latencies_s) == 2
    np.testing.assert_array_equal(out["y"], x * 2.0)


def test_registry_names_suffixes_and_unknown_name():
    assert {"ort", "ort-cuda", "openvino", "trt", "acl", "ais_bench", "torch"} <= set(
        list_runners()
    )
    for suffix, name in [
        (".onnx", "ort"),
        (".engine", "trt"),
        (".plan", "trt"),
        (".om", "acl"),
        (".xml", "openvino"),
        (".pth", "torch"),
    ]:
        assert runner_for_file(f"m{suffix}").name == name
    with pytest.raises(UnknownNameError, match="valid back ends: acl, ais_bench, openvino, ort"):
        get_runner("tensorflow")
    with pytest.raises(InputError, match=r"\.tflite"):
        runner_for_file("model.tflite")


def test_importing_runners_loads_no_backend_package():
    code = (
        "import sys, reidctl.runners as r; r.list_runners();"
        "import reidctl.runners.infer;"
        "mods = ('onnxruntime', 'openvino', 'tensorrt', 'acl', 'torch');"
        "print([m for m in mods if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("name", ["trt", "acl", "ais_bench"])
def test_absent_vendor_backends_say_why_and_how_to_install(name, tmp_path):
    cls = get_runner(name)
    module = {"trt": "tensorrt", "acl": "acl", "ais_bench": "ais_bench"}[name]
    if importlib.util.find_spec(module) is not None:
        pytest.skip(f"{module} is installed here: its absence cannot be tested")
    ok, why = cls.availability()
    assert not ok and why
    model = tmp_path / f"m{(cls.suffixes or ('.om',))[0]}"
    model.write_bytes(b"\0")
    with pytest.raises(BackendUnavailableError, match="install") as e, cls(str(model)):
        pass
    assert cls.install_hint in str(e.value)


def test_runner_refuses_options_it_does_not_declare():
    with pytest.raises(
        InputError,
        match=r"precision do not apply to back end 'ort' \(its options: threads, streams\)",
    ):
        get_runner("ort")("m.onnx", precision="f16")
    # unset options (None, False) are not given
    assert get_runner("ort")("m.onnx", threads=None, precision=None).options == {}
    assert get_runner("acl")("m.om", device=1).options == {"device": 1}
    with pytest.raises(InputError, match="its options: device"):
        get_runner("acl")("m.om", engine="ais_bench")


def test_ais_bench_is_its_own_back_end():
    cls = get_runner("ais_bench")
    assert cls.__name__ == "AisBenchRunner" and cls.accepted_options == ("device",)
    assert runner_for_file("m.om").name == "acl"


def test_options_for_picks_declared_options_and_some_must_accept():
    from reidctl.runners.options import check_some_accepts, options_for

    ort, torch_cls, ov = get_runner("ort"), get_runner("torch"), get_runner("openvino")
    opts = {"threads": 2, "precision": None}
    assert options_for(ort, opts) == {"threads": 2}
    assert options_for(torch_cls, opts) == {}
    check_some_accepts([torch_cls, ort], opts)
    with pytest.raises(InputError, match="threads apply to none of the back ends 'torch'"):
        check_some_accepts([torch_cls], opts)
    with pytest.raises(InputError, match="precision"):
        check_some_accepts([ort], {"precision": "f16"})
    check_some_accepts([ov], {"precision": "f16"})
