"""A real two-node Ray cluster on loopback, started the documented way (docs/scale.md).

The head is ``ray start --head --block`` with token authentication; a second node joins with
``ray start --address --block``. Both run in their own process group, with their own ports,
temporary directory and HOME (so no ``~/.ray`` of the machine is read or written), and are
stopped by their process-group ids at the end. ``reidctl infer --address`` then runs against
the cluster: refused without the token (exit 2, the address and the variables named), and,
with ``RAY_AUTH_MODE=token`` and the token, on both nodes with the single-process features.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import ROOT

pytest.importorskip("ray", reason="ray is not installed (reidctl[ray])")
pytestmark = [pytest.mark.ray, pytest.mark.slow]

RAY = Path(sys.executable).with_name("ray")
AUTH_VARS = ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")


def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _worker_range(count: int, avoid: set[int]) -> int:
    """The first of ``count`` consecutive free ports, below the kernel's ephemeral range
    (32768 up, where :func:`_free_ports` and every other socket gets its ports) and clear
    of ``avoid``: a worker port range overlapping another component's port makes
    ``ray start`` refuse to start."""
    for _ in range(200):
        base = 20000 + secrets.randbelow(12000 - count)
        ports = range(base, base + count)
        if not avoid.intersection(ports) and all(_bindable(q) for q in ports):
            avoid.update(ports)
            return base
    pytest.fail(f"no {count} consecutive free ports between 20000 and 32000")


def _env(home: Path, token: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in AUTH_VARS}
    env.update(
        HOME=str(home), PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", RAY_USAGE_STATS_ENABLED="0"
    )
    if token is not None:
        env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token)
    return env


def _node_ports(ports: list[int]) -> list[str]:
    names = [
        "--node-manager-port",
        "--object-manager-port",
        "--runtime-env-agent-port",
        "--dashboard-agent-grpc-port",
        "--dashboard-agent-listen-port",
        "--metrics-export-port",
    ]
    return [a for name, p in zip(names, ports, strict=True) for a in (name, str(p))]


def _start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with open(log, "w") as f:
        return subprocess.Popen(
            [str(RAY), "start", "--block", *args],
            env=env,
            stdout=f,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopped by that id below
        )


def _wait_started(p: subprocess.Popen, log: Path, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if "Ray runtime started" in log.read_text(errors="replace"):
            return
        if p.poll() is not None:
            pytest.fail(f"ray start exited with {p.returncode}:\n{log.read_text()[-3000:]}")
        time.sleep(0.5)
    pytest.fail(f"ray start did not come up in {timeout} s:\n{log.read_text()[-3000:]}")


def _stop(p: subprocess.Popen) -> None:
    """Stop a ``ray start --block`` and everything in its process group."""
    for sig, wait in ((signal.SIGTERM, 60), (signal.SIGKILL, 10)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                os.killpg(p.pid, 0)
            except ProcessLookupError:
                p.wait(timeout=5)
                return
            p.poll()
            time.sleep(0.5)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[dict]:
    root = tmp_path_factory.mktemp("raycluster")
    # Ray's socket paths must stay under 108 bytes: a short temp dir of its own.
    ray_tmp = Path(tempfile.mkdtemp(prefix="rc", dir="/tmp"))
    home = root / "home"
    home.mkdir()
    token = secrets.token_hex(32)
    p = _free_ports(22)
    gcs, client, dash = p[0], p[1], p[2]
    taken = set(p)
    p[3], p[10] = _worker_range(41, taken), _worker_range(41, taken)
    head_args = [
        "--head",
        "--port", str(gcs),
        "--ray-client-server-port", str(client),
        "--dashboard-port", str(dash),
        "--include-dashboard", "false",
        "--node-ip-address", "127.0.0.1",
        "--temp-dir", str(ray_tmp),
        "--num-cpus", "1",
        "--object-store-memory", str(100 * 2**20),
        "--min-worker-port", str(p[3]), "--max-worker-port", str(p[3] + 40),
        *_node_ports(p[4:10]),
    ]  # fmt: skip
    procs: list[subprocess.Popen] = []
    try:
        head = _start(head_args, _env(home, token), root / "head.log")
        procs.append(head)
        _wait_started(head, root / "head.log")
        address = f"127.0.0.1:{gcs}"
        join_args = [
            "--address", address,
            "--node-ip-address", "127.0.0.1",
            "--num-cpus", "1",
            "--object-store-memory", str(100 * 2**20),
            "--min-worker-port", str(p[10]), "--max-worker-port", str(p[10] + 40),
            *_node_ports(p[11:17]),
        ]  # fmt: skip
        yield {
            "root": root,
            "home": home,
            "token": token,
            "address": address,
            "join_args": join_args,
            "procs": procs,
        }
    finally:
        for proc in reversed(procs):
            _stop(proc)
        shutil.rmtree(ray_tmp, ignore_errors=True)


def _reidctl(
    args: list, env: dict[str, str], timeout: float = 300, cwd: Path | None = None
) -> tuple[int, str]:
    r = subprocess.run(
        [sys.executable, "-m", "reidctl.cli", *map(str, args)],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return r.returncode, r.stdout + r.stderr


@pytest.fixture(scope="module")
def chain(cluster) -> dict[str, Path]:
    """A tiny model, a small preprocessed set and its single-process result directory."""
    root = cluster["root"]
    env = _env(cluster["home"], None)
    code = (
        "import sys; from pathlib import Path; "
        "from reidctl.preprocess.synthetic import make_synthetic_market; "
        "from tests.scale.helpers import export_tiny_onnx; "
        "r = Path(sys.argv[1]); "
        "print(make_synthetic_market(r / 'data', 3, num_train_ids=0, num_distractors=1, "
        "num_junk=0).root); export_tiny_onnx(r / 'tiny.onnx')"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(root)], env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    data = Path(out.stdout.strip().splitlines()[-1])
    prep = root / "prep"
    rc, text = _reidctl(
        ["preprocess", "market1501", "--root", data, "-o", prep, "--workers", "1"], env
    )
    assert rc == 0, text
    local = root / "local"
    rc, text = _reidctl(["infer", root / "tiny.onnx", prep, "-o", local, "--bs", "2"], env)
    assert rc == 0, text
    return {"model": root / "tiny.onnx", "prep": prep, "local": local}


def test_joining_without_the_token_is_refused(cluster):
    """The recipe that no longer works: `ray start --address` without RAY_AUTH_MODE=token."""
    r = subprocess.run(
        [str(RAY), "start", *cluster["join_args"]],
        env=_env(cluster["home"], None),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert r.returncode != 0
    assert "InvalidAuthToken" in r.stdout + r.stderr


def test_reidctl_without_the_token_names_address_and_fix(cluster, chain, tmp_path):
    out = tmp_path / "results"
    t0 = time.monotonic()
    rc, text = _reidctl(
        ["infer", chain["model"], chain["prep"], "-o", out, "--engine", "ray",
         "--address", cluster["address"]],
        _env(cluster["home"], None),
    )  # fmt: skip
    assert rc == 2, text
    assert cluster["address"] in text and "InvalidAuthToken" in text
    assert "RAY_AUTH_MODE=token" in text and "ray get-auth-token" in text
    assert "Traceback" not in text
    assert time.monotonic() - t0 < 60  # not Ray's endless retry loop
    assert not out.exists()


def test_two_node_cluster_with_token_runs_reidctl(cluster, chain, tmp_path):
    root = cluster["root"]
    worker = _start(cluster["join_args"], _env(cluster["home"], cluster["token"]), root / "w.log")
    cluster["procs"].append(worker)
    _wait_started(worker, root / "w.log")
    out = tmp_path / "results"
    # Relative paths on the command line: the workers get them resolved.
    rc, text = _reidctl(
        ["infer", "tiny.onnx", "prep", "-o", out, "--bs", "2", "--engine", "ray",
         "--address", cluster["address"], "--workers", "2"],
        _env(cluster["home"], cluster["token"]),
        cwd=root,
    )  # fmt: skip
    assert rc == 0, text
    assert "ray: 2 worker(s) on 2 node(s)" in text
    for name in ("feature.npy",):
        a = np.load(out / "features" / name)
        b = np.load(chain["local"] / "features" / name)
        assert a.shape == b.shape and np.array_equal(a, b)
    assert not (out / ".shards").exists()
