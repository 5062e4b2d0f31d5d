"""Faults injected into real self-play runs under real Ray (issue 15): a role's process killed
with SIGKILL at a random point of an iteration (found by its PID through Ray's actor table,
never by process name), a judge that hangs, a learner killed twice. Each run must finish with
every iteration, and every rollout and comparison exactly once — the same records as the same
run without a fault (sync mode: the re-issued calls carry the same seeds, so the same samples
come back; a rebuilt learner continues from its checkpoint bit for bit)."""

from __future__ import annotations

import json
import os
import random
import signal
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from framework.config import load_config
from framework.jobs.selfplay import run as run_selfplay

from tests.conftest import SMALL

ITERATIONS = 8
# (the light roles as actors, as on a cluster: these runs kill them)
FAULTY = [*SMALL, f"train.iterations={ITERATIONS}", "checkpoint.every=2", "eval.every=4", "pipeline.mode=sync",
          "pipeline.light_roles=actors"]

HANGS_ONCE = '''
import time
from pathlib import Path

from games.tasks import get_task


class HangsOnce:
    """The running-sum rule judge, but its first call after `marker` is written never returns."""

    antisymmetric = True

    def __init__(self, marker):
        self.marker, self.rule = Path(marker), get_task("running_sum", turns=2).judge()

    def compare(self, conversations, a, b):
        if self.marker.exists() and not self.marker.with_suffix(".hung").exists():
            self.marker.with_suffix(".hung").write_text("hung")
            time.sleep(10**6)
        return self.rule.compare(conversations, a, b)
'''


def config(cache_dir, *extra):
    return load_config(None, [f"cache_dir={cache_dir}", *FAULTY, *extra])


def rows(run_dir: Path, folder: str) -> list[dict]:
    return pq.read_table(run_dir / folder).to_pylist()


def rollout_key(r: dict) -> tuple:
    return r["iteration"], r["conversation_id"], r["turn"], r["sample"], r["branch_of"]


def comparison_key(c: dict) -> tuple:
    return c["iteration"], c["conversation_id"], c["turn"], c["a"], c["b"], c["opponent"], c["branch_of"]


def records(run_dir: Path) -> dict:
    """What a run wrote, keyed: each rollout and comparison, each metrics line's iteration."""
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {"rollouts": [(rollout_key(r), r["response"]) for r in rows(run_dir, "rollouts")],
            "comparisons": [(comparison_key(c), round(c["probability"], 6)) for c in rows(run_dir, "comparisons")],
            "iterations": [m["iteration"] for m in metrics]}


def lost_and_duplicated(run: dict, clean: dict) -> tuple[int, int]:
    """Samples of the clean run missing from ``run``, and samples ``run`` holds more than once."""
    keys = [k for k, _ in run["rollouts"]]
    return len({k for k, _ in clean["rollouts"]} - set(keys)), len(keys) - len(set(keys))


def actor_pids(prefix: str) -> list[int]:
    """The PIDs of the live actors whose Ray name starts with ``prefix`` (e.g. ``"judge "``)."""
    import ray._private.state

    return [a.get("Pid", 0) for a in ray._private.state.actors().values()
            if a.get("State") == "ALIVE" and (a.get("Name") or "").startswith(prefix)]


class Killer(threading.Thread):
    """SIGKILLs the process of role ``prefix`` once the run has logged each of ``after``
    iterations (again after each), at a random point of the next iteration."""

    def __init__(self, run_dir: Path, prefix: str, after: list[int], seed: int = 0):
        super().__init__(daemon=True)
        self.run_dir, self.prefix, self.after = run_dir, prefix, list(after)
        self.rng, self.killed, self.stop = random.Random(seed), [], threading.Event()
        self.error: Exception | None = None

    def logged(self) -> int:
        path = self.run_dir / "metrics.jsonl"
        return len(path.read_text().splitlines()) if path.exists() else 0

    def run(self):
        try:
            self.kill_each()
        except Exception as e:  # seen by the test (a thread's exception is not)
            self.error = e

    def kill_each(self):
        for n in self.after:
            while self.logged() < n or (self.killed and self.killed[-1] in actor_pids(self.prefix)):
                if self.stop.wait(0.05):
                    return
            time.sleep(self.rng.uniform(0.0, 0.3))  # somewhere inside the next iteration (~0.4 s here)
            while not self.stop.is_set():
                pids = [p for p in actor_pids(self.prefix) if p > 0 and p not in self.killed]
                try:
                    if pids:
                        os.kill(pids[0], signal.SIGKILL)
                        self.killed.append(pids[0])
                        break
                except ProcessLookupError:  # it ended meanwhile: take the next one
                    pass
                self.stop.wait(0.05)


@pytest.fixture(scope="module")
def clean(ray_session, tiny_policy, cache_dir, tmp_path_factory):
    """The run without a fault: its records and wall time."""
    run_dir = tmp_path_factory.mktemp("clean")
    start = time.perf_counter()
    summary = run_selfplay(config(cache_dir), run_dir, progress=False)
    return {**records(run_dir), "wall_s": time.perf_counter() - start, "summary": summary}


@pytest.fixture(scope="module")
def clean_async(ray_session, tiny_policy, cache_dir, tmp_path_factory):
    """The run without a fault in async mode (generation one version ahead of the learner)."""
    run_dir = tmp_path_factory.mktemp("clean_async")
    start = time.perf_counter()
    run_selfplay(config(cache_dir, "pipeline.mode=async"), run_dir, progress=False)
    return {**records(run_dir), "wall_s": time.perf_counter() - start}


def faulty_run(cache_dir, run_dir: Path, prefix: str, after: list[int], *extra) -> tuple[dict, dict, Killer]:
    killer = Killer(run_dir, prefix, after)
    killer.start()
    start = time.perf_counter()
    try:
        summary = run_selfplay(config(cache_dir, *extra), run_dir, progress=False)
    finally:
        killer.stop.set()
        killer.join()
    assert killer.error is None, killer.error
    return summary, {**records(run_dir), "wall_s": time.perf_counter() - start}, killer


def check_survived(name: str, run: dict, clean: dict) -> None:
    lost, duplicated = lost_and_duplicated(run, clean)
    print(f"\nFAULT {name}: survived, samples lost {lost}, duplicated {duplicated}, "
          f"wall {run['wall_s']:.1f} s vs {clean['wall_s']:.1f} s (+{run['wall_s'] - clean['wall_s']:.1f} s)")
    assert run["iterations"] == list(range(1, ITERATIONS + 1))
    assert (lost, duplicated) == (0, 0)
    comparison_keys = [k for k, _ in run["comparisons"]]
    assert len(comparison_keys) == len(set(comparison_keys))
    # the same samples and verdicts as the run without a fault
    assert sorted(run["rollouts"]) == sorted(clean["rollouts"])
    assert sorted(run["comparisons"]) == sorted(clean["comparisons"])


@pytest.mark.parametrize("role", ["generator 0", "judge 0", "reference"])
def test_a_killed_stateless_role_is_restarted_and_its_calls_reissued(role, clean, cache_dir, tmp_path):
    summary, run, killer = faulty_run(cache_dir, tmp_path, f"{role} ", [2])
    assert len(killer.killed) == 1
    assert summary["faults"] == {"rebuilds": 0, "restarts": {role: 1}}
    check_survived(f"kill -9 {role}", run, clean)


def test_in_async_mode_a_killed_generator_gets_back_its_queued_calls_in_order(clean_async, cache_dir, tmp_path):
    # its queue holds the next iteration's generation and weights: re-sent after its last weights
    summary, run, killer = faulty_run(cache_dir, tmp_path, "generator 0 ", [2], "pipeline.mode=async")
    assert len(killer.killed) == 1 and summary["faults"]["restarts"] == {"generator 0": 1}
    check_survived("kill -9 generator 0 (async)", run, clean_async)


def test_a_hung_judge_misses_its_deadline_and_is_replaced(clean, cache_dir, tmp_path, plugin):
    module = plugin("hangs_once", HANGS_ONCE)
    marker = tmp_path / "hang.marker"
    def hang_after_two():  # arm the judge once two iterations are logged
        while not (tmp_path / "run" / "metrics.jsonl").exists() or \
                len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) < 2:
            time.sleep(0.05)
        marker.write_text("armed")

    threading.Thread(target=hang_after_two, daemon=True).start()
    start = time.perf_counter()
    summary = run_selfplay(config(cache_dir, "judge.kind=custom", f"judge.target={module}:HangsOnce",
                                  f"judge.kwargs.marker={marker}", "pipeline.call_timeouts.judge=5"),
                           tmp_path / "run", progress=False)
    run = {**records(tmp_path / "run"), "wall_s": time.perf_counter() - start}
    assert marker.with_suffix(".hung").exists()  # it did hang
    assert summary["faults"] == {"rebuilds": 0, "restarts": {"judge 0": 1}}
    # (the custom judge's name is its target, so compare keys and samples, not the judge column)
    check_survived("hung judge (5 s deadline)", run, clean)


def test_a_learner_killed_twice_is_rebuilt_from_its_checkpoint(clean, cache_dir, tmp_path):
    summary, run, killer = faulty_run(cache_dir, tmp_path, "learner 0 ", [1, 3], "train.max_failures=2")
    assert len(killer.killed) == 2
    assert summary["faults"]["rebuilds"] == 2
    check_survived("kill -9 learner, twice", run, clean)


def test_past_its_restart_budget_a_role_stops_the_run_resumable(clean, cache_dir, tmp_path):
    from framework.errors import AlignplayError

    with pytest.raises(AlignplayError, match=r"^judge 0 died .*pipeline.max_restarts=0 restarts used up"):
        faulty_run(cache_dir, tmp_path, "judge 0 ", [2], "pipeline.max_restarts=0")
    saved = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    logged = len((tmp_path / "metrics.jsonl").read_text().splitlines())
    assert logged >= 2 and saved[-1] == f"iter_{logged:06d}"  # the stop saved where it was
    summary = run_selfplay(config(cache_dir, "resume=true"), tmp_path, progress=False)
    assert summary["iterations"] == ITERATIONS
    check_survived("judge past its budget, then resume=true", {**records(tmp_path), "wall_s": 0.0}, clean)


SLOW_START = '''
import time


class SlowStart:
    """Takes 4 s to start (as a judge importing its model on a loaded machine), then answers at once."""

    def __init__(self):
        time.sleep(4.0)

    def ping(self) -> str:
        return "pong"
'''


def test_a_deadline_counts_from_when_the_actor_is_up(ray_session, plugin):
    """A 1 s deadline on a role whose constructor takes 4 s: its first call, sent at once, is
    answered with no restart (were the start counted, every re-created actor would miss it too)."""
    import importlib

    from actors.remote import RayCluster

    module = importlib.import_module(plugin("slow_start", SLOW_START))
    cluster = RayCluster(modules=["slow_start"], max_restarts=1, deadlines={"default": 1.0})
    try:
        handle = cluster.spawn(module.SlowStart, cpus=0, restartable=True)
        assert cluster.get(handle.call(module.SlowStart.ping)) == "pong"
        assert dict(cluster.restarts) == {}
    finally:
        cluster.release()
