import torch
import pytest

from framework.losses import mpo_loss, sequence_logprob, sft_loss, token_logprobs


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
