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
    """Negative log-likelihood per example, averaged over its response tokens. → (B,)."""
    return -(token_logp * mask).sum(dim=-1) / mask.sum(dim=-1).clamp(min=1)


def mpo_loss(*, logp: torch.Tensor, logp_old: torch.Tensor, q_hat: torch.Tensor,
             baseline: torch.Tensor | float, eta: float) -> torch.Tensor:
    """MPO's natural-actor-critic regression (Wu et al. 2025, the π_{t+1} ∝ π_t exp(η Q) step):

        ℓ = (ρ_θ(a) − η (Q̂(s, a) − b))²,   ρ_θ(a) = log π_θ(a|s) − log π_t(a|s).

    Its minimiser over a policy class that contains the target is π_t·exp(η (Q̂ − b)).

    Args:
        logp: (B,) log π_θ(a|s), summed over response tokens (differentiable).
        logp_old: (B,) log π_t(a|s) of the generating policy.
        q_hat: (B,) the Q estimate, e.g. the one-step win rate (1/K) Σ_k' P(a ≻ a_k').
        baseline: (B,) or scalar b: ½ for one-step Q, (H − h + 1)/2 for the full Q.
        eta: step size η > 0.
    Returns:
        (B,) per-example losses.
    """
    rho = logp - logp_old
    return (rho - eta * (q_hat - baseline)) ** 2
