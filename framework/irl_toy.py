"""The toy example of reward learning from demonstrations (one state, a few actions; DESIGN §3).

Demonstrations all pick action d. SFT maximises log π(d), whose optimum puts all mass on d.
Inverse RL learns a reward r and the KL-regularised policy it induces,

    π_r(a) ∝ π_ref(a) exp(r(a)/β),

by maximising the demonstrations' log-likelihood under π_r minus an L2 penalty on the reward:

    max_r  log π_r(d) − (λ/2) ‖r‖²   ⇔   r = (e_d − π_r) / (β λ)   at the optimum,

so the policy moves towards d only as far as the regularised reward allows: it keeps mass on
the other actions, in proportion to π_ref. SFT's solution is the λ → 0 limit.
"""

from __future__ import annotations

import numpy as np


def sft_policy(n_actions: int, demo: int, *, steps: int = 2000, lr: float = 0.5) -> np.ndarray:
    """Gradient ascent on log π(demo) from uniform logits: the mass on ``demo`` tends to 1."""
    logits = np.zeros(n_actions)
    for _ in range(steps):
        pi = np.exp(logits - logits.max())
        pi /= pi.sum()
        logits += lr * (np.eye(n_actions)[demo] - pi)  # ∇ log π(d) = e_d − π
    pi = np.exp(logits - logits.max())
    return pi / pi.sum()


def irl_policy(reference: np.ndarray, demo: int, *, beta: float, lam: float, iters: int = 100_000,
               tol: float = 1e-12) -> tuple[np.ndarray, np.ndarray]:
    """(π_r, r) maximising log π_r(demo) − (λ/2)‖r‖² with π_r ∝ π_ref exp(r/β) (concave in r)."""
    reference = np.asarray(reference, dtype=float)
    r = np.zeros_like(reference)
    for _ in range(iters):
        logits = np.log(reference) + r / beta
        pi = np.exp(logits - logits.max())
        pi /= pi.sum()
        grad = (np.eye(len(reference))[demo] - pi) / beta - lam * r
        r += grad / (lam + 1.0 / beta**2)  # the objective's curvature is at most λ + 1/β²
        if np.abs(grad).max() < tol:
            break
    logits = np.log(reference) + r / beta
    pi = np.exp(logits - logits.max())
    return pi / pi.sum(), r
