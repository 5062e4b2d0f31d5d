"""Pure loss functions over tensors (DESIGN §3). Keyword-only; one loss per example.

Notation: ρ_θ(y) = log π_θ(y|s) − log π_t(y|s), log-probs summed over the response tokens;
π_t is the policy that generated the samples. η is the mirror-descent step size (β = 1/η).
"""

from __future__ import annotations

import torch


def token_logprobs(*, logits: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """log π(x_{t+1} | x_{≤t}) for every position.

    Args:
        logits: (B, T, V) next-token logits.
        input_ids: (B, T) the tokens.
    Returns:
        (B, T) where entry t is the log-prob of token t given tokens < t (entry 0 is 0).
    """
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    picked = logp.gather(-1, input_ids[:, 1:, None]).squeeze(-1)
    return torch.nn.functional.pad(picked, (1, 0))


def sequence_logprob(*, token_logp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Σ_t mask·log π over the response tokens. (B, T), (B, T) → (B,)."""
    return (token_logp * mask).sum(dim=-1)


def sft_loss(*, token_logp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Negative log-likelihood per example, averaged over its masked (response) tokens. → (B,)."""
    return -(token_logp * mask).sum(dim=-1) / mask.sum(dim=-1).clamp(min=1)


def lm_loss(*, logits: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """The pre-training loss: ``sft_loss`` over every token after the first, i.e. each sequence's
    mean next-token negative log-likelihood. (B, T, V), (B, T) → (B,)."""
    mask = torch.ones(input_ids.shape, dtype=torch.float32, device=input_ids.device)
    mask[:, 0] = 0.0
    return sft_loss(token_logp=token_logprobs(logits=logits, input_ids=input_ids), mask=mask)


def mpo_loss(*, logp: torch.Tensor, logp_old: torch.Tensor, q_hat: torch.Tensor,
             baseline: torch.Tensor | float, eta: float, kl_coef: float = 0.0,
             logp_ref: torch.Tensor | None = None) -> torch.Tensor:
    """MPO's natural-actor-critic regression (Wu et al. 2025, the π_{t+1} ∝ π_t exp(η Q) step):

        ℓ = (ρ_θ(a) − η (Q̂(s, a) − b − β (log π_t(a|s) − log π_ref(a|s))))²,
        ρ_θ(a) = log π_θ(a|s) − log π_t(a|s).

    Its minimiser over a policy class that contains the target is π_t·exp(η (Q̂ − b)) for β = 0
    (the paper's MPO), and π_t^{1−ηβ} π_ref^{ηβ} exp(η (Q̂ − b)) with a KL penalty β toward π_ref:
    mirror descent on the KL-regularised game ("magnetic" mirror descent, Sokota et al. 2023),
    whose last iterate converges to the regularised equilibrium π ∝ π_ref exp(Q/β) where the
    plain update circles a non-transitive preference's equilibrium.

    Args:
        logp: (B,) log π_θ(a|s), summed over response tokens (differentiable).
        logp_old: (B,) log π_t(a|s) of the generating policy.
        q_hat: (B,) the Q estimate, e.g. the one-step win rate (1/K) Σ_k' P(a ≻ a_k').
        baseline: (B,) or scalar b: ½ for one-step Q, (H − h + 1)/2 for the full Q.
        eta: step size η > 0.
        kl_coef: β ≥ 0, with ηβ < 1.
        logp_ref: (B,) log π_ref(a|s); required when β > 0.
    Returns:
        (B,) per-example losses.
    """
    return (logp - logp_old - eta * mpo_target(q_hat=q_hat, baseline=baseline, kl_coef=kl_coef,
                                               logp_old=logp_old, logp_ref=logp_ref)) ** 2


def mpo_target(*, q_hat: torch.Tensor, baseline: torch.Tensor | float, kl_coef: float = 0.0,
               logp_old: torch.Tensor | None = None, logp_ref: torch.Tensor | None = None) -> torch.Tensor:
    """What MPO regresses ρ onto, per unit of η: Q̂ − b − β (log π_t − log π_ref). (B,)"""
    target = q_hat - baseline
    if kl_coef:
        if logp_ref is None:
            raise ValueError("mpo_loss: kl_coef > 0 needs logp_ref")
        target = target - kl_coef * (logp_old - logp_ref)
    return target


def ompo_loss(*, logp: torch.Tensor, logp_old: torch.Tensor, q_hat: torch.Tensor,
              q_hat_prev: torch.Tensor, tau: float, eta: float,
              baseline: torch.Tensor | float = 0.5) -> torch.Tensor:
    """OMPO's optimistic regression (the OOGD step of Wu et al. 2025):

        ℓ = (ρ_θ(a) − η (2 Q̂⁽ᵗ⁾(s, a) − Q̂⁽ᵗ⁻¹⁾(s, a) − τ − b))².

    Q̂⁽ᵗ⁻¹⁾ is the answer's win rate against the *previous iterate's* answers at the same state;
    with Q̂⁽ᵗ⁻¹⁾ = Q̂⁽ᵗ⁾ and τ = 0 this is ``mpo_loss``. The baseline b (½ for one-step Q) keeps
    the target centred like MPO's; it only shifts log π_θ by a per-state constant.

    Args:
        logp, logp_old: (B,) log π_θ(a|s) (differentiable) and log π_t(a|s) of the sampler.
        q_hat: (B,) Q̂⁽ᵗ⁾, the win rate against this iterate's own answers.
        q_hat_prev: (B,) Q̂⁽ᵗ⁻¹⁾, the win rate against the previous iterate's answers.
        tau: the optimism offset τ (the paper uses 0).
        eta: step size η > 0.
    Returns:
        (B,) per-example losses.
    """
    return (logp - logp_old - eta * ompo_target(q_hat=q_hat, q_hat_prev=q_hat_prev, tau=tau, baseline=baseline)) ** 2


def ompo_target(*, q_hat: torch.Tensor, q_hat_prev: torch.Tensor, tau: float,
                baseline: torch.Tensor | float = 0.5) -> torch.Tensor:
    """What OMPO regresses ρ onto, per unit of η: 2 Q̂⁽ᵗ⁾ − Q̂⁽ᵗ⁻¹⁾ − τ − b. (B,)"""
    return 2 * q_hat - q_hat_prev - tau - baseline


def sppo_loss(*, logp: torch.Tensor, logp_old: torch.Tensor, win_rate: torch.Tensor,
              eta: float) -> torch.Tensor:
    """SPPO (Wu et al. 2024), the H = 1 form of MPO over whole conversations:

        ℓ = (ρ_θ(y) − η (P̂(y ≻ π_t) − ½))²,

    y the whole conversation's assistant turns (log-probs summed over all of them) and P̂ its
    estimated win rate against the current policy's conversations.

    Returns:
        (B,) per-example losses.
    """
    return mpo_loss(logp=logp, logp_old=logp_old, q_hat=win_rate, baseline=0.5, eta=eta)


def _margin(chosen_logp, rejected_logp, ref_chosen_logp, ref_rejected_logp):
    return (chosen_logp - ref_chosen_logp) - (rejected_logp - ref_rejected_logp)


def dpo_loss(*, chosen_logp: torch.Tensor, rejected_logp: torch.Tensor, ref_chosen_logp: torch.Tensor,
             ref_rejected_logp: torch.Tensor, beta: float) -> torch.Tensor:
    """DPO (Rafailov et al. 2023): ℓ = −log σ(β ((log π(y_w) − log π_ref(y_w)) − (log π(y_l) − log π_ref(y_l)))).

    β multiplies the log-ratio: it is 1/η in the mirror-descent notation (η = the step size).

    Args:
        chosen_logp, rejected_logp: (B,) log π_θ of the preferred / dispreferred response.
        ref_chosen_logp, ref_rejected_logp: (B,) the same under the reference policy.
        beta: inverse temperature β > 0.
    Returns:
        (B,) per-pair losses.
    """
    z = beta * _margin(chosen_logp, rejected_logp, ref_chosen_logp, ref_rejected_logp)
    return -torch.nn.functional.logsigmoid(z)


def ipo_loss(*, chosen_logp: torch.Tensor, rejected_logp: torch.Tensor, ref_chosen_logp: torch.Tensor,
             ref_rejected_logp: torch.Tensor, tau: float) -> torch.Tensor:
    """IPO (Azar et al. 2024): ℓ = (h − 1/(2τ))², h the same log-ratio margin as DPO's.

    τ is the KL-regularisation strength (the role of β in DPO); the margin target is 1/(2τ).

    Returns:
        (B,) per-pair losses.
    """
    h = _margin(chosen_logp, rejected_logp, ref_chosen_logp, ref_rejected_logp)
    return (h - 1.0 / (2.0 * tau)) ** 2


def spin_loss(*, real_logp: torch.Tensor, gen_logp: torch.Tensor, ref_real_logp: torch.Tensor,
              ref_gen_logp: torch.Tensor, beta: float, link: str = "logistic") -> torch.Tensor:
    """SPIN / IRFT (Chen et al. 2024; Li et al. 2024): contrast a demonstration with the model's
    own generation for the same prompt, both measured against the reference (the previous iterate):

        z = β ((log π(y_demo) − log π_ref(y_demo)) − (log π(y_gen) − log π_ref(y_gen)))
        logistic: ℓ = −log σ(z)        linear: ℓ = −z   (the raw IRL gradient direction)

    Args:
        real_logp, gen_logp: (B,) log π_θ of the demonstration and of the generation (differentiable).
        ref_real_logp, ref_gen_logp: (B,) the same under the reference policy.
        beta: β > 0 (1/η in the mirror-descent notation).
        link: ``logistic`` or ``linear``.
    Returns:
        (B,) per-pair losses.
    """
    z = beta * _margin(real_logp, gen_logp, ref_real_logp, ref_gen_logp)
    if link == "logistic":
        return -torch.nn.functional.logsigmoid(z)
    if link == "linear":
        return -z
    raise ValueError(f"link must be 'logistic' or 'linear', got {link!r}")


def bt_reward_loss(*, chosen_reward: torch.Tensor, rejected_reward: torch.Tensor) -> torch.Tensor:
    """Bradley–Terry loss of a reward model: ℓ = −log σ(r(y_chosen) − r(y_rejected)). → (B,)."""
    return -torch.nn.functional.logsigmoid(chosen_reward - rejected_reward)


def rloo_loss(*, logp: torch.Tensor, reward: torch.Tensor, group: torch.Tensor) -> torch.Tensor:
    """REINFORCE with a leave-one-out baseline (Ahmadian et al. 2024): for K samples of a prompt,

        A_i = R_i − (1/(K − 1)) Σ_{j≠i} R_j,    ℓ_i = −A_i · log π_θ(y_i)

    (the advantage is a constant: no gradient flows through it). A KL penalty to a reference is
    folded into ``reward`` by the caller (R = r − κ (log π_t − log π_ref)).

    Args:
        logp: (B,) log π_θ(y_i) (differentiable).
        reward: (B,) shaped rewards R_i.
        group: (B,) prompt index of each sample; every group needs K ≥ 2 samples.
    Returns:
        (B,) per-sample losses.
    """
    _, inverse, counts = torch.unique(group, return_inverse=True, return_counts=True)
    if (counts < 2).any():
        raise ValueError("rloo_loss: every prompt needs at least 2 samples for a leave-one-out baseline")
    sums = torch.zeros(len(counts), dtype=reward.dtype).index_add(0, inverse, reward)
    k = counts[inverse].to(reward.dtype)
    advantage = (reward - (sums[inverse] - reward) / (k - 1)).detach()
    return -advantage * logp
