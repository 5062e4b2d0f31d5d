"""Held-out evaluation maths: win rate against the warm start and class-based exploitability."""

from __future__ import annotations

import numpy as np


def win_rate(probabilities: np.ndarray) -> tuple[float, float]:
    """Mean P(current ≻ init) and its 95% half-width, states as the unit of sampling.

    Args:
        probabilities: (S, M) judge probabilities, M paired samples at each of S states; NaN where
            the judge dropped a pair (a state with none left is left out).
    """
    probabilities = np.asarray(probabilities, dtype=float)
    judged = ~np.isnan(probabilities)
    per_state = np.nansum(probabilities, axis=1)[judged.any(axis=1)] / judged.sum(axis=1)[judged.any(axis=1)]
    if not len(per_state):
        return float("nan"), float("nan")
    half = 1.96 * per_state.std(ddof=1) / np.sqrt(len(per_state)) if len(per_state) > 1 else float("nan")
    return float(per_state.mean()), float(half)


def class_counts(task, states: list, responses: list[list[str]]) -> np.ndarray:
    """(S, C) how many of each state's sampled responses fall in each judge class."""
    counts = np.zeros((len(states), len(task.class_names)))
    for i, (state, group) in enumerate(zip(states, responses)):
        for text in group:
            counts[i, task.classify(state, text)] += 1
    return counts


#: The kinds of answer a task with response classes tells apart: one it cannot read
#: (``task.malformed_classes``), a right one (``task.correct_classes``), and a wrong one.
ANSWER_KINDS = ("correct", "wrong_number", "malformed")


def answer_kinds(task, states: list, responses: list[list[str]]) -> dict[str, float]:
    """The share of ``responses`` (a list per state) of each of ``ANSWER_KINDS``."""
    counts = class_counts(task, states, responses).sum(axis=0)
    malformed, correct = counts[task.malformed_classes].sum(), counts[task.correct_classes].sum()
    total = counts.sum()
    return {"correct": float(correct / total), "wrong_number": float((total - correct - malformed) / total),
            "malformed": float(malformed / total)}


def exploitability_bias(task, distribution, samples: int, *, draws: int = 20_000, seed: int = 0) -> float:
    """How far the per-state estimate from ``samples`` draws overstates the exploitability of a
    class ``distribution`` (C,), on average (Monte Carlo over ``draws`` states): the estimate is a
    maximum over a noisy class mix, so it is biased upward, most at an equilibrium (true value 0)."""
    distribution = np.asarray(distribution, dtype=float)
    counts = np.random.default_rng(seed).multinomial(samples, distribution / distribution.sum(), size=draws)
    return float(task.exploitability(counts.astype(float)).mean() - task.exploitability(distribution[None])[0])


def loo_exploitability(P: np.ndarray, class_counts: np.ndarray) -> np.ndarray:
    """(S,) a cross-validated exploitability per state: each sampled answer is played against the
    best response to the state's *other* answers (ties share), and the mean win minus ½.

    The plug-in estimate (``task.exploitability`` of the counts) is a maximum over a noisy class
    mix and overstates; here the best response never sees the answer it is scored on, so the
    estimate is unbiased where a strict best response exists, 0 in expectation at an equilibrium
    (every class in its support wins ½ against it) and errs low only near ties.

    Args:
        P: (C, C) P(class i ≻ class j) of the task's judge.
        class_counts: (S, C) how many of each state's answers fall in each class (≥ 2 per state).
    """
    counts = np.asarray(class_counts, dtype=float)
    n = counts.sum(axis=1)
    if (n < 2).any():
        raise ValueError("loo_exploitability needs at least 2 answers per state")
    values = counts @ P.T  # (S, C): Σ_c' n(c') P(c ≻ c')
    loo = values[:, None, :] - P.T[None, :, :]  # (S, j, c): the same without one answer of class j
    best = np.isclose(loo, loo.max(axis=2, keepdims=True), rtol=0, atol=1e-12)
    win = (best * P.T[None]).sum(axis=2) / best.sum(axis=2)  # (S, j): P(best response ≻ j), ties averaged
    return (counts * win).sum(axis=1) / n - 0.5
