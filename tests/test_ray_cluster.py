"""``auditlm run --ray HOST:PORT`` against a real Ray cluster: a head node started by ``ray start --head`` (token
authentication on, as Ray enables by default for ``ray start`` from 2.59), joined by address. The CLI runs as a
subprocess, as a user runs it: the same metrics as a single-process run; without the cluster's token, one line
naming the fix, exit 2, and no store created. Skipped where Ray is not installed (the test extra installs it)."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from dashboard_store import data_dir

from auditlm.targets.serve import free_port

pytest.importorskip("ray")
SUITE = "bias.crows_pairs"
pytestmark = pytest.mark.skipif(not (data_dir() / "crows_pairs").is_dir(), reason="needs CrowS-Pairs data (AUDITLM_DATA)")
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def head() -> Iterator[tuple[str, dict[str, str]]]:
    """A one-node Ray cluster (2 CPUs) on 127.0.0.1 with a token made for the test; yields its address and the
    environment a client needs to join it. Stopped (its whole process group) afterwards."""
    port = free_port()
    auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16)}
    env = os.environ | auth | {"OMP_NUM_THREADS": "1", "RAY_USAGE_STATS_ENABLED": "0"}
    proc = subprocess.Popen([str(BIN / "ray"), "start", "--head", "--node-ip-address", "127.0.0.1", "--port",
                             str(port), "--num-cpus", "2", "--include-dashboard", "false", "--disable-usage-stats",
                             "--block"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    address = f"127.0.0.1:{port}"
    try:
        t0 = time.monotonic()
        while True:  # the GCS port answers once the head is up
            if proc.poll() is not None:
                pytest.fail(f"ray start --head exited with {proc.returncode}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            if time.monotonic() - t0 > 120:
                pytest.fail("the Ray head did not come up in 120 s")
            time.sleep(0.5)
        time.sleep(2)  # the raylet registers just after the GCS listens
        yield address, auth
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # `ray start --block` stops its processes one by one: slow
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        # a head stopped this way leaves Ray's "current cluster" pointer behind; `ray.init()` would try to join it
        current = Path(os.environ.get("RAY_TMPDIR", "/tmp")) / "ray" / "ray_current_cluster"
        with contextlib.suppress(OSError):
            if current.read_text().strip().endswith(f":{port}"):
                current.unlink()


def _cli(argv: list[str], env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    return subprocess.run([str(BIN / "auditlm"), *argv], env=clean | env | {"OMP_NUM_THREADS": "1"},
                          capture_output=True, text=True, timeout=timeout)


def _common(model: Path, store: Path) -> list[str]:
    return ["run", "--model", str(model), "--suite", SUITE, "--limit", "24", "--dtype", "float32", "--device", "cpu",
            "--data-dir", str(data_dir()), "--store", str(store), "--json"]


def test_run_on_a_cluster_by_address_matches_single_process(head, tiny_model_dir: Path, tmp_path: Path):
    address, auth = head
    single = _cli(_common(tiny_model_dir, tmp_path / "a.sqlite"), {})
    assert single.returncode == 0, single.stderr
    on_ray = _cli([*_common(tiny_model_dir, tmp_path / "b.sqlite"), "--ray", address, "--ray-actors", "2"], auth)
    assert on_ray.returncode == 0, on_ray.stderr[-3000:]
    assert "Ray: 2 CPU actor(s)" in on_ray.stderr
    a, b = json.loads(single.stdout), json.loads(on_ray.stdout)
    assert len(a["metrics"]) > 3 and a["metrics"] == b["metrics"]  # every value, interval, n and test


def test_cluster_without_its_token_is_one_line_exit_2(head, tiny_model_dir: Path, tmp_path: Path):
    address, _ = head
    store = tmp_path / "s.sqlite"
    res = _cli([*_common(tiny_model_dir, store), "--ray", address], {}, timeout=300)
    assert res.returncode == 2, res.stderr[-3000:]
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "token authentication" in lines[0] and "RAY_AUTH_MODE=token" in lines[0], res.stderr
    assert not store.exists()  # refused before a store or run was created
