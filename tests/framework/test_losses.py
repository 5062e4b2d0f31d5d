import torch
import pytest

from framework.losses import (bt_reward_loss, dpo_loss, ipo_loss, mpo_loss, ompo_loss, rloo_loss, sequence_logprob,
                             sft_loss, spin_loss, sppo_loss, token_logprobs)


def test_mpo_loss_by_hand():
    """logp = (−1.0, −2.0, −0.5), logp_old = (−1.2, −1.5, −0.5), Q̂ = (0.75, 0.25, 0.5), b = ½, η = 2.

    ρ = (0.2, −0.5, 0.0); η(Q̂ − b) = (0.5, −0.5, 0.0);
    ℓ = ((0.2 − 0.5)², (−0.5 + 0.5)², 0²) = (0.09, 0, 0).
    """
    out = mpo_loss(logp=torch.tensor([-1.0, -2.0, -0.5]), logp_old=torch.tensor([-1.2, -1.5, -0.5]),
                   q_hat=torch.tensor([0.75, 0.25, 0.5]), baseline=0.5, eta=2.0)
    torch.testing.assert_close(out, torch.tensor([0.09, 0.0, 0.0]))


def test_mpo_loss_minimiser_is_the_mirror_descent_target():
    """Minimising over free logits of one state gives π ∝ π_t·exp(η(Q̂ − b)) up to normalisation."""
    torch.manual_seed(0)
    logits_old = torch.randn(4)
    logp_old = torch.log_softmax(logits_old, 0)
    q = torch.tensor([0.9, 0.4, 0.5, 0.2])
    eta = 1.5
    free = torch.zeros(4, requires_grad=True)  # log π_θ(a) as free parameters
    opt = torch.optim.LBFGS([free], max_iter=200)

    def closure():
        opt.zero_grad()
        loss = mpo_loss(logp=free, logp_old=logp_old, q_hat=q, baseline=0.5, eta=eta).sum()
        loss.backward()
        return loss

    opt.step(closure)
    target = torch.softmax(logp_old + eta * q, 0)
    torch.testing.assert_close(torch.softmax(free.detach(), 0), target, atol=1e-5, rtol=1e-5)


def test_mpo_loss_with_a_kl_penalty_by_hand():
    """As above with logp_ref = (−1.0, −1.5, −1.5), β = 0.1: log π_t − log π_ref = (−0.2, 0, 1);
    target η(Q̂ − b − β(log π_t − log π_ref)) = 2·(0.27, −0.25, −0.1) = (0.54, −0.5, −0.2);
    ℓ = ((0.2 − 0.54)², 0², (0 + 0.2)²) = (0.1156, 0, 0.04)."""
    args = dict(logp=torch.tensor([-1.0, -2.0, -0.5]), logp_old=torch.tensor([-1.2, -1.5, -0.5]),
                q_hat=torch.tensor([0.75, 0.25, 0.5]), baseline=0.5, eta=2.0)
    out = mpo_loss(**args, kl_coef=0.1, logp_ref=torch.tensor([-1.0, -1.5, -1.5]))
    torch.testing.assert_close(out, torch.tensor([0.1156, 0.0, 0.04]))
    with pytest.raises(ValueError, match="logp_ref"):
        mpo_loss(**args, kl_coef=0.1)


def test_mpo_loss_minimiser_with_a_kl_penalty_is_the_magnetic_step():
    """Minimising over free logits gives π ∝ π_t^(1−ηβ) π_ref^(ηβ) exp(η(Q̂ − b))."""
    torch.manual_seed(0)
    logp_old, logp_ref = torch.log_softmax(torch.randn(4), 0), torch.log_softmax(torch.randn(4), 0)
    q, eta, beta = torch.tensor([0.9, 0.4, 0.5, 0.2]), 1.5, 0.3
    free = torch.zeros(4, requires_grad=True)
    opt = torch.optim.LBFGS([free], max_iter=200)

    def closure():
        opt.zero_grad()
        loss = mpo_loss(logp=free, logp_old=logp_old, q_hat=q, baseline=0.5, eta=eta, kl_coef=beta,
                        logp_ref=logp_ref).sum()
        loss.backward()
        return loss

    opt.step(closure)
    target = torch.softmax((1 - eta * beta) * logp_old + eta * beta * logp_ref + eta * q, 0)
    torch.testing.assert_close(torch.softmax(free.detach(), 0), target, atol=1e-5, rtol=1e-5)


def test_token_logprobs_against_a_loop():
    torch.manual_seed(1)
    logits, ids = torch.randn(2, 5, 7), torch.randint(0, 7, (2, 5))
    out = token_logprobs(logits=logits, input_ids=ids)
    for b in range(2):
        assert out[b, 0] == 0
        for t in range(1, 5):
            expected = torch.log_softmax(logits[b, t - 1], 0)[ids[b, t]]
            assert out[b, t].item() == pytest.approx(expected.item(), abs=1e-6)


def test_masked_sums_ignore_tokens_outside_the_mask():
    torch.manual_seed(2)
    logp = torch.randn(3, 6)
    mask = torch.tensor([[0, 0, 1, 1, 0, 0], [0, 1, 1, 1, 1, 0], [0, 0, 0, 0, 1, 1]], dtype=torch.float32)
    changed = logp.clone()
    changed[mask == 0] = torch.randn(int((mask == 0).sum()))
    torch.testing.assert_close(sequence_logprob(token_logp=logp, mask=mask),
                               sequence_logprob(token_logp=changed, mask=mask))
    torch.testing.assert_close(sft_loss(token_logp=logp, mask=mask), sft_loss(token_logp=changed, mask=mask))
    # sft_loss is the mean negative log-likelihood over the masked tokens
    assert sft_loss(token_logp=logp, mask=mask)[0].item() == pytest.approx(-(logp[0, 2] + logp[0, 3]).item() / 2)


def test_ompo_loss_by_hand():
    """logp = (−1.0, −2.0), logp_old = (−1.2, −1.5), Q̂ = (.75, .25), Q̂_prev = (.5, .5), τ = .1, η = 2, b = ½.

    targets η(2Q̂ − Q̂_prev − τ − b) = 2(1.5 − 1.1), 2(0.5 − 1.1) = (0.8, −1.2); ρ = (0.2, −0.5);
    ℓ = ((0.2 − 0.8)², (−0.5 + 1.2)²) = (0.36, 0.49).
    """
    out = ompo_loss(logp=torch.tensor([-1.0, -2.0]), logp_old=torch.tensor([-1.2, -1.5]),
                    q_hat=torch.tensor([0.75, 0.25]), q_hat_prev=torch.tensor([0.5, 0.5]), tau=0.1, eta=2.0)
    torch.testing.assert_close(out, torch.tensor([0.36, 0.49]))


def test_ompo_without_a_hint_change_is_mpo():
    torch.manual_seed(3)
    logp, old, q = torch.randn(5), torch.randn(5), torch.rand(5)
    torch.testing.assert_close(ompo_loss(logp=logp, logp_old=old, q_hat=q, q_hat_prev=q, tau=0.0, eta=3.0),
                               mpo_loss(logp=logp, logp_old=old, q_hat=q, baseline=0.5, eta=3.0))


def test_sppo_loss_by_hand():
    """log π(y) = −3.0, log π_t(y) = −2.5, P̂(y ≻ π_t) = .8, η = 2: ρ = −0.5, target 0.6, ℓ = 1.1² = 1.21."""
    out = sppo_loss(logp=torch.tensor([-3.0]), logp_old=torch.tensor([-2.5]), win_rate=torch.tensor([0.8]), eta=2.0)
    torch.testing.assert_close(out, torch.tensor([1.21]))


def test_dpo_and_ipo_losses_by_hand():
    """Pair 1: chosen −1.0 (ref −1.5), rejected −2.0 (ref −1.5): margin h = 0.5 − (−0.5) = 1.0.
    Pair 2: every log-prob equal to its reference: h = 0.

    DPO, β = .5: −log σ(0.5) = log(1 + e^−0.5) = 0.4740770, and log 2 = 0.6931472.
    IPO, τ = .25: (h − 1/(2τ))² = (1 − 2)² = 1 and (0 − 2)² = 4.
    """
    pairs = dict(chosen_logp=torch.tensor([-1.0, -0.7]), rejected_logp=torch.tensor([-2.0, -0.9]),
                 ref_chosen_logp=torch.tensor([-1.5, -0.7]), ref_rejected_logp=torch.tensor([-1.5, -0.9]))
    torch.testing.assert_close(dpo_loss(**pairs, beta=0.5), torch.tensor([0.4740770, 0.6931472]))
    torch.testing.assert_close(ipo_loss(**pairs, tau=0.25), torch.tensor([1.0, 4.0]))


def test_dpo_gradient_raises_the_chosen_and_lowers_the_rejected():
    chosen, rejected = torch.tensor([-1.0], requires_grad=True), torch.tensor([-1.0], requires_grad=True)
    dpo_loss(chosen_logp=chosen, rejected_logp=rejected, ref_chosen_logp=torch.tensor([-1.0]),
             ref_rejected_logp=torch.tensor([-1.0]), beta=0.5).sum().backward()
    # d/dh −log σ(βh) at h = 0 is −β/2: descent raises log π(y_w) and lowers log π(y_l)
    assert chosen.grad.item() == pytest.approx(-0.25) and rejected.grad.item() == pytest.approx(0.25)


def test_spin_loss_by_hand():
    """demo: log π = −1.0, ref −1.5 → ρ = 0.5; generation: −2.0, ref −1.8 → ρ = −0.2; β = 2:
    z = 2 (0.5 + 0.2) = 1.4; logistic −log σ(1.4) = log(1 + e^−1.4) = 0.2204174; linear −1.4.
    """
    pair = dict(real_logp=torch.tensor([-1.0]), gen_logp=torch.tensor([-2.0]),
                ref_real_logp=torch.tensor([-1.5]), ref_gen_logp=torch.tensor([-1.8]), beta=2.0)
    torch.testing.assert_close(spin_loss(**pair, link="logistic"), torch.tensor([0.2204174]))
    torch.testing.assert_close(spin_loss(**pair, link="linear"), torch.tensor([-1.4]))
    # the logistic link is DPO's loss with the demonstration as the chosen response
    torch.testing.assert_close(spin_loss(**pair), dpo_loss(chosen_logp=pair["real_logp"], rejected_logp=pair["gen_logp"],
                                                           ref_chosen_logp=pair["ref_real_logp"],
                                                           ref_rejected_logp=pair["ref_gen_logp"], beta=2.0))


def test_bt_reward_loss_by_hand():
    """r_c − r_r = 1: log(1 + e^−1) = 0.3132617; equal rewards: log 2."""
    out = bt_reward_loss(chosen_reward=torch.tensor([1.0, 0.3]), rejected_reward=torch.tensor([0.0, 0.3]))
    torch.testing.assert_close(out, torch.tensor([0.3132617, 0.6931472]))


def test_rloo_loss_by_hand():
    """Prompt 0: R = (1, 0, 2) → baselines (1, 1.5, 0.5), A = (0, −1.5, 1.5); prompt 1: R = (3, 1) → A = (2, −2).
    ℓ = −A·log π with log π = (−1, −2, −3, −0.5, −1): (0, −3, 4.5, 1, −2)."""
    logp = torch.tensor([-1.0, -2.0, -3.0, -0.5, -1.0], requires_grad=True)
    out = rloo_loss(logp=logp, reward=torch.tensor([1.0, 0.0, 2.0, 3.0, 1.0]), group=torch.tensor([0, 0, 0, 1, 1]))
    torch.testing.assert_close(out, torch.tensor([0.0, -3.0, 4.5, 1.0, -2.0]))
    out.sum().backward()  # the advantage is a constant: d ℓ / d log π = −A
    torch.testing.assert_close(logp.grad, torch.tensor([0.0, 1.5, -1.5, -2.0, 2.0]))
    with pytest.raises(ValueError, match="at least 2 samples"):
        rloo_loss(logp=logp[:1], reward=torch.tensor([1.0]), group=torch.tensor([0]))
