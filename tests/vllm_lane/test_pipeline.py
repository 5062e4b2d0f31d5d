"""A short MPO self-play run with pipeline.backend=vllm through the real driver, under Ray."""

import json

import pyarrow.parquet as pq
import pytest

from framework.config import load_config
from framework.jobs.selfplay import run as run_selfplay

SMALL = ["task.turns=2", "warm_start.steps=150", "train.conversations=6", "algo.k=3",
         "eval.conversations=4", "eval.final_conversations=6", "eval.samples=2"]


@pytest.mark.parametrize("weight_sync", ["object_store", "broadcast"])
def test_sync_mpo_run_with_vllm_generators(ray_session, tiny_policy, cache_dir, tmp_path, weight_sync):
    """Either way the weights travel (a broadcast lands in buffers beside the engine, which then
    reloads them in place), the engine samples with each new version."""
    cfg = load_config(None, [f"cache_dir={cache_dir}", *SMALL, "train.iterations=3", "eval.every=3",
                             "checkpoint.every=3", "pipeline.mode=sync", "pipeline.backend=vllm",
                             f"pipeline.weight_sync={weight_sync}"])
    summary = run_selfplay(cfg, tmp_path, progress=False)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [1, 2, 3]
    assert [r["policy_version"] for r in rows] == [1, 2, 3]
    # Sync mode samples every batch with the learner's current weights, so the learner recomputes
    # the engine's log-probs: after iterations 1 and 2 the engine really holds the new versions.
    assert max(abs(r["behaviour_gap"]) for r in rows) < 1e-4, [r["behaviour_gap"] for r in rows]
    assert pq.read_table(tmp_path / "rollouts").num_rows == 3 * 6 * 2 * 3  # iterations × conversations × turns × K
    assert 0.0 <= summary["final"]["win_rate_vs_init"] <= 1.0
