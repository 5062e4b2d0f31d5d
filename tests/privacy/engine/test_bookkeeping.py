"""Book-keeping clipping equals Opacus: per-sample norms and the noised gradient (fixed noise
seed), for Linear, Embedding, RMSNorm and a whole tiny Llama, over random shapes."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from transformers.models.llama.modeling_llama import LlamaRMSNorm

from framework.errors import InputError
from privacy.engine.bookkeeping import BookKeepingEngine

SEED = 11


def Head(layer: nn.Module, out: int) -> nn.Module:
    """The layer under test inside a container (so the engines see a model, not a bare layer)."""
    return nn.Sequential(layer)


def per_sample_loss(model, x):
    """A fixed readout: per-sample loss = mean_t (r · layer(x)_t)²."""
    y = model(x)
    readout = torch.randn(y.shape[-1], generator=torch.Generator().manual_seed(3))
    return ((y * readout).sum(-1) ** 2).mean(dim=-1)


def opacus_reference(model, x, *, sigma, R):
    """Opacus (hooks, per-sample gradients by its own grad samplers / functorch): norms and noised gradient."""
    from opacus.grad_sample import GradSampleModule
    from opacus.optimizers import DPOptimizer

    gsm = GradSampleModule(model, loss_reduction="sum")
    opt = DPOptimizer(torch.optim.SGD(model.parameters(), lr=0.0), noise_multiplier=sigma, max_grad_norm=R,
                      expected_batch_size=len(x), loss_reduction="mean",  # divide by B, as we do
                      generator=torch.Generator().manual_seed(SEED))
    per_sample_loss(gsm, x).sum().backward()
    norms = torch.stack([p.grad_sample.reshape(len(x), -1).norm(dim=1) for p in opt.params], dim=1).norm(dim=1)
    opt.pre_step()
    grads = [p.grad.clone() for p in opt.params]
    gsm._close()
    return norms, grads


def ours(model, x, *, sigma, R):
    engine = BookKeepingEngine(model, torch.optim.SGD(model.parameters(), lr=0.0), noise_multiplier=sigma,
                               max_grad_norm=R, expected_batch_size=len(x), loss_fn=per_sample_loss,
                               generator=torch.Generator().manual_seed(SEED))
    norms = engine.per_sample_norms(x)
    engine.gradient(x)
    grads = [p.grad.clone() for p in engine.params]
    engine.detach()
    return norms, grads


def check(make, x, sigma=0.8):
    a, b = make(), make()
    ref_norms, ref_grads = opacus_reference(a, x, sigma=sigma, R=1.0)
    R = float(ref_norms.median())  # clip about half the samples
    a, b = make(), make()
    ref_norms, ref_grads = opacus_reference(a, x, sigma=sigma, R=R)
    got_norms, got_grads = ours(b, x, sigma=sigma, R=R)
    torch.testing.assert_close(got_norms, ref_norms, rtol=1e-4, atol=1e-6)
    assert len(got_grads) == len(ref_grads)
    for g, r in zip(got_grads, ref_grads):
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-5)


def seeded(factory):
    def make():
        torch.manual_seed(0)
        return factory()
    return make


dims = st.integers(min_value=1, max_value=24)


@settings(max_examples=12, deadline=None)
@given(b=st.integers(1, 6), t=st.integers(1, 20), p=dims, d=dims, bias=st.booleans())
def test_linear_matches_opacus(b, t, p, d, bias):
    """Both forms occur: instantiation when p·d ≤ T(p + d), the ghost norm otherwise."""
    x = torch.randn(b, t, p, generator=torch.Generator().manual_seed(b * t))
    check(seeded(lambda: Head(nn.Linear(p, d, bias=bias), d)), x)


@settings(max_examples=12, deadline=None)
@given(b=st.integers(1, 6), t=st.integers(1, 20), vocab=st.integers(2, 40), d=dims)
def test_embedding_matches_opacus(b, t, vocab, d):
    """Repeated tokens within a sequence are what the ghost form's [idx_t = idx_s] term counts."""
    x = torch.randint(0, vocab, (b, t), generator=torch.Generator().manual_seed(vocab))
    check(seeded(lambda: Head(nn.Embedding(vocab, d), d)), x)


@settings(max_examples=8, deadline=None)
@given(b=st.integers(1, 6), t=st.integers(1, 12), d=dims)
def test_rmsnorm_matches_opacus_functorch(b, t, d):
    x = torch.randn(b, t, d, generator=torch.Generator().manual_seed(d))

    def make():
        norm = LlamaRMSNorm(d)
        norm.weight.data = torch.randn(d, generator=torch.Generator().manual_seed(5))
        return Head(norm, d)

    check(seeded(make), x)


@pytest.mark.parametrize("seq", [6, 40])
def test_a_whole_tiny_llama_matches_opacus(seq):
    """T = 6 makes every Linear take the ghost form; T = 40 instantiates the attention projections."""
    from tests.privacy.engine.test_opacus import V, tiny_llama

    x = torch.randint(0, V, (5, seq), generator=torch.Generator().manual_seed(seq))

    def loss(model, ids):
        logits = model(input_ids=ids).logits
        return nn.functional.cross_entropy(logits[:, :-1].reshape(-1, V), ids[:, 1:].reshape(-1),
                                           reduction="none").view(len(ids), -1).mean(dim=1)

    global per_sample_loss
    saved, per_sample_loss = per_sample_loss, loss
    try:
        check(lambda: tiny_llama(), x)
    finally:
        per_sample_loss = saved


def test_tied_parameters_are_refused():
    from tests.privacy.engine.test_opacus import tiny_llama

    model = tiny_llama(tied=True)
    with pytest.raises(InputError, match="tied"):
        BookKeepingEngine(model, torch.optim.SGD(model.parameters(), lr=0.1), noise_multiplier=1.0,
                          max_grad_norm=1.0, expected_batch_size=4)


def per_sample_gradients(model, x):
    """The reference: each example's gradient by its own backward, flattened (B, P)."""
    rows = []
    for i in range(len(x)):
        model.zero_grad()
        per_sample_loss(model, x[i:i + 1]).sum().backward()
        rows.append(torch.cat([p.grad.reshape(-1) for p in model.parameters()]))
    model.zero_grad()
    return torch.stack(rows)


@pytest.mark.parametrize("clipping", ["automatic", "none"])
def test_automatic_and_no_clipping_give_the_hand_derived_gradient(clipping):
    """automatic: Σ_i R g_i / (‖g_i‖ + 0.01) / B; none: Σ_i g_i / B (σ = 0: no noise to match)."""
    x = torch.randn(6, 5, 7, generator=torch.Generator().manual_seed(2)) * torch.tensor([0.1, 1, 3, 10, 0.01, 1])[:, None, None]
    a, b = seeded(lambda: Head(nn.Linear(7, 4), 4))(), seeded(lambda: Head(nn.Linear(7, 4), 4))()
    g = per_sample_gradients(a, x)
    R = 0.5
    c = R / (g.norm(dim=1) + 0.01) if clipping == "automatic" else torch.ones(len(x))
    want = (c[:, None] * g).sum(0) / len(x)
    engine = BookKeepingEngine(b, torch.optim.SGD(b.parameters(), lr=0.0), noise_multiplier=0.0, max_grad_norm=R,
                               expected_batch_size=len(x), loss_fn=per_sample_loss, clipping=clipping)
    engine.gradient(x)
    torch.testing.assert_close(torch.cat([p.grad.reshape(-1) for p in engine.params]), want, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("clipping", ["flat", "automatic"])
def test_one_example_moves_the_clipped_sum_by_less_than_r(clipping):
    """The sensitivity the accountant assumes: whatever the example (gradient norms from 1e-3 to
    1e3 here), its clipped contribution has norm < R, so σR noise gives the accountant's ε. Under
    automatic clipping small gradients are scaled up toward R (normalised), not left as they are."""
    R = 0.5
    scales = [1e-3, 1e-1, 1.0, 1e1, 1e3]
    x = torch.randn(len(scales), 5, 7, generator=torch.Generator().manual_seed(4)) * torch.tensor(scales)[:, None, None]
    model = seeded(lambda: Head(nn.Linear(7, 4, bias=False), 4))()
    raw = per_sample_gradients(model, x).norm(dim=1)
    engine = BookKeepingEngine(model, torch.optim.SGD(model.parameters(), lr=0.0), noise_multiplier=0.0,
                               max_grad_norm=R, expected_batch_size=1, loss_fn=per_sample_loss, clipping=clipping)
    for i in range(len(x)):
        engine.gradient(x[i:i + 1])
        norm = float(torch.cat([p.grad.reshape(-1) for p in engine.params]).norm())
        engine.zero_grad()
        assert norm < R
        want = R * raw[i] / (raw[i] + 0.01) if clipping == "automatic" else min(float(raw[i]), R)
        assert norm == pytest.approx(float(want), rel=1e-3)


def test_noise_without_clipping_is_refused():
    model = Head(nn.Linear(3, 2), 2)
    with pytest.raises(InputError, match="sensitivity"):
        BookKeepingEngine(model, torch.optim.SGD(model.parameters(), lr=0.1), noise_multiplier=1.0,
                          max_grad_norm=1.0, expected_batch_size=4, loss_fn=per_sample_loss, clipping="none")
