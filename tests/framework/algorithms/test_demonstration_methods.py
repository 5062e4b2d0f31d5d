"""SFT, SPIN and IRFT on the pipeline: batches, SPIN ≡ IRFT(T = 1), rounds on slices, resume."""

import json
import math

import pyarrow.parquet as pq
import pytest
import torch

from framework.algorithms.registry import get_algorithm
from framework.jobs.selfplay import run as run_selfplay
from framework.records import Rollout

DEMOS = ["demos.count=8", "pipeline.mode=sync", "eval.every=1"]


def _r(cid, sample, logprobs, ids):
    return Rollout(cid, 0, sample, 0, "[]", [5], list(ids), list(logprobs), "x", 0, 0)


def test_contrast_pairs_the_demonstration_with_the_policys_answer():
    rs = [_r("demo-0", -1, [-1.0, -0.5], [7, 8]), _r("demo-0", 0, [-2.0], [9]),
          _r("demo-1", 0, [-0.1], [4]), _r("demo-1", -1, [-3.0], [3])]
    spin = get_algorithm("spin")
    batch = spin.build_batch(rs, [], pad_id=0)
    real, gen = batch.per_example(batch.logp_old)
    assert real.tolist() == [-1.5, -3.0] and gen.tolist() == pytest.approx([-2.0, -0.1])
    # at the reference every contrast is 0: −log σ(0) = log 2, and 0 for the linear link
    assert spin.loss(batch=batch, logp=batch.logp_old, eta=2.0).tolist() == pytest.approx([math.log(2)] * 2)
    assert spin.loss(batch=batch, logp=batch.logp_old, eta=2.0, link="linear").tolist() == [0.0, 0.0]
    # raising the demonstrations' log-probs lowers the loss
    up = batch.logp_old + torch.tensor([1.0, 0.0, 1.0, 0.0]) * (batch.side == 0)
    assert (spin.loss(batch=batch, logp=up, eta=2.0) < math.log(2)).all()
    sft = get_algorithm("sft").build_batch(rs, [], pad_id=0)
    assert len(sft) == 2 and sft.per_example(sft.logp_old)[0].tolist() == [-1.5, -3.0]


def test_spin_is_irft_with_one_round(small_config, tiny_policy, tmp_path):
    runs = {}
    for name in ("spin", "irft"):
        cfg = small_config(*DEMOS, "train.iterations=1", "pipeline.ray=false", f"algo.name={name}")
        run_selfplay(cfg, tmp_path / name, progress=False)
        runs[name] = [json.loads(x) for x in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
    for key in ("loss", "rho_mean", "examples", "win_rate_vs_init", "correct"):
        assert runs["spin"][0][key] == runs["irft"][0][key], key
    assert runs["spin"][0]["examples"] == 16  # 8 conversations × 2 turns, one pair each


def test_irft_rounds_take_fresh_slices_under_ray(ray_session, small_config, tiny_policy, tmp_path):
    cfg = small_config(*DEMOS, "train.iterations=2", "algo.name=irft")
    run_selfplay(cfg, tmp_path, progress=False)
    table = pq.read_table(tmp_path / "rollouts").to_pylist()
    ids = {it: {r["conversation_id"] for r in table if r["iteration"] == it} for it in (0, 1)}
    assert len(ids[0]) == len(ids[1]) == 8 and not ids[0] & ids[1]  # 16 demonstrations, two halves
    for r in table:  # the reference of round t is the model at its start: the sampling version
        assert r["policy_version"] == r["iteration"]
    demos = [r for r in table if r["sample"] == -1]
    assert len(demos) == 16 and all(len(r["response_logprobs"]) == len(r["response_ids"]) for r in demos)


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("n", [1, 2])
def test_each_irft_round_starts_from_the_latest_policy(small_config, tiny_policy, tmp_path, mode, n):
    """Round r draws its answers from, and measures ρ against, policy version r·n (n iterations
    per round), in async mode too: a round start is a barrier, only a round's later parts overlap."""
    cfg = small_config("demos.count=8", "eval.every=4", "pipeline.ray=false", f"pipeline.mode={mode}",
                       "pipeline.max_staleness=1", "train.iterations=4", "algo.name=irft", f"algo.rounds={4 // n}",
                       f"algo.round_iterations={n}", "algo.lr=0.003")
    run_selfplay(cfg, tmp_path, progress=False)
    table = pq.read_table(tmp_path / "rollouts").to_pylist()
    for r in table:  # the demonstrations' scores (the contrast's reference) and π's own answers
        assert r["policy_version"] == r["iteration"] // n * n, (r["iteration"], r["sample"])
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["dropped_stale"] for r in rows] == [0] * 4
    for i, r in enumerate(rows):  # ρ before the first step: 0 at a round start, not after a step
        assert (abs(r["behaviour_gap"]) < 1e-4) == (i % n == 0), (i, r["behaviour_gap"])
        assert r["staleness_mean"] == i % n


def test_sft_on_demonstrations_raises_their_likelihood(small_config, tiny_policy, tmp_path):
    cfg = small_config(*DEMOS, "train.iterations=3", "pipeline.ray=false", "algo.name=sft", "algo.lr=0.003")
    run_selfplay(cfg, tmp_path, progress=False)
    losses = [json.loads(x)["loss"] for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert losses[2] < losses[0]  # the same demonstrations every iteration: their NLL falls


@pytest.mark.parametrize("algo", ["irft", "rft"])
def test_resume_continues_with_the_same_metrics(small_config, tiny_policy, tmp_path, algo):
    """IRFT after two of four rounds; RFT with its reward model restored from the checkpoint."""
    common = [*DEMOS, "train.iterations=4", "checkpoint.every=2", "pipeline.ray=false", f"algo.name={algo}",
              "algo.rounds=4"]
    run_selfplay(small_config(*common), tmp_path / "straight", progress=False)
    run_selfplay(small_config(*common, "train.iterations=2"), tmp_path / "split", progress=False)
    run_selfplay(small_config(*common, "resume=true"), tmp_path / "split", progress=False)
    a, b = ([json.loads(x) for x in (tmp_path / d / "metrics.jsonl").read_text().splitlines()]
            for d in ("straight", "split"))
    keys = ("loss", "rho_mean", "examples", "win_rate_vs_init", "correct")
    if algo == "rft":
        keys += ("reward_loss", "reward_mean")
        assert list((tmp_path / "split" / "checkpoints").glob("*/reward_model/model.safetensors"))
    for key in keys:
        assert [r[key] for r in a[2:]] == pytest.approx([r[key] for r in b[2:]], rel=1e-5, abs=1e-6), key


def test_rft_learns_a_reward_that_prefers_the_demonstrations(small_config, tiny_policy, tmp_path):
    """Four rounds on the same demonstrations: the Bradley–Terry loss of the reward model falls
    below log 2 (chance) as it learns to rank demonstrations above the policy's own answers."""
    cfg = small_config(*DEMOS, "train.iterations=4", "pipeline.ray=false", "algo.name=rft", "algo.epochs=3",
                       "algo.lr=0.003")
    run_selfplay(cfg, tmp_path, progress=False)
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["reward_loss"] < min(rows[0]["reward_loss"], math.log(2))
    table = pq.read_table(tmp_path / "rollouts" / "iter_000001.parquet").to_pylist()
    assert sum(r["sample"] == -1 for r in table) == 16 and sum(r["sample"] >= 0 for r in table) == 16 * 3  # K = 3
    # the reward model is a judge.kind=reward_model checkpoint: loaded as one, it prefers the
    # demonstrations to the policy's own answers of the last iteration, as its falling loss says
    from actors.judge import PreferenceJudge

    judge = PreferenceJudge(kind="reward_model", settings={"path": str(tmp_path / "checkpoints" / "final" /
                                                                         "reward_model")})
    last = pq.read_table(tmp_path / "rollouts" / "iter_000004.parquet").to_pylist()
    demo = {r["conversation_id"]: r for r in last if r["sample"] == -1}
    own = [r for r in last if r["sample"] >= 0 and r["conversation_id"] in demo]
    p = judge.compare([json.loads(r["messages"]) for r in own], [demo[r["conversation_id"]]["response"] for r in own],
                      [r["response"] for r in own])
    assert sum(p) / len(p) > 0.5


def test_rft_with_rounds_takes_irfts_slices(small_config, tiny_policy, tmp_path):
    cfg = small_config(*DEMOS, "train.iterations=2", "pipeline.ray=false", "algo.name=rft", "algo.rounds=2",
                       "algo.k=2")
    run_selfplay(cfg, tmp_path, progress=False)
    table = pq.read_table(tmp_path / "rollouts").to_pylist()
    ids = {it: {r["conversation_id"] for r in table if r["iteration"] == it} for it in (0, 1)}
    assert len(ids[0]) == len(ids[1]) == 8 and not ids[0] & ids[1]  # 16 demonstrations, two halves
    assert sum(r["sample"] >= 0 for r in table) == 16 * 2  # K = 2 own answers at each


def test_resume_mid_round_continues_with_the_same_metrics(small_config, tiny_policy, tmp_path):
    """IRFT with rounds of two iterations, interrupted after iteration 3 (half-way through round 2):
    the checkpoint keeps the round's starting policy for the generators, so iteration 4 — answers
    drawn by it, the contrast against it — is the same as in an uninterrupted run."""
    common = [*DEMOS, "train.iterations=4", "checkpoint.every=1", "eval.every=1", "pipeline.ray=false",
              "pipeline.mode=sync", "algo.name=irft", "algo.rounds=2", "algo.round_iterations=2"]
    run_selfplay(small_config(*common), tmp_path / "straight", progress=False)
    run_selfplay(small_config(*common, "train.iterations=3"), tmp_path / "split", progress=False)
    state = json.loads((tmp_path / "split" / "checkpoints" / "final" / "state.json").read_text())
    assert state["generator_version"] == 2 and state["policy_version"] == 3  # mid-round
    run_selfplay(small_config(*common, "resume=true"), tmp_path / "split", progress=False)
    a, b = ([json.loads(x) for x in (tmp_path / d / "metrics.jsonl").read_text().splitlines()]
            for d in ("straight", "split"))
    assert [r["iteration"] for r in b] == [1, 2, 3, 4]
    for key in ("loss", "rho_mean", "examples", "win_rate_vs_init", "correct"):
        assert [r[key] for r in a[3:]] == pytest.approx([r[key] for r in b[3:]], rel=1e-5, abs=1e-6), key
    # within a round the generators kept the round's start: iteration 4's answers came from version 2
    import pyarrow.parquet as pq

    rows = pq.read_table(tmp_path / "split" / "rollouts" / "iter_000004.parquet").to_pylist()
    assert {r["policy_version"] for r in rows} == {2}
