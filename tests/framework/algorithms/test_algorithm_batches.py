"""Batch builders of OMPO, SPPO, DPO, IPO and Step-DPO on hand-made rollouts and judgements."""

import json

import numpy as np
import pytest
import torch

from framework.algorithms.registry import get_algorithm
from framework.algorithms.ompo import OptimisticCache, state_key
from framework.batching import collate
from framework.records import Comparison, Rollout

STATE = json.dumps([{"role": "user", "content": "1+1"}])


def _r(sample, turn=0, logprobs=(-1.0,), ids=(7,), cid="c0", text=None, state=STATE):
    return Rollout(cid, turn, sample, 0, state, [5, 6], list(ids), list(logprobs), text or f"r{sample}t{turn}", 0, 0)


def _c(a, b, p, turn=0, cid="c0", opponent="self"):
    return Comparison(cid, turn, 0, a, b, p, "j", opponent)


def test_per_example_sums_each_side_of_multi_row_examples():
    batch = collate([[1]] * 5, [[2]] * 5, pad_id=0, example=[0, 0, 1, 1, 1], side=[0, 1, 0, 0, 1])
    chosen, rejected = batch.per_example(torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0]))
    assert chosen.tolist() == [1.0, 7.0] and rejected.tolist() == [2.0, 5.0]
    shards = batch.shard(2)  # whole examples per shard
    assert [s.example.tolist() for s in shards] == [[0, 0], [1, 1, 1]]


def test_ompo_uses_the_previous_iterates_answers_at_the_same_state():
    """K = 2 now, K' = 2 cached. P(0≻1) = .8 → Q̂ = (.65, .35).
    Against the previous answers: sample 0 wins .9 and .5 → Q̂_prev₀ = .7; sample 1 .2 and .4 → .3.
    A state the previous iterate never visited keeps Q̂_prev = Q̂ (the MPO target).
    """
    other = json.dumps([{"role": "user", "content": "2+2"}])
    rs = [_r(0), _r(1), _r(0, cid="c1", state=other), _r(1, cid="c1", state=other)]
    cache = OptimisticCache({state_key(STATE): ["p0", "p1"]})
    assert [(r.conversation_id, r.sample, j) for r, j, _ in cache.opponents(rs)] == \
        [("c0", 0, 0), ("c0", 0, 1), ("c0", 1, 0), ("c0", 1, 1)]
    cs = [_c(0, 1, 0.8), _c(0, 1, 0.6, cid="c1"), _c(0, 0, 0.9, opponent="previous"),
          _c(0, 1, 0.5, opponent="previous"), _c(1, 0, 0.2, opponent="previous"), _c(1, 1, 0.4, opponent="previous")]
    batch = get_algorithm("ompo").build_batch(rs, cs, keep="all", pad_id=0)
    torch.testing.assert_close(batch.q_hat, torch.tensor([0.65, 0.35, 0.55, 0.45]))
    torch.testing.assert_close(batch.q_hat_prev, torch.tensor([0.7, 0.3, 0.55, 0.45]))


def test_optimistic_cache_round_trips_and_replaces(tmp_path):
    cache = OptimisticCache()
    cache.replace([_r(1, text="b"), _r(0, text="a")])
    cache.save(tmp_path)
    assert OptimisticCache.load(tmp_path).answers == {state_key(STATE): ["a", "b"]}
    cache.replace([_r(0, text="c")])
    assert cache.answers == {state_key(STATE): ["c"]}


def test_optimistic_cache_keys_a_state_by_its_user_turns_not_the_sampled_answers():
    """Turn 1 after a different sampled answer at turn 0 is the same state of the game: it meets
    the previous iterate's answers (an exact key missed it); other user turns do not."""
    before = json.dumps([{"role": "user", "content": "1+1"}, {"role": "assistant", "content": "2!"},
                         {"role": "user", "content": "+3"}])
    now = json.dumps([{"role": "user", "content": "1+1"}, {"role": "assistant", "content": "7~"},
                      {"role": "user", "content": "+3"}])
    other = json.dumps([{"role": "user", "content": "1+1"}, {"role": "assistant", "content": "2!"},
                        {"role": "user", "content": "-3"}])
    cache = OptimisticCache()
    cache.replace([_r(0, turn=1, text="5!", state=before)])
    fresh = [_r(0, turn=1, state=now), _r(0, turn=1, cid="c1", state=other)]
    pairs = cache.pairs(fresh)
    assert [(p.conversation_id, p.answer_b, p.state) for p in pairs] == [("c0", "5!", now)]  # judged at today's state
    cs = [_c(0, 0, 0.5, turn=1, opponent="previous")]
    assert cache.observe(fresh, cs)["optimistic_hit_rate"] == 0.5


def _two_paths_two_turns():
    """Prompt c0, paths 0 and 1 over turns 0 and 1. Turn preferences P(0≻1) = .9 then .3:
    path win P(y⁰ ≻ y¹) = .6, so Q̂ = ((.5 + .6)/2, (.4 + .5)/2) = (.55, .45): path 0 is chosen.
    """
    rs = [_r(0, 0, (-1.0,), (7,)), _r(0, 1, (-0.5, -0.5), (8, 9)), _r(1, 0, (-2.0,), (10,)), _r(1, 1, (-3.0,), (11,))]
    return rs, [_c(0, 1, 0.9, turn=0), _c(0, 1, 0.3, turn=1)]


def test_sppo_trains_whole_conversations_on_their_win_rate():
    rs, cs = _two_paths_two_turns()
    batch = get_algorithm("sppo").build_batch(rs, cs, keep="all", pad_id=0)
    assert batch.example.tolist() == [0, 0, 1, 1]
    torch.testing.assert_close(batch.first_of_example(batch.q_hat), torch.tensor([0.55, 0.45]))
    logp_y, _ = batch.per_example(batch.logp_old)
    torch.testing.assert_close(logp_y, torch.tensor([-2.0, -5.0]))
    # at ρ = 0 the loss is (η (Q̂ − ½))² per conversation
    loss = get_algorithm("sppo").loss(batch=batch, logp=batch.logp_old, eta=2.0)
    torch.testing.assert_close(loss, torch.tensor([0.01, 0.01]))


@pytest.mark.parametrize("name", ["dpo", "ipo"])
def test_conversation_pairs_take_the_best_and_worst_paths(name):
    rs, cs = _two_paths_two_turns()
    batch = get_algorithm(name).build_batch(rs, cs, keep="best_worst", pad_id=0)
    assert batch.side.tolist() == [0, 0, 1, 1] and batch.example.tolist() == [0, 0, 0, 0]
    chosen, rejected = batch.per_example(batch.logp_old)
    assert (chosen.item(), rejected.item()) == (-2.0, -5.0)
    loss = get_algorithm(name).loss(batch=batch, logp=batch.logp_old, eta=2.0)  # at the reference
    expected = np.log(2.0) if name == "dpo" else (1 / (2 * 0.5)) ** 2  # −log σ(0); (0 − 1/(2τ))², τ = 1/η
    assert loss.tolist() == pytest.approx([expected])


def test_step_dpo_pairs_the_branch_at_each_state_and_skips_ties():
    rs = [_r(0, ids=(7,)), _r(1, ids=(8,)), _r(2, ids=(9,)), _r(0, turn=1), _r(1, turn=1)]
    cs = [_c(0, 1, 0.2), _c(0, 2, 0.5), _c(1, 2, 0.7), _c(0, 1, 0.5, turn=1)]  # turn 1 ties
    batch = get_algorithm("step_dpo").build_batch(rs, cs, keep="best_worst", pad_id=0)
    # turn 0: Q̂ = (.35, .7, .4): chosen sample 1, rejected sample 0
    assert len(batch) == 2 and batch.side.tolist() == [0, 1]
    assert [int(batch.input_ids[i, 2]) for i in range(2)] == [8, 7]
    empty = get_algorithm("step_dpo").build_batch(rs[3:], cs[3:], keep="best_worst", pad_id=0)
    assert len(empty) == 0


def test_monte_carlo_and_terminal_q_by_hand():
    """K = 2 answers at turn 0 of a 3-turn conversation, continued to the end.
    P(0≻1) at turn 0 = .8; their continuations: .6 at turn 1, .3 at turn 2.

    Monte-Carlo: Q̂ = (.65 + .55 + .4, .35 + .45 + .6) = (1.6, 1.4), baseline (H − h + 1)/2 = 1.5.
    Terminal: only turn 2 counts: Q̂ = (.4, .6), baseline ½.
    """
    rs = [_r(0), _r(1)]
    cs = [_c(0, 1, 0.8), Comparison("c0", 1, 0, 0, 1, 0.6, "j", branch_of=0),
          Comparison("c0", 2, 0, 0, 1, 0.3, "j", branch_of=0)]
    mpo = get_algorithm("mpo")
    mc = mpo.build_batch(rs, cs, keep="all", pad_id=0, q="monte_carlo")
    torch.testing.assert_close(mc.q_hat, torch.tensor([1.6, 1.4]))
    torch.testing.assert_close(mc.baseline, torch.tensor([1.5, 1.5]))
    terminal = mpo.build_batch(rs, cs, keep="all", pad_id=0, q="terminal")
    torch.testing.assert_close(terminal.q_hat, torch.tensor([0.4, 0.6]))
    torch.testing.assert_close(terminal.baseline, torch.tensor([0.5, 0.5]))
    one_step = mpo.build_batch(rs, cs, keep="all", pad_id=0)  # continuations are ignored
    torch.testing.assert_close(one_step.q_hat, torch.tensor([0.65, 0.35]))


def test_mirror_descent_targets_per_unit_of_eta():
    """What effective_step regresses ρ onto: MPO Q̂ − b (− β(log π_t − log π_ref)), OMPO
    2Q̂ᵗ − Q̂ᵗ⁻¹ − τ − b, SPPO the conversation's P̂ − ½ once per example; pair methods have none."""
    batch = collate([[1]] * 3, [[2]] * 3, pad_id=0, q_hat=[0.75, 0.5, 0.25], q_hat_prev=[0.5, 0.5, 0.5],
                    baseline=[0.5] * 3, logp_old=[-1.0, -2.0, -3.0], logp_ref=[-1.5, -2.0, -2.0])
    torch.testing.assert_close(get_algorithm("mpo").target(batch=batch), torch.tensor([0.25, 0.0, -0.25]))
    torch.testing.assert_close(get_algorithm("mpo").target(batch=batch, kl_coef=0.1),
                               torch.tensor([0.25 - 0.05, 0.0, -0.25 + 0.1]))
    torch.testing.assert_close(get_algorithm("ompo").target(batch=batch, tau=0.1),
                               torch.tensor([0.4, -0.1, -0.6]))
    paths = collate([[1]] * 3, [[2]] * 3, pad_id=0, q_hat=[0.7, 0.7, 0.2], example=[0, 0, 1])
    torch.testing.assert_close(get_algorithm("sppo").target(batch=paths), torch.tensor([0.2, -0.3]))
    assert all(get_algorithm(m).target is None for m in ("dpo", "ipo", "step_dpo"))
