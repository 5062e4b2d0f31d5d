"""The DP learner's private-phase options: the optimizer state at the switch (keep, reset,
DP-AdamBC), the learning-rate warm-up, the ablation methods (σ = 0 with and without clipping)
and the start from a public_only checkpoint."""

import json

import pytest
import torch

from framework.errors import InputError
from framework.jobs.dp import learner_kwargs, run as run_dp
from framework.losses import lm_loss
from privacy.adambc import DPAdamBC
from privacy.learner import DPLearner


def learner(dp_config, dp_model, *extra) -> DPLearner:
    return DPLearner(**learner_kwargs(dp_config(*extra), dp_model))


def through_public(lrn: DPLearner, steps: int) -> None:
    for _ in range(steps):
        assert lrn.sample()["phase"] == "public"
        lrn.update()


def test_reset_switch_state_starts_a_fresh_adamw(dp_config, dp_model):
    lrn = learner(dp_config, dp_model, "dp.method=dp_continual", "dp.public_steps=2", "dp.switch_state=reset")
    through_public(lrn, 2)
    assert all(float(s["step"]) == 2 for s in lrn.optimizer.state.values())
    assert lrn.sample()["phase"] == "private"
    assert len(lrn.optimizer.state) == 0  # no moment, no step count: the first DP step is Adam's first step
    lrn.update()
    assert all(float(s["step"]) == 1 for s in lrn.optimizer.state.values())


def test_adambc_takes_over_at_the_switch_with_the_noise_variance(dp_config, dp_model):
    lrn = learner(dp_config, dp_model, "dp.method=dp_continual", "dp.public_steps=2", "dp.optimizer=adambc",
                  "dp.private_lr=0.003")
    through_public(lrn, 2)
    lrn.sample()
    assert isinstance(lrn.optimizer, DPAdamBC) and len(lrn.optimizer.state) == 0
    group = lrn.optimizer.param_groups[0]
    want = (lrn.noise_multiplier * lrn.max_grad_norm / lrn.batch_size) ** 2
    assert group["noise_variance"] == pytest.approx(want) and want > 0 and group["lr"] == 0.003
    lrn.update()
    lrn.account()
    assert lrn.private_taken == 1 and all(float(s["step"]) == 1 for s in lrn.optimizer.state.values())


def test_adambc_survives_a_checkpoint_round_trip(dp_config, dp_model, tmp_path):
    """A resumed DP-AdamBC run restores the same optimizer (type, moments, Φ), not a fresh AdamW."""
    extra = ("dp.method=dp_scratch", "dp.optimizer=adambc")
    a = learner(dp_config, dp_model, *extra)
    for _ in range(2):
        a.sample(), a.update(), a.account()
    a.save(str(tmp_path / "ck"))
    b = learner(dp_config, dp_model, *extra)
    b.load(str(tmp_path / "ck"))
    assert isinstance(b.optimizer, DPAdamBC)
    for p, q in zip(a.model.parameters(), b.model.parameters()):
        torch.testing.assert_close(a.optimizer.state[p]["exp_avg_sq"], b.optimizer.state[q]["exp_avg_sq"])
    assert b.optimizer.param_groups[0]["noise_variance"] == a.optimizer.param_groups[0]["noise_variance"]
    a.sample(), a.update()
    b.sample(), b.update()
    for p, q in zip(a.model.parameters(), b.model.parameters()):
        torch.testing.assert_close(p, q)


def test_private_warmup_ramps_the_learning_rate_linearly(dp_config, dp_model):
    lrn = learner(dp_config, dp_model, "dp.method=dp_scratch", "dp.private_lr=0.004", "dp.private_warmup=4",
                  "dp.private_steps=6")
    seen = []
    for _ in range(6):
        lrn.sample()
        lrn.update()
        lrn.account()
        seen.append(lrn.optimizer.param_groups[0]["lr"])
    assert seen == pytest.approx([0.001, 0.002, 0.003, 0.004, 0.004, 0.004])


def test_the_ablations_step_on_the_unclipped_and_clipped_sum_without_noise(dp_config, dp_model):
    """One private step of nondp_continual moves the weights by AdamW on Σ_i g_i / B, clip_only by
    AdamW on Σ_i min(1, R/‖g_i‖) g_i / B: no noise in either (reference: per-example backwards)."""
    R = 0.05  # small enough that every example is clipped
    for method in ("nondp_continual", "clip_only"):
        lrn = learner(dp_config, dp_model, f"dp.method={method}", "dp.public_steps=0", f"dp.max_grad_norm={R}")
        assert lrn.noise_multiplier == 0 and lrn.budget is None and lrn.epsilon() is None
        ref = type(lrn.model)(lrn.model.config)
        ref.load_state_dict(lrn.model.state_dict())
        assert lrn.sample()["phase"] == "private"
        batch = lrn._batch
        grads = []
        for i in range(len(batch)):
            ref.zero_grad()
            lm_loss(logits=ref(input_ids=batch[i:i + 1]).logits, input_ids=batch[i:i + 1]).sum().backward()
            g = [p.grad.clone() for p in ref.parameters()]
            norm = float(torch.stack([x.norm() for x in g]).norm())
            c = 1.0 if method == "nondp_continual" else min(1.0, R / (norm + 1e-6))
            grads.append([c * x for x in g])
        lrn.update()
        lrn.account()
        total = [sum(parts) / lrn.batch_size for parts in zip(*grads)]
        # The gradient the step applied, read back from Adam's first moment ((1 − β₁)·g after one
        # step), against the reference sum. (Not the weights: a first Adam step is lr·g/(|g| + ε),
        # which turns float noise in a gradient entry near ε into a weight difference near lr.)
        beta1 = lrn.optimizer.param_groups[0]["betas"][0]
        for g, q in zip(total, lrn.model.parameters()):
            applied = lrn.optimizer.state[q]["exp_avg"] / (1 - beta1)
            torch.testing.assert_close(applied, g, rtol=1e-4, atol=1e-6 * float(g.abs().max()))
        opt = torch.optim.AdamW(ref.parameters(), lr=lrn.private_lr, weight_decay=0.0)
        for p, g in zip(ref.parameters(), total):
            p.grad = g
        opt.step()
        moved = [(p - q).abs().max() for p, q in zip(ref.parameters(), lrn.model.parameters())]
        assert max(moved) <= lrn.private_lr  # (and the weights took that step, to within one lr)
        assert lrn.epsilon() is None  # trained on private data without DP: no bound is claimed


def test_a_continual_run_starts_from_a_public_only_checkpoint(dp_config, dp_model, tmp_path):
    """The weights, AdamW state and step count of public_only's final checkpoint; the switch at once."""
    public = run_dp(dp_config("dp.method=public_only", "pipeline.ray=false"), tmp_path / "public", progress=False)
    final = tmp_path / "public" / "checkpoints" / "final"
    cont = run_dp(dp_config("dp.method=clip_only", "pipeline.ray=false", f"dp.start_from={final}"),
                  tmp_path / "clip", progress=False)
    assert cont["started_from"] == str(final) and cont["switch_step"] == 4
    assert cont["start"]["eval_loss"] == pytest.approx(public["final"]["eval_loss"], abs=1e-6)
    rows = [json.loads(line) for line in (tmp_path / "clip" / "metrics.jsonl").read_text().splitlines()]
    assert [r["phase"] for r in rows] == ["private"] * 4 and rows[0]["iteration"] == 5
    assert cont["final"]["epsilon"] is None
    with pytest.raises(InputError, match="not of a public_only run"):
        run_dp(dp_config("dp.method=dp_continual", "pipeline.ray=false",
                         f"dp.start_from={tmp_path / 'clip' / 'checkpoints' / 'final'}"), tmp_path / "bad",
               progress=False)


def test_automatic_clipping_needs_the_bookkeeping_engine(dp_config, dp_model):
    with pytest.raises(InputError, match="book-keeping"):
        learner(dp_config, dp_model, "dp.method=dp_scratch", "dp.clipping=automatic", "dp.grad_sample_mode=ghost")


@pytest.mark.parametrize("method, phase", [("dp_continual", "public"), ("nondp", "all"), ("mix", "private")])
def test_public_batch_size_sets_the_non_private_batches_only(dp_config, dp_model, method, phase):
    """The public phase and nondp draw dp.public_batch_size rows; the private phase's Poisson
    batch (and mix's public batch beside it) stays at dp.batch_size, and so does the sample rate."""
    lrn = learner(dp_config, dp_model, f"dp.method={method}", "dp.batch_size=16", "dp.public_batch_size=5",
                  "dp.public_steps=1")
    if phase == "private":
        if lrn.sample()["phase"] == "public":  # (mix has no public phase of its own)
            lrn.update()
            assert lrn.sample()["phase"] == "private"
        assert len(lrn._public_batch) == 16 and lrn.sample_rate == pytest.approx(16 / lrn.private_total)
    else:
        assert lrn.sample()["phase"] == phase
        assert len(lrn._batch) == 5
    assert lrn.describe()["public_batch_size"] == 5
