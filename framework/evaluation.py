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
