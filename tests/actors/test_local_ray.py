"""The Ray a run starts for itself (issue 15): it listens on the loopback interface only, a driver
killed with SIGKILL leaves none of its processes behind, and it is the run's own even while
another Ray runs on the machine."""

from __future__ import annotations

import ipaddress
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

from tests.conftest import SMALL

ROOT = Path(__file__).resolve().parents[2]


def loopback(ip: str) -> bool:
    address = ipaddress.ip_address(ip)
    return address.is_loopback or bool(getattr(address, "ipv4_mapped", None) and address.ipv4_mapped.is_loopback)


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_runs_own_ray_is_loopback_only_and_dies_with_its_driver(tiny_policy, cache_dir, tmp_path):
    run_dir, config = tmp_path / "run", tmp_path / "selfplay.yaml"
    config.write_text("job: selfplay\n")  # the defaults: tiny_policy's warm start is cached
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    driver = subprocess.Popen(
        [sys.executable, "-m", "framework.cli", "run", str(config), "--run-dir", str(run_dir),
         f"cache_dir={cache_dir}", *SMALL, "train.iterations=200", "pipeline.num_cpus=2"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        metrics = run_dir / "metrics.jsonl"
        wait_for(lambda: metrics.exists() and metrics.read_text().count("\n") >= 1 or driver.poll() is not None,
                 240, "the run's first iteration")
        assert driver.poll() is None, driver.stderr.read().decode()
        tree = psutil.Process(driver.pid).children(recursive=True)
        names = " ".join(p.name() for p in tree)
        assert "raylet" in names and "gcs_server" in names, names
        listening = {(c.laddr.ip, p.name()) for p in tree for c in p.net_connections("inet")
                     if c.status == psutil.CONN_LISTEN}
        assert listening and all(loopback(ip) for ip, _ in listening), sorted(listening)
        driver.send_signal(signal.SIGKILL)
        driver.wait()
        gone, alive = psutil.wait_procs(tree, timeout=20)
        assert not alive, [(p.pid, p.name()) for p in alive]
    finally:
        if driver.poll() is None:
            driver.kill()


def test_a_run_starts_its_own_ray_beside_another_on_the_machine():
    """With another Ray running here (another run's, or a test's cluster), a run without an
    address starts its own instead of joining it (when that one stops, this run would die)."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    # the other Ray lives in a process of its own: Cluster.shutdown resets the calling process's
    # Ray state, which would break the session's Ray for the tests after this one
    host = ("import sys; from ray.cluster_utils import Cluster; "
            "c = Cluster(initialize_head=True, head_node_args={'num_cpus': 1}); "
            "print(c.address, flush=True); sys.stdin.read(); c.shutdown()")
    other = subprocess.Popen([sys.executable, "-c", host], cwd=ROOT, env=env, stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        address = other.stdout.readline().strip()
        assert address, "the other Ray did not start"
        probe = ("from actors.remote import RayCluster; import ray; c = RayCluster(num_cpus=1); "
                 "print(ray.get_runtime_context().gcs_address); c.shutdown()")
        out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True,
                             timeout=120)
        assert out.returncode == 0, out.stderr
        own = out.stdout.strip().splitlines()[-1]
        assert own and own != address, (own, address)
    finally:
        other.stdin.close()
        other.wait(timeout=60)
