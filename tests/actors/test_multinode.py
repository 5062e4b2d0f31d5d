"""Roles on a multi-node Ray cluster (``ray.cluster_utils.Cluster`` on this machine): each
scenario of ``cluster_scenarios.py`` runs in a process of its own and prints where each role ran."""

import os
import subprocess
import sys
from pathlib import Path

SCENARIOS = Path(__file__).with_name("cluster_scenarios.py")


def run_scenario(name: str, tmp_path: Path, cache_dir: Path, capsys) -> list[str]:
    env = dict(os.environ, ALIGNPLAY_CACHE=str(cache_dir))
    env.pop("RAY_ADDRESS", None)
    res = subprocess.run([sys.executable, str(SCENARIOS), name, str(tmp_path / name)], capture_output=True, text=True,
                         env=env, timeout=900)
    lines = [line for line in res.stdout.splitlines() if line.startswith(("node ", "error ", "job ", "removed ",
                                                                            "faults "))]
    with capsys.disabled():  # where each role ran, in the test log
        print("".join(f"\n  [{name}] {line}" for line in lines))
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-5000:]
    return lines


def test_roles_land_where_their_resources_say_and_a_group_spans_two_nodes(tiny_policy, cache_dir, tmp_path, capsys):
    lines = run_scenario("roles", tmp_path, cache_dir, capsys)
    assert {"node learner 0 node_a", "node learner 1 node_b"} <= set(lines) or \
        {"node learner 0 node_b", "node learner 1 node_a"} <= set(lines)
    assert "node judge node_c" in lines


def test_a_self_play_run_across_three_nodes(tiny_policy, cache_dir, tmp_path, capsys):
    run_scenario("selfplay", tmp_path, cache_dir, capsys)


def test_two_dp_workers_on_two_nodes(dp_model, cache_dir, tmp_path, capsys):
    run_scenario("dp", tmp_path, cache_dir, capsys)


def test_more_gpus_than_the_cluster_has_fails_before_any_role_starts(tiny_policy, cache_dir, tmp_path, capsys):
    (line,) = run_scenario("too_many_gpus", tmp_path, cache_dir, capsys)
    assert "pipeline.resources.learner" in line


def test_ray_job_submit_runs_the_quickstart_with_the_repository_as_working_dir(tiny_policy, cache_dir, tmp_path,
                                                                                capsys):
    (line,) = run_scenario("job", tmp_path, cache_dir, capsys)
    assert "succeeded" in line


def test_a_lost_node_s_roles_are_rescheduled_on_the_survivors_and_the_run_completes(tiny_policy, cache_dir,
                                                                                    tmp_path, capsys):
    lines = run_scenario("node_loss", tmp_path, cache_dir, capsys)
    assert any(line.startswith("removed node_") for line in lines), lines
