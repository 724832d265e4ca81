"""Bad inputs through the command line: every case is one ``reidctl`` invocation.

Each case asserts the exit code, that the message names the offending file, value or
address, that no Python traceback reaches the user (``main`` would raise instead of
returning) and that nothing is left half-written.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from reidctl.cli import main
from reidctl.io import write_json_atomic
from reidctl.specs import PreprocessSpec
from tests.conftest import ROOT
from tests.scale.helpers import make_results


def _complete(res: Path) -> Path:
    """make_results plus the model.json fields the dense evaluation reads."""
    facts = json.loads((res / "model.json").read_text())
    facts["preprocess"] = PreprocessSpec().to_dict()
    facts["inputs"] = [{"name": "image", "shape": ["batch", 3, 256, 128], "dtype": "float32"}]
    write_json_atomic(res / "model.json", facts)
    return res


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    return _complete(make_results(tmp_path_factory.mktemp("bad_b") / "results", seed=3)[0])


def _tree(root: Path) -> dict[str, bytes | None]:
    """Every path under ``root`` (hidden ones included) with its bytes (None: directory)."""
    return {
        str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None)
        for p in sorted(root.rglob("*"))
    }


def run_cli(capsys, args: list[str]) -> tuple[int, str]:
    """One invocation; returns (exit code, stderr + stdout). A traceback would raise here."""
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    text = out.err + out.out
    assert "Traceback" not in text
    return code, text


# --------------------------------------------------------------------------- eval outputs

# (case id, option arguments given the output path, what the output is)
EVAL_OUTPUTS: list[tuple[str, Callable[[Path], list[str]]]] = [
    ("json", lambda p: ["--json", p]),
    ("plot", lambda p: ["--plot", p]),
    ("visualize", lambda p: ["--visualize", "2", p]),
]


@pytest.mark.parametrize("name,opts", EVAL_OUTPUTS, ids=[c[0] for c in EVAL_OUTPUTS])
def test_eval_output_that_is_a_directory(results, tmp_path, capsys, name, opts):
    target = tmp_path / "a_dir"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    for force in ([], ["--force"]):
        code, text = run_cli(capsys, ["eval", results, *opts(target), *force])
        assert code == 2, text
        assert str(target) in text and "is a directory" in text
    assert _tree(target) == {"keep.txt": b"mine"}


@pytest.mark.parametrize("name,opts", EVAL_OUTPUTS, ids=[c[0] for c in EVAL_OUTPUTS])
def test_eval_refuses_existing_output_without_force(results, tmp_path, capsys, name, opts):
    target = tmp_path / f"old.{name}"
    target.write_bytes(b"earlier run")
    code, text = run_cli(capsys, ["eval", results, *opts(target)])
    assert code == 2, text
    assert str(target) in text and "--force" in text
    assert target.read_bytes() == b"earlier run"
    assert sorted(p.name for p in tmp_path.iterdir()) == [target.name]  # no temp file left


def test_eval_force_overwrites_json_and_plot(results, tmp_path, capsys):
    js, png = tmp_path / "m.json", tmp_path / "cmc.png"
    js.write_text("old")
    png.write_text("old")
    code, text = run_cli(capsys, ["eval", results, "--json", js, "--plot", png, "--force"])
    assert code == 0, text
    assert json.loads(js.read_text())["format"].startswith("reidctl.metrics/")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --------------------------------------------------------------------------- faiss


@pytest.fixture(scope="module")
def indexes(results, tmp_path_factory) -> dict[str, Path]:
    """flat, ivf and hnsw indexes over ``results``'s gallery."""
    pytest.importorskip("faiss", reason="faiss-cpu is not installed (reidctl[faiss])")
    from reidctl.scale import faiss_index as fi

    root = tmp_path_factory.mktemp("indexes")
    return {
        kind: fi.save_gallery_index(fi.build_gallery_index(results, kind), root / f"{kind}.index")
        for kind in ("flat", "ivf", "hnsw")
    }


# (case id, index kind, search options, text the message must hold)
SEARCH_CASES = [
    ("nprobe-0", "ivf", ["--nprobe", "0"], "--nprobe must be at least 1, got 0"),
    ("nprobe-neg", "ivf", ["--nprobe", "-1"], "--nprobe must be at least 1, got -1"),
    ("ef-search-0", "hnsw", ["--ef-search", "0"], "--ef-search must be at least 1, got 0"),
    ("ef-search-neg", "hnsw", ["--ef-search", "-3"], "--ef-search must be at least 1, got -3"),
    ("nprobe-on-hnsw", "hnsw", ["--nprobe", "4"], "--nprobe applies to ivf"),
    ("nprobe-on-flat", "flat", ["--nprobe", "4"], "--nprobe applies to ivf"),
    ("ef-search-on-ivf", "ivf", ["--ef-search", "8"], "--ef-search applies to hnsw"),
    ("k-0", "flat", ["-k", "0"], "-k must be at least 1, got 0"),
]


@pytest.mark.faiss
@pytest.mark.parametrize(
    "kind,opts,message", [c[1:] for c in SEARCH_CASES], ids=[c[0] for c in SEARCH_CASES]
)
def test_search_refuses_bad_parameters(results, indexes, tmp_path, capsys, kind, opts, message):
    pytest.importorskip("faiss", reason="faiss-cpu is not installed (reidctl[faiss])")
    out = tmp_path / "topk.npz"
    code, text = run_cli(capsys, ["search", indexes[kind], results, "-o", out, *opts])
    assert code == 2, text
    assert message in text
    assert list(tmp_path.iterdir()) == []


@pytest.mark.faiss
@pytest.mark.parametrize("command", ["index-build", "search"])
def test_faiss_output_that_is_a_directory(results, indexes, tmp_path, capsys, command):
    pytest.importorskip("faiss", reason="faiss-cpu is not installed (reidctl[faiss])")
    target = tmp_path / "out"
    target.mkdir()
    args = {
        "index-build": ["index", "build", results, "-o", target, "--force"],
        "search": ["search", indexes["flat"], results, "-o", target, "--force"],
    }[command]
    code, text = run_cli(capsys, args)
    assert code == 2, text
    assert str(target) in text and "is a directory" in text
    assert list(target.iterdir()) == []


def _with_bad_values(res: Path, rows: list[int], value: float) -> Path:
    """Put ``value`` (NaN or inf) into feature rows ``rows`` of a result directory."""
    path = res / "features" / "feature.npy"
    feats = np.load(path)
    feats[rows, 1] = value
    np.save(path, feats)
    return res


# make_results rows: 12 query (0..11), 40 gallery (12..51), 3 train
NONFINITE = [
    ("nan", float("nan")),
    ("inf", float("inf")),
    ("-inf", float("-inf")),
]


@pytest.mark.faiss
@pytest.mark.parametrize("name,value", NONFINITE, ids=[c[0] for c in NONFINITE])
def test_nonfinite_gallery_refused_by_index_build(tmp_path, capsys, name, value):
    pytest.importorskip("faiss", reason="faiss-cpu is not installed (reidctl[faiss])")
    res = _with_bad_values(_complete(make_results(tmp_path / "res", seed=3)[0]), [20], value)
    out = tmp_path / "g.index"
    code, text = run_cli(capsys, ["index", "build", res, "-o", out])
    assert code == 1, text
    assert "NaN or inf" in text and "gallery_0020" in text and "feature.npy" in text
    assert not out.exists() and not Path(f"{out}.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["res"]


@pytest.mark.faiss
@pytest.mark.parametrize("name,value", NONFINITE, ids=[c[0] for c in NONFINITE])
@pytest.mark.parametrize("command", ["search", "eval-index"])
def test_nonfinite_queries_refused(tmp_path, capsys, name, value, command):
    pytest.importorskip("faiss", reason="faiss-cpu is not installed (reidctl[faiss])")
    res = _with_bad_values(_complete(make_results(tmp_path / "res", seed=3)[0]), [3], value)
    index = tmp_path / "g.index"
    assert main(["index", "build", str(res), "-o", str(index)]) == 0  # gallery rows are fine
    capsys.readouterr()
    out = tmp_path / "out.file"
    args = {
        "search": ["search", index, res, "-o", out],
        "eval-index": ["eval", res, "--index", index, "--json", out],
    }[command]
    code, text = run_cli(capsys, args)
    assert code == 1, text
    assert "NaN or inf" in text and "query_0003" in text
    assert not out.exists()


@pytest.mark.faiss
@pytest.mark.parametrize("exact_check", [[], ["--exact-check"]], ids=["plain", "exact-check"])
def test_eval_index_of_another_result_directory(results, indexes, tmp_path, capsys, exact_check):
    pytest.importorskip("faiss", reason="faiss-cpu is not installed (reidctl[faiss])")
    other = _complete(make_results(tmp_path / "other", seed=4)[0])
    out = tmp_path / "m.json"
    args = ["eval", other, "--index", indexes["flat"], "--json", out, *exact_check]
    code, text = run_cli(capsys, args)
    assert code == 2, text
    assert str(results.resolve()) in text and str(other.resolve()) in text
    assert "reidctl index build" in text
    assert not out.exists()


@pytest.mark.faiss
def test_eval_index_after_features_changed(tmp_path, capsys):
    pytest.importorskip("faiss", reason="faiss-cpu is not installed (reidctl[faiss])")
    res = _complete(make_results(tmp_path / "res", seed=3)[0])
    index = tmp_path / "g.index"
    assert main(["index", "build", str(res), "-o", str(index)]) == 0
    feats = np.load(res / "features" / "feature.npy")
    np.save(res / "features" / "feature.npy", feats * 2)
    capsys.readouterr()
    code, text = run_cli(capsys, ["eval", res, "--index", index])
    assert code == 2, text
    assert "changed since" in text and str(index) in text


# --------------------------------------------------------------------------- ray --address


def _free_port() -> int:
    """A loopback TCP port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def chain_inputs(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny ONNX model and a small preprocessed synthetic Market-1501 set."""
    from reidctl.preprocess.synthetic import make_synthetic_market
    from tests.scale.helpers import export_tiny_onnx

    root = tmp_path_factory.mktemp("chain")
    data = make_synthetic_market(root / "data", 2, num_train_ids=0, num_distractors=1, num_junk=0)
    model = export_tiny_onnx(root / "tiny.onnx")
    assert main(["preprocess", "market1501", "--root", str(data.root), "-o", str(root / "prep"),
                 "--workers", "1"]) == 0  # fmt: skip
    return model, root / "prep"


def _needs_ray() -> None:
    pytest.importorskip("ray", reason="ray is not installed (reidctl[ray])")


# (case id, extra infer arguments given a closed port, exit code, texts the message holds)
RAY_ADDRESS_CASES = [
    ("nothing-listening", lambda p: ["--address", f"127.0.0.1:{p}"], 2,
     ["127.0.0.1:{p}", "connection refused", "ray start --head"]),
    ("no-port", lambda p: ["--address", "127.0.0.1"], 2, ["'127.0.0.1'", "HOST:PORT"]),
    ("bad-port", lambda p: ["--address", "127.0.0.1:99999"], 2, ["127.0.0.1:99999", "HOST:PORT"]),
    ("zero-timeout", lambda p: ["--address", f"127.0.0.1:{p}", "--connect-timeout", "0"], 2,
     ["--connect-timeout"]),
    ("negative-timeout", lambda p: ["--address", f"127.0.0.1:{p}", "--connect-timeout", "-1"], 2,
     ["--connect-timeout"]),
]  # fmt: skip


@pytest.mark.ray
@pytest.mark.parametrize(
    "make_args,code,texts",
    [c[1:] for c in RAY_ADDRESS_CASES],
    ids=[c[0] for c in RAY_ADDRESS_CASES],
)
def test_infer_ray_bad_address(chain_inputs, tmp_path, capsys, make_args, code, texts):
    _needs_ray()
    model, prep = chain_inputs
    port = _free_port()
    out = tmp_path / "results"
    t0 = time.monotonic()
    rc, text = run_cli(
        capsys, ["infer", model, prep, "-o", out, "--engine", "ray", *make_args(port)]
    )
    assert rc == code, text
    for t in texts:
        assert t.format(p=port) in text
    assert time.monotonic() - t0 < 20  # refused at once, not after Ray's own retries
    assert not out.exists()


@pytest.mark.ray
def test_preprocess_ray_unreachable_address_writes_nothing(tmp_path, capsys):
    _needs_ray()
    from reidctl.preprocess.synthetic import make_synthetic_market

    data = make_synthetic_market(tmp_path / "data", 2, num_train_ids=0, num_distractors=0)
    port = _free_port()
    out = tmp_path / "prep"
    args = ["preprocess", "market1501", "--root", data.root, "-o", out, "--engine", "ray"]
    rc, text = run_cli(capsys, [*args, "--address", f"127.0.0.1:{port}"])
    assert rc == 2, text
    assert f"127.0.0.1:{port}" in text and "connection refused" in text
    assert not out.exists()


@pytest.mark.parametrize("command", ["infer", "preprocess"])
def test_connect_timeout_needs_the_ray_engine(chain_inputs, tmp_path, capsys, command):
    model, prep = chain_inputs
    args = {
        "infer": ["infer", model, prep, "-o", tmp_path / "r"],
        "preprocess": ["preprocess", "market1501", "--root", tmp_path, "-o", tmp_path / "p"],
    }[command]
    rc, text = run_cli(capsys, [*args, "--connect-timeout", "5"])
    assert rc == 2, text
    assert "--connect-timeout" in text and "--engine ray" in text
    assert sorted(p.name for p in tmp_path.iterdir()) == []


class SilentListener:
    """A TCP port that accepts connections and never says a word (not a Ray GCS)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                self.conns.append(self.sock.accept()[0])

    def close(self) -> None:
        for c in self.conns:
            c.close()
        self.sock.close()


def _reidctl(args: list, home: Path) -> subprocess.Popen:
    """``python -m reidctl.cli ARGS`` in a child process with this tree first on the path."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), HOME=str(home), OMP_NUM_THREADS="1")
    for var in ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        env.pop(var, None)
    return subprocess.Popen(
        [sys.executable, "-m", "reidctl.cli", *map(str, args)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.mark.ray
@pytest.mark.slow
def test_infer_ray_silent_port_times_out(chain_inputs, tmp_path):
    _needs_ray()
    model, prep = chain_inputs
    listener = SilentListener()
    out = tmp_path / "results"
    try:
        t0 = time.monotonic()
        p = _reidctl(
            ["infer", model, prep, "-o", out, "--engine", "ray",
             "--address", f"127.0.0.1:{listener.port}", "--connect-timeout", "3"],
            tmp_path,
        )  # fmt: skip
        text, _ = p.communicate(timeout=120)
        elapsed = time.monotonic() - t0
    finally:
        listener.close()
    assert p.returncode == 2, text
    assert f"127.0.0.1:{listener.port}" in text and "did not answer within 3 s" in text
    assert "Traceback" not in text
    assert elapsed < 60
    assert not out.exists()


@pytest.mark.ray
@pytest.mark.slow
def test_local_ray_ignores_ray_address_and_a_stale_ray_start(chain_inputs, tmp_path):
    """No --address starts a local Ray even where RAY_ADDRESS names a dead cluster and a
    `ray start` long stopped left its address file behind (Ray's own ``ray.init()`` joins
    that address and retries it for minutes)."""
    _needs_ray()
    model, prep = chain_inputs
    dead = f"127.0.0.1:{_free_port()}"
    ray_tmp = Path(tempfile.mkdtemp(prefix="rl", dir="/tmp"))  # socket paths < 108 bytes
    try:
        (ray_tmp / "ray").mkdir()
        (ray_tmp / "ray" / "ray_current_cluster").write_text(dead)
        env = dict(os.environ, PYTHONPATH=str(ROOT), HOME=str(tmp_path), OMP_NUM_THREADS="1")
        env.update(RAY_TMPDIR=str(ray_tmp), RAY_ADDRESS=dead, RAY_USAGE_STATS_ENABLED="0")
        out = tmp_path / "results"
        args = ["infer", model, prep, "-o", out, "--engine", "ray", "--workers", "1"]
        t0 = time.monotonic()
        try:
            p = subprocess.run(
                [sys.executable, "-m", "reidctl.cli", *map(str, args)],
                env=env,
                capture_output=True,
                text=True,
                timeout=180,
            )
        except subprocess.TimeoutExpired:
            pytest.fail(f"infer --engine ray tried {dead} instead of starting locally")
        text = p.stdout + p.stderr
        assert p.returncode == 0, text
        assert time.monotonic() - t0 < 150
        assert "ray: 1 worker(s) on 1 node(s)" in text
        assert main(["infer", str(model), str(prep), "-o", str(tmp_path / "local")]) == 0
        feat = "features/feature.npy"
        assert (out / feat).read_bytes() == (tmp_path / "local" / feat).read_bytes()
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)


@pytest.mark.ray
@pytest.mark.slow
def test_infer_ray_sigterm_while_connecting_exits_promptly(chain_inputs, tmp_path):
    _needs_ray()
    model, prep = chain_inputs
    listener = SilentListener()
    out = tmp_path / "results"
    try:
        p = _reidctl(
            ["infer", model, prep, "-o", out, "--engine", "ray",
             "--address", f"127.0.0.1:{listener.port}", "--connect-timeout", "300"],
            tmp_path,
        )  # fmt: skip
        # wait until the command is connecting (it has opened a connection to the port)
        deadline = time.monotonic() + 60
        while not listener.conns and time.monotonic() < deadline and p.poll() is None:
            time.sleep(0.1)
        assert listener.conns, "reidctl never tried the address"
        time.sleep(1.0)
        t0 = time.monotonic()
        p.send_signal(signal.SIGTERM)
        try:
            text, _ = p.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            p.kill()
            text, _ = p.communicate()
            pytest.fail(f"reidctl ignored SIGTERM for 15 s:\n{text}")
        elapsed = time.monotonic() - t0
    finally:
        listener.close()
    assert p.returncode == 143, text
    assert elapsed < 10
    assert "Traceback" not in text
    assert not out.exists()


# --------------------------------------------------------------------------- export


class _Evil:
    """Pickles to a call of ``Path.touch`` on a marker file: it must never run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _weights(tmp_path: Path, kind: str) -> Path:
    if kind == "missing":
        return tmp_path / "no_such.pth"
    path = tmp_path / "evil.pth"
    path.write_bytes(pickle.dumps({"state_dict": _Evil(tmp_path / "pwned")}))
    return path


EXPORT_CASES = [
    ("missing-weights", ["--weights", "{w}"], "missing", "{w}"),
    ("raw-malicious-pickle", ["--weights", "{w}"], "evil", "{w}"),
    ("opset-7", ["--opset", "7"], None, "use 11..21"),
    ("opset-10", ["--opset", "10"], None, "use 11..21"),
    ("opset-22", ["--opset", "22"], None, "use 11..21"),
]


@pytest.mark.parametrize(
    "opts,weights,named", [c[1:] for c in EXPORT_CASES], ids=[c[0] for c in EXPORT_CASES]
)
def test_export_bad_input_leaves_no_new_folder(tmp_path, capsys, opts, weights, named):
    w = _weights(tmp_path, weights) if weights else None
    before = _tree(tmp_path)
    out = tmp_path / "new" / "deeper" / "model.onnx"
    args = ["export", "osnet_x0_25", "-o", out, *[o.format(w=w) for o in opts]]
    code, text = run_cli(capsys, args)
    assert code == 2, text
    assert named.format(w=w) in text
    assert _tree(tmp_path) == before  # no folder, no .onnx, no sidecar, nothing executed
