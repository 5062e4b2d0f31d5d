"""End-to-end self-play runs: under real Ray (async), resumed (in-process), with a user's judge."""

import json
import sys

import pyarrow.parquet as pq
import pytest

from framework.config import load_config
from framework.errors import AlignplayError
from framework.jobs.selfplay import light_here, run as run_selfplay, split_stale
from framework.records import Rollout

from tests.conftest import SMALL


def small_config(cache_dir, *extra):
    return load_config(None, [f"cache_dir={cache_dir}", *SMALL, *extra])


def read_metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_async_mpo_run_under_ray(ray_session, tiny_policy, cache_dir, tmp_path):
    cfg = small_config(cache_dir, "train.iterations=4", "eval.every=2", "checkpoint.every=2",
                       "pipeline.mode=async", "pipeline.max_staleness=1", "algo.kl_coef=0.05",
                       "algo.lr_schedule=linear", "pipeline.light_roles=driver")  # (evaluations: reference here)
    summary = run_selfplay(cfg, tmp_path, progress=False)
    rows = read_metrics(tmp_path)
    assert [r["iteration"] for r in rows] == [1, 2, 3, 4]
    assert [r["lr"] for r in rows] == pytest.approx([cfg.algo.lr * f for f in (1, 0.75, 0.5, 0.25)])
    # the first update's samples come from the warm start itself: no divergence from it yet
    assert rows[0]["kl_ref"] == pytest.approx(0.0, abs=1e-4) and rows[-1]["kl_ref"] != rows[0]["kl_ref"]
    for key in ("policy_version", "samples", "samples_per_s", "win_rate_vs_init", "exploitability",
                "staleness_mean", "dropped_stale", "generate_s", "judge_s", "update_s", "sync_weights_s"):
        assert key in rows[0], key
    assert [r["policy_version"] for r in rows] == [1, 2, 3, 4]
    assert rows[1]["win_rate_vs_init"] is not None and rows[0]["win_rate_vs_init"] is None
    # every sample trained on is at most max_staleness versions old, and async really ran ahead
    table = pq.read_table(tmp_path / "rollouts").to_pylist()
    ages = [r["learner_version"] - r["policy_version"] for r in table if not r["stale"]]
    assert max(ages) <= 1 and ages.count(1) > 0
    assert len(table) == 4 * 6 * 2 * 3  # iterations × conversations × turns × K
    comparisons = pq.read_table(tmp_path / "comparisons").num_rows
    assert comparisons == 4 * 6 * 2 * 3  # states × K(K−1)/2 = states × 3
    from datasets import load_dataset

    ds = load_dataset("parquet", data_files=str(tmp_path / "rollouts" / "*.parquet"), split="train")
    assert set(ds.column_names) >= {"conversation_id", "turn", "response", "policy_version", "response_logprobs"}
    # the final policy loads with from_pretrained
    from transformers import AutoModelForCausalLM

    assert AutoModelForCausalLM.from_pretrained(summary["final_policy"]).config.tie_word_embeddings is False
    assert 0.0 <= summary["final"]["win_rate_vs_init"] <= 1.0
    from framework.jobs.reports import selfplay_report

    report = selfplay_report(tmp_path).read_text()
    assert "| final |" in report and "| update |" in report
    for png in ("win_rate", "exploitability", "throughput", "staleness"):
        assert (tmp_path / f"{png}.png").stat().st_size > 1000


@pytest.mark.parametrize("algo", ["mpo", "ompo", "mpo-kl"])
def test_resume_continues_with_the_same_metrics(tiny_policy, cache_dir, tmp_path, algo):
    """Sync mode, in-process: 4 iterations straight equal 2 + resume to 4 (same seed).

    For OMPO the previous iterate's answers are part of the checkpoint: without them the resumed
    iteration 3 would fall back to MPO targets and its loss would differ. With a KL penalty the
    resumed learner's reference is still the warm start, not the checkpoint it resumed from.
    """
    kl = ["algo.kl_coef=0.05"] if algo == "mpo-kl" else []
    algo = algo.removesuffix("-kl")
    common = ["train.iterations=4", "eval.every=1", "checkpoint.every=2", "pipeline.mode=sync",
              "pipeline.ray=false", f"algo.name={algo}", "train.fixed_prompts=true", *kl]
    straight = tmp_path / "straight"
    run_selfplay(small_config(cache_dir, *common), straight, progress=False)
    split = tmp_path / "split"
    run_selfplay(small_config(cache_dir, *common, "train.iterations=2"), split, progress=False)
    run_selfplay(small_config(cache_dir, *common, "resume=true"), split, progress=False)
    a, b = read_metrics(straight), read_metrics(split)
    assert [r["iteration"] for r in b] == [1, 2, 3, 4]
    for key in ("loss", "grad_norm", "rho_mean", "win_rate_vs_init", "exploitability", "samples", *(
            ["kl_ref"] if kl else [])):
        assert [r[key] for r in a[2:]] == pytest.approx([r[key] for r in b[2:]], rel=1e-5, abs=1e-6), key
    if algo == "ompo":
        assert [r["optimistic_hit_rate"] for r in a] == [r["optimistic_hit_rate"] for r in b]
        assert a[0]["optimistic_hit_rate"] == 0 and b[2]["optimistic_hit_rate"] == 1.0  # every state recurs


@pytest.mark.parametrize("algo", ["sppo", "dpo", "ipo", "step_dpo"])
def test_every_method_runs_end_to_end(tiny_policy, cache_dir, tmp_path, algo):
    """Two in-process iterations; whole-conversation methods sample K separate paths."""
    cfg = small_config(cache_dir, "train.iterations=2", "eval.every=2", "pipeline.mode=sync",
                       "pipeline.ray=false", f"algo.name={algo}")
    run_selfplay(cfg, tmp_path, progress=False)
    rows = read_metrics(tmp_path)
    assert [r["policy_version"] for r in rows] == [1, 2]
    assert all(r["generated"] == 6 * 2 * 3 for r in rows)  # conversations × turns × K, every method
    table = pq.read_table(tmp_path / "rollouts" / "iter_000001.parquet").to_pylist()
    second_turn: dict = {}
    for r in table:
        if r["turn"] == 1:
            second_turn.setdefault(r["conversation_id"], []).append(r["messages"])
    assert all(len(v) == 3 for v in second_turn.values())  # K answers at turn 1 of every conversation
    if algo == "step_dpo":  # a tree: the K answers branch from one state
        assert all(len(set(v)) == 1 for v in second_turn.values())
    else:  # K paths: each reached turn 1 through its own first answer
        assert any(len(set(v)) > 1 for v in second_turn.values())
    pairs = algo in ("dpo", "ipo", "step_dpo")
    assert all(r["examples"] <= (6 if algo != "step_dpo" else 12) for r in rows) if pairs else \
        all(r["examples"] == 6 * 3 for r in rows)


@pytest.fixture
def judge_module(plugin):
    plugin("e2e_judges", '''
        import re

        class PrefersExclamation:
            """A user's judge: answers ending in '!' win, everything else ties."""
            antisymmetric = True
            def compare(self, conversations, a, b):
                score = lambda s: 1.0 if s.endswith("!") else 0.0
                return [0.5 + 0.5 * (score(x) - score(y)) for x, y in zip(a, b)]

        class BreaksAfter:
            calls = 0
            def __init__(self, good_calls=2):
                self.good_calls = good_calls
            def compare(self, conversations, a, b):
                BreaksAfter.calls += 1
                if BreaksAfter.calls > self.good_calls:
                    raise ConnectionError("judge endpoint unreachable")
                return [0.5] * len(a)
    ''')
    yield "e2e_judges"
    sys.modules.pop("e2e_judges", None)


def test_a_custom_judge_from_outside_the_package_drives_a_ray_run(ray_session, tiny_policy, cache_dir,
                                                                  tmp_path, judge_module):
    cfg = small_config(cache_dir, "train.iterations=2", "eval.every=2", "judge.kind=custom",
                       f"judge.target={judge_module}:PrefersExclamation")
    run_selfplay(cfg, tmp_path / "run", progress=False)
    comparisons = pq.read_table(tmp_path / "run" / "comparisons").to_pylist()
    rollouts = {(r["conversation_id"], r["turn"], r["sample"], r["iteration"]): r["response"]
                for r in pq.read_table(tmp_path / "run" / "rollouts").to_pylist()}
    assert {c["judge"] for c in comparisons} == {f"{judge_module}:PrefersExclamation"}
    for c in comparisons:  # the probabilities are the user's judge's
        a = rollouts[(c["conversation_id"], c["turn"], c["a"], c["iteration"])]
        b = rollouts[(c["conversation_id"], c["turn"], c["b"], c["iteration"])]
        assert c["probability"] == 0.5 + 0.5 * (a.endswith("!") - b.endswith("!"))


def test_a_failing_judge_stops_the_run_with_a_resumable_checkpoint(tiny_policy, cache_dir, tmp_path, judge_module):
    # the judge is not antisymmetric, so each compare asks it twice: the start evaluation and
    # iterations 1–2 use 6 calls; iteration 3 fails twice (one retry) and the run stops
    cfg = small_config(cache_dir, "train.iterations=4", "eval.every=10", "pipeline.ray=false",
                       "judge.kind=custom", f"judge.target={judge_module}:BreaksAfter", "judge.retries=1",
                       "judge.kwargs={good_calls: 6}")
    with pytest.raises(AlignplayError, match="judge e2e_judges:BreaksAfter: compare failed 2 times: "
                                             "ConnectionError: judge endpoint unreachable"):
        run_selfplay(cfg, tmp_path, progress=False)
    state = json.loads((tmp_path / "checkpoints" / "iter_000002" / "state.json").read_text())
    assert state["iteration"] == 2 and state["policy_version"] == 2
    assert len(read_metrics(tmp_path)) == 2
    fixed = small_config(cache_dir, "train.iterations=4", "eval.every=10", "pipeline.ray=false", "resume=true")
    run_selfplay(fixed, tmp_path, progress=False)
    assert [r["iteration"] for r in read_metrics(tmp_path)] == [1, 2, 3, 4]


def test_the_light_roles_run_in_the_driver_only_on_a_ray_of_its_own_and_when_they_ask_for_nothing(cache_dir):
    from types import SimpleNamespace

    own, joined = SimpleNamespace(joined=False), SimpleNamespace(joined=True)
    assert light_here(small_config(cache_dir), own) == {"reference", "judge"}
    assert light_here(small_config(cache_dir), joined) == set()  # (a cluster's nodes: actors, placed)
    assert light_here(small_config(cache_dir, "pipeline.light_roles=actors"), own) == set()
    assert light_here(small_config(cache_dir, "pipeline.light_roles=driver"), joined) == {"reference", "judge"}
    assert light_here(small_config(cache_dir, "pipeline.judges=2"), own) == {"reference"}  # a pool: actors
    assert light_here(small_config(cache_dir, "judge.kind=llm", "judge.base_url=http://127.0.0.1:1",
                                   "judge.model=m"), own) == {"reference"}
    assert light_here(small_config(cache_dir, "pipeline.resources.reference.gpus=1"), own) == {"judge"}
    assert light_here(small_config(cache_dir, "pipeline.resources.judge.resources={node_a: 0.01}"), own) == {"reference"}
    assert light_here(small_config(cache_dir, "pipeline.backend=vllm"), own) == {"judge"}
    with pytest.raises(Exception, match="light_roles"):
        small_config(cache_dir, "pipeline.light_roles=here")


def test_split_stale_keeps_samples_within_the_bound():
    def r(version):
        return Rollout("c", 0, 0, 0, "[]", [1], [2], [-1.0], "x", version, 0)

    fresh, stale = split_stale([r(5), r(4), r(3), r(1)], learner_version=5, max_staleness=2)
    assert [x.policy_version for x in fresh] == [5, 4, 3] and [x.policy_version for x in stale] == [1]


@pytest.mark.parametrize("q", ["monte_carlo", "terminal"])
def test_multi_turn_q_continues_every_branch_to_the_end(tiny_policy, cache_dir, tmp_path, q):
    """2 turns, K = 3: the answers of turn 0 are continued to turn 1 (branch 0 is the main line),
    and the judge also compares the continuations there."""
    cfg = small_config(cache_dir, "train.iterations=1", "eval.every=1", "pipeline.mode=sync",
                       "pipeline.ray=false", f"algo.q={q}")
    run_selfplay(cfg, tmp_path, progress=False)
    rollouts = pq.read_table(tmp_path / "rollouts").to_pylist()
    per_conversation = {}
    for r in rollouts:
        per_conversation.setdefault(r["conversation_id"], []).append(r)
    for rows in per_conversation.values():
        branches = [r for r in rows if r["branch_of"] == 0]
        assert len(rows) == 3 + 3 + 2 and [r["turn"] for r in branches] == [1, 1]
        first = {r["sample"]: r["response"] for r in rows if r["turn"] == 0}
        for r in branches:  # continuation k starts from answer k of turn 0
            assert json.loads(r["messages"])[1] == {"role": "assistant", "content": first[r["sample"]]}
    comparisons = pq.read_table(tmp_path / "comparisons").to_pylist()
    assert len(comparisons) == 6 * 9  # per conversation 3 pairs at turn 0, 3 at turn 1, 3 between branches
    assert sum(c["branch_of"] == 0 for c in comparisons) == 6 * 3
    assert read_metrics(tmp_path)[0]["examples"] == 6 * 2 * 3  # only answers at their own state train
