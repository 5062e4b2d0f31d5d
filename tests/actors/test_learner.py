import dataclasses

import numpy as np
import pytest
import torch

from actors.learner import Learner, full_logp, prompt_groups, shared_prefix_logp
from actors.remote import RayCluster
from framework.batching import collate


def _batch(task, learner, n=8, seed=0):
    rng = torch.Generator().manual_seed(seed)
    states = task.heldout_states(n, seed=seed)[:n]
    tok = learner.tokenizer
    prompts = [list(tok.apply_chat_template(s, add_generation_prompt=True, tokenize=True)["input_ids"]) for s in states]
    responses = [tok(f"{i}!", add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for i in range(n)]
    q = torch.rand(n, generator=rng).tolist()
    with torch.no_grad():
        b = collate(prompts, responses, pad_id=tok.pad_token_id)
        old = learner.logp(b).tolist()
    return collate(prompts, responses, pad_id=tok.pad_token_id, logp_old=old, q_hat=q, baseline=[0.5] * n)


def test_mpo_updates_move_logprobs_toward_the_target(tiny_policy, task):
    # (8 epochs at 3e-3 overshoot on some hosts — loss 4.5, ρ uncorrelated on an AMD EPYC — while
    # 1e-3 converges: the test is of the update's direction, not of a step size at the edge)
    learner = Learner(model_path=tiny_policy, lr=1e-3)
    batch = _batch(task, learner)
    first = learner.train(batch, algorithm="mpo", eta=2.0, epochs=8, minibatches=1)
    assert first["version"] == 1
    with torch.no_grad():
        rho = learner.logp(batch) - batch.logp_old
    target = 2.0 * (batch.q_hat - 0.5)
    # the update correlates ρ with its regression target
    assert torch.corrcoef(torch.stack([rho, target]))[0, 1] > 0.5
    # the step it took: the least-squares slope of ρ after the update on Q̂ − b (η when solved)
    slope = np.polyfit((batch.q_hat - 0.5).numpy(), rho.numpy(), 1)[0]
    assert first["effective_step"] == pytest.approx(slope, rel=1e-4)
    one = Learner(model_path=tiny_policy, lr=1e-4).train(batch, algorithm="mpo", eta=2.0, minibatches=1)
    assert 0 < one["effective_step"] < first["effective_step"]  # one small step moves ρ less


def test_a_kl_penalty_regresses_onto_the_magnetic_target_and_reports_the_kl(tiny_policy, task):
    """After one update from the starting policy (π_t = π_ref), the second update's KL estimate is
    mean(log π_t − log π_ref) over its samples, the reference being the frozen starting policy;
    the learning rate passed in is the one the optimizer used."""
    learner = Learner(model_path=tiny_policy, lr=3e-3)
    batch = _batch(task, learner)
    first = learner.train(batch, algorithm="mpo", eta=2.0, kl_coef=0.1, lr=1e-3)
    assert first["kl_ref"] == pytest.approx(0.0, abs=1e-5)  # the samples came from π_ref itself
    assert learner.optimizer.param_groups[0]["lr"] == 1e-3
    with torch.no_grad():
        moved = learner.logp(batch)
    ref = Learner(model_path=tiny_policy)
    with torch.no_grad():
        start = ref.logp(batch)
    second = dataclasses.replace(batch, logp_old=moved)
    out = learner.train(second, algorithm="mpo", eta=2.0, kl_coef=0.1)
    assert out["kl_ref"] == pytest.approx(float((moved - start).mean()), abs=1e-5)
    assert abs(out["kl_ref"]) > 1e-4  # the first update did move the policy
    with pytest.raises(ValueError, match="no KL penalty"):
        learner.train(batch, algorithm="dpo", eta=2.0, kl_coef=0.1)


def test_a_stage_starts_a_fresh_optimizer_and_takes_one_learning_rate_per_step(tiny_policy, task):
    """``reset_optimizer`` makes the next step a first step (AdamW's step count restarts), and a
    list of learning rates gives each policy step its own: the last one stays set."""
    learner = Learner(model_path=tiny_policy, lr=3e-3)
    batch = _batch(task, learner)
    learner.train(batch, algorithm="mpo", eta=2.0, minibatches=2, lr=[1e-3, 2e-3])
    steps = lambda: {float(v["step"]) for v in learner.optimizer.state.values()}  # noqa: E731
    assert steps() == {2.0} and learner.optimizer.param_groups[0]["lr"] == 2e-3
    learner.train(batch, algorithm="mpo", eta=2.0, minibatches=4, lr=[1e-4, 2e-4, 3e-4])  # short list: last repeats
    assert steps() == {6.0} and learner.optimizer.param_groups[0]["lr"] == 3e-4
    learner.train(batch, algorithm="mpo", eta=2.0, minibatches=1, lr=5e-4, reset_optimizer=True)
    assert steps() == {1.0} and learner.optimizer.param_groups[0]["lr"] == 5e-4


def test_checkpoint_round_trip_restores_weights_and_optimizer(tiny_policy, task, tmp_path):
    a = Learner(model_path=tiny_policy)
    batch = _batch(task, a)
    a.train(batch, algorithm="mpo", eta=1.0)
    a.save(str(tmp_path))
    b = Learner(model_path=tiny_policy)
    b.load(str(tmp_path), version=1)
    for (k, va), vb in zip(a.weights().items(), b.weights().values()):
        torch.testing.assert_close(va, vb, msg=k)
    # same next step from both: optimizer moments were restored too
    a.train(batch, algorithm="mpo", eta=1.0)
    b.train(batch, algorithm="mpo", eta=1.0)
    for va, vb in zip(a.weights().values(), b.weights().values()):
        torch.testing.assert_close(va, vb)
    from transformers import AutoModelForCausalLM

    assert AutoModelForCausalLM.from_pretrained(tmp_path / "policy") is not None


def test_two_data_parallel_workers_equal_one_full_batch_step(ray_session, tiny_policy, task):
    """DDP over a gloo group: two workers on half batches take the single-worker full-batch step."""
    single = Learner(model_path=tiny_policy, lr=1e-3)
    batch = _batch(task, single)
    single.train(batch, algorithm="mpo", eta=1.0, minibatches=1)
    cluster = RayCluster()
    try:
        init = cluster.init_method()
        workers = [cluster.spawn(Learner, cpus=0, model_path=tiny_policy, rank=r, world_size=2,
                                 init_method=init, lr=1e-3) for r in range(2)]
        cluster.get([w.call(Learner.train, shard, algorithm="mpo", eta=1.0, minibatches=1)
                     for w, shard in zip(workers, batch.shard(2))])
        w0, w1 = cluster.get([w.call(Learner.weights) for w in workers])
    finally:
        cluster.shutdown()
    for k, v in single.weights().items():
        torch.testing.assert_close(w0[k], w1[k])  # replicas stay identical
        torch.testing.assert_close(w0[k], v, atol=1e-5, rtol=1e-4)


def test_a_bfloat16_learner_keeps_float32_weights_and_still_moves_toward_the_target(tiny_policy, task):
    """model.dtype=bfloat16: forward passes under autocast (here the CPU's), weights and Adam's
    state in float32; the update still correlates ρ with its target."""
    learner = Learner(model_path=tiny_policy, lr=3e-3, dtype="bfloat16")
    assert learner.device.type in ("cpu", "cuda")
    batch = _batch(task, learner)
    learner.train(batch, algorithm="mpo", eta=2.0, epochs=8, minibatches=1)
    assert all(p.dtype == torch.float32 for p in learner.module.parameters())
    assert all(v.dtype == torch.float32 for state in learner.optimizer.state.values() for v in state.values()
               if torch.is_tensor(v) and v.dim() > 0)
    with torch.no_grad():
        rho = learner.logp(batch).float().cpu() - batch.logp_old
    assert torch.corrcoef(torch.stack([rho, 2.0 * (batch.q_hat - 0.5)]))[0, 1] > 0.5


def test_a_sharded_group_takes_the_full_batch_step_and_checkpoints_what_a_replica_would(ray_session, tiny_policy,
                                                                                      task, tmp_path):
    """pipeline.learner_strategy=fsdp: two gloo ranks, each holding half of every block's weights
    (FSDP2 over a CPU device mesh), on half batches take the single-process full-batch step. The
    full weights come to rank 0 alone, and the checkpoint both ranks write — in the replicated
    format — resumes a sharded pair whose next step is the single learner's next step (Adam's
    moments were saved and restored, shard by shard)."""
    from safetensors.torch import load_file

    single = Learner(model_path=tiny_policy, lr=1e-3)
    batch = _batch(task, single)
    second = _batch(task, single, seed=1)

    def sharded_pair(cluster):
        init = cluster.init_method()
        return [cluster.spawn(Learner, cpus=0, model_path=tiny_policy, rank=r, world_size=2, init_method=init,
                              lr=1e-3, strategy="fsdp") for r in range(2)]

    def step(cluster, pair, b):
        return cluster.get([w.call(Learner.train, shard, algorithm="mpo", eta=1.0, minibatches=1)
                            for w, shard in zip(pair, b.shard(2))])

    cluster = RayCluster(modules=(__name__, "tests"))
    try:
        pair = sharded_pair(cluster)
        step(cluster, pair, batch)
        local = cluster.get(pair[0].call(Learner.shard_numel))
        full, nothing = cluster.get([w.call(Learner.weights) for w in pair])
        cluster.get([w.call(Learner.save, str(tmp_path)) for w in pair])
        for w in pair:
            cluster.ray.kill(w.actor)
        resumed = sharded_pair(cluster)
        cluster.get([w.call(Learner.load, str(tmp_path), 1) for w in resumed])
        out = step(cluster, resumed, second)
        after, _ = cluster.get([w.call(Learner.weights) for w in resumed])  # (a collective: every rank)
    finally:
        cluster.shutdown()
    single.train(batch, algorithm="mpo", eta=1.0, minibatches=1)
    assert nothing is None and full.keys() == single.weights().keys()
    total = sum(v.numel() for v in full.values())
    assert local < 0.6 * total  # rank 0 holds about half (the root's small tensors are split too)
    for k, v in single.weights().items():
        torch.testing.assert_close(full[k], v, atol=1e-5, rtol=1e-4)
    saved = load_file(str(tmp_path / "policy" / "model.safetensors"))
    assert all(torch.equal(saved[k], full[k]) for k in full)  # from_pretrained-loadable, full tensors
    single.train(second, algorithm="mpo", eta=1.0, minibatches=1)
    assert [r["version"] for r in out] == [2, 2]
    for k, v in single.weights().items():
        torch.testing.assert_close(after[k], v, atol=1e-5, rtol=1e-4)


def test_rows_that_share_a_prompt_share_its_forward_with_the_same_logprobs_and_gradients(tiny_policy):
    """pipeline.shared_prompts: 6 prompts of 5–11 tokens, 3 answers of 1–5 tokens each (ragged on
    both sides): the prompt's keys and values made once give the plain forward's log-probs and
    gradients to float rounding."""
    learner = Learner(model_path=tiny_policy, shared_prompts=True)
    g = torch.Generator().manual_seed(0)
    prompts, answers = [], []
    for _ in range(6):
        prompt = torch.randint(3, 60, (int(torch.randint(5, 12, (1,), generator=g)),), generator=g).tolist()
        for _ in range(3):
            prompts.append(prompt)
            answers.append(torch.randint(3, 60, (int(torch.randint(1, 6, (1,), generator=g)),), generator=g).tolist())
    batch = collate(prompts, answers, pad_id=learner.tokenizer.pad_token_id)
    groups = prompt_groups(batch)
    assert len(groups[0]) == 6 and groups[1].tolist() == [j for j in range(6) for _ in range(3)]
    params = list(learner.module.parameters())
    plain = full_logp(learner.module, batch)
    shared = shared_prefix_logp(learner.module, batch, *groups)
    assert torch.allclose(shared, plain, atol=1e-4) and not torch.allclose(plain[0], plain[1])
    for a, b in zip(torch.autograd.grad(plain.sum(), params), torch.autograd.grad(shared.sum(), params)):
        assert torch.allclose(a, b, rtol=1e-3, atol=1e-5 * float(a.abs().max()))
    assert torch.allclose(learner.logp(batch), plain, atol=1e-4) and learner.share_prefixes is True
    distinct = collate([[5, 6, 7], [5, 6, 8]], [[9], [9]], pad_id=learner.tokenizer.pad_token_id)
    assert prompt_groups(distinct) is None  # (nothing shared: the plain forward)
