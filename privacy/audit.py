"""One-run privacy auditing (Steinke, Nasr & Jagielski, "Privacy Auditing with One (1) Training
Run", NeurIPS 2023).

m canaries, each included in training independently with probability ½. After training the
auditor scores every canary (higher = looks more like a member), guesses "in" for the k₊ highest
and "out" for the k₋ lowest, abstains on the rest, and counts v correct guesses out of r = k₊ + k₋.
Under (ε, δ)-DP, v is (up to a δ term) stochastically dominated by Binomial(r, e^ε / (1 + e^ε)),
so every ε whose p-value for ≥ v correct is below 1 − confidence is rejected: the largest such ε
is an empirical lower bound on the ε the training run really satisfies.
"""

from __future__ import annotations

import math

import numpy as np


def p_value(*, m: int, r: int, v: int, eps: float, delta: float) -> float:
    """P[≥ v correct of r guesses] under (ε, δ)-DP with m canaries (the paper's Algorithm 1 bound)."""
    from scipy.stats import binom

    q = 1 / (1 + math.exp(-eps))
    beta = float(binom.sf(v - 1, r, q))  # P[Bin(r, q) ≥ v]
    alpha, total = 0.0, 0.0
    for i in range(1, v + 1):
        total += float(binom.pmf(v - i, r, q))
        alpha = max(alpha, total / i)
    return min(1.0, beta + alpha * delta * 2 * m)


def epsilon_lower_bound(*, m: int, r: int, v: int, delta: float, confidence: float = 0.95) -> float:
    """The largest ε rejected at ``confidence`` given v correct of r guesses (0 if none is)."""
    if r == 0 or p_value(m=m, r=r, v=v, eps=0.0, delta=delta) > 1 - confidence:
        return 0.0
    lo, hi = 0.0, 1.0
    while p_value(m=m, r=r, v=v, eps=hi, delta=delta) <= 1 - confidence and hi < 100:
        lo, hi = hi, 2 * hi
    for _ in range(60):  # p-value increases with ε: bisect the crossing
        mid = (lo + hi) / 2
        if p_value(m=m, r=r, v=v, eps=mid, delta=delta) <= 1 - confidence:
            lo = mid
        else:
            hi = mid
    return lo


def audit(scores: np.ndarray, included: np.ndarray, *, delta: float, guesses: int | None = None,
          confidence: float = 0.95) -> dict:
    """Guess the ``guesses`` top-scored canaries "in" and as many bottom-scored "out".

    Args:
        scores: (m,) membership scores, higher = more likely trained on (e.g. −loss).
        included: (m,) booleans, the canaries' coins.
        guesses: k₊ = k₋ (default m // 10, fixed in advance: choosing it after looking at the
            scores would invalidate the bound).
    """
    scores, included = np.asarray(scores, dtype=float), np.asarray(included, dtype=bool)
    m = len(scores)
    k = max(1, m // 10) if guesses is None else guesses
    if 2 * k > m:
        raise ValueError(f"{2 * k} guesses need at least as many canaries, got {m}")
    order = np.argsort(-scores, kind="stable")
    correct = int(included[order[:k]].sum() + (~included[order[m - k:]]).sum())
    return {"canaries": m, "guesses": 2 * k, "correct": correct,
            "eps_lower": epsilon_lower_bound(m=m, r=2 * k, v=correct, delta=delta, confidence=confidence)}
