import numpy as np
import pytest
import torch

from actors.generator import RolloutGenerator
from actors.learner import Learner
from actors.remote import RayCluster
from framework.batching import collate


def test_rollout_plays_every_turn_with_k_samples_and_exact_logprobs(tiny_policy, task):
    gen = RolloutGenerator(model_path=tiny_policy, max_new_tokens=6)
    episodes = task.episodes("train", 5, seed=3)
    rollouts = gen.rollout(episodes, k=3, iteration=7, seed=11)
    assert len(rollouts) == 5 * task.turns * 3
    assert {r.turn for r in rollouts} == set(range(task.turns))
    assert all(r.iteration == 7 and r.policy_version == 0 for r in rollouts)
    # the turn-1 state continues the conversation with sample 0 of turn 0
    first = {r.conversation_id: r for r in rollouts if r.turn == 0 and r.sample == 0}
    for r in (r for r in rollouts if r.turn == 1):
        assert r.state[1] == {"role": "assistant", "content": first[r.conversation_id].response}
    # reported log-probs are the policy's: the learner recomputes the same numbers
    learner = Learner(model_path=tiny_policy)
    batch = collate([r.prompt_ids for r in rollouts], [r.response_ids for r in rollouts],
                    pad_id=gen.pad_id(), logp_old=[r.logprob for r in rollouts])
    with torch.no_grad():
        torch.testing.assert_close(learner.logp(batch), batch.logp_old, atol=1e-4, rtol=1e-4)
    # the warm start follows the format: most answers parse into a styled class
    classes = [task.classify(r.state, r.response) for r in rollouts]
    assert np.mean([c % 4 != 3 for c in classes]) > 0.8


def test_sampling_is_reproducible_and_weights_are_versioned(tiny_policy, task):
    gen = RolloutGenerator(model_path=tiny_policy)
    states = task.heldout_states(4, seed=0)
    a = [[s.text for s in g] for g in gen.sample(states, k=4, seed=5)]
    b = [[s.text for s in g] for g in gen.sample(states, k=4, seed=5)]
    assert a == b
    zeros = {k: torch.zeros_like(v) for k, v in Learner(model_path=tiny_policy).weights().items()}
    assert gen.set_weights(3, zeros) == 3 and gen.ping() == 3
    assert gen.set_weights(2, {}) == 3  # an older version is ignored
    # all-zero weights give uniform next-token distributions: every log-prob is −log V
    logp = gen.sample(states[:1], k=1, seed=0)[0][0].logprobs
    np.testing.assert_allclose(logp, -np.log(len(gen.tokenizer)), rtol=1e-5)


def test_generator_runs_as_a_ray_actor(ray_session, tiny_policy, task):
    cluster = RayCluster()
    try:
        gen = cluster.spawn(RolloutGenerator, cpus=0, model_path=tiny_policy)
        local = RolloutGenerator(model_path=tiny_policy)
        episodes = task.episodes("train", 3, seed=1)
        remote = cluster.get(gen.call(RolloutGenerator.rollout, episodes, k=2, iteration=0, seed=4))
        assert [r.response for r in remote] == [r.response for r in local.rollout(episodes, k=2, iteration=0, seed=4)]
    finally:
        cluster.shutdown()
    assert ray_session.is_initialized()  # the cluster did not own Ray, so it left it running


def test_a_bfloat16_generator_samples_with_its_weights_in_bfloat16(tiny_policy, task):
    gen = RolloutGenerator(model_path=tiny_policy, dtype="bfloat16")
    assert next(gen.backend.model.parameters()).dtype == torch.bfloat16
    rollouts = gen.rollout(task.episodes("train", 3, seed=1), k=2, iteration=0, seed=4)
    assert len(rollouts) == 3 * task.turns * 2 and all(len(r.response_logprobs) == len(r.response_ids) for r in rollouts)
    assert all(lp <= 0 for r in rollouts for lp in r.response_logprobs)


def test_greedy_answers_are_the_argmax_with_their_own_logprobs(tiny_policy, task):
    """Temperature 0: every seed gives the same answer, each token the argmax, and the log-probs
    reported are π's own (temperature 1), as teacher forcing scores that answer."""
    gen = RolloutGenerator(model_path=tiny_policy, max_new_tokens=6)
    states = task.heldout_states(4, seed=0)
    a, b = (gen.sample(states, k=2, seed=s, temperature=0.0) for s in (1, 2))
    assert [[x.text for x in g] for g in a] == [[x.text for x in g] for g in b]
    assert all(g[0].token_ids == g[1].token_ids for g in a)
    scored = gen.score(states, [g[0].text for g in a])
    assert [sum(g[0].logprobs) for g in a] == [pytest.approx(s, abs=1e-4) for s in scored]
    # each greedy token is the argmax: no sampled answer is more likely at any one step
    prompt = gen.encode(states[0])
    with torch.no_grad():
        logits = gen.backend.model(input_ids=torch.tensor([prompt + a[0][0].token_ids])).logits[0]
    steps = logits[len(prompt) - 1:len(prompt) - 1 + len(a[0][0].token_ids)]
    assert steps.argmax(-1).tolist() == a[0][0].token_ids
    # a demonstration method's own answers at temperature 0 are these
    own = gen.respond([("d", states[0], "1!")], k=1, iteration=0, seed=5, temperature=0.0)
    assert own[1].response_ids == a[0][0].token_ids
