"""OMPO: MPO with optimism (optimistic online gradient descent; DESIGN §3).

The target of answer a^k at state s is η (2 Q̂⁽ᵗ⁾_k − Q̂⁽ᵗ⁻¹⁾_k − τ − ½) where

    Q̂⁽ᵗ⁾_k   = (1/K) Σ_k' P(a^k ≻ a^k')            (this iterate's answers, as in MPO)
    Q̂⁽ᵗ⁻¹⁾_k = (1/K') Σ_j P(a^k ≻ a_prev^j)         (the previous iterate's answers at s)

The previous iterate's answers are OMPO's memory (``OptimisticCache``): the answers of the
previous iteration, keyed by the exact state, saved with every checkpoint; each of this
iteration's answers is judged against them too. Where a state was
not visited by the previous iteration (the first iteration, or a later turn reached by a
different earlier answer) Q̂⁽ᵗ⁻¹⁾ = Q̂⁽ᵗ⁾, i.e. the MPO target. A fixed prompt set
(``train.fixed_prompts=true``, as in the paper) makes the states recur.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from framework.algorithms import mpo
from framework.algorithms.hooks import Algorithm
from framework.losses import ompo_loss
from framework.records import Comparison, Pair, Rollout, TrainBatch

CACHE_FILE = "optimistic_cache.json"


class OptimisticCache:
    """OMPO's memory: the previous iterate's answers per state (state JSON → answer texts)."""

    def __init__(self, answers: dict[str, list[str]] | None = None):
        self.answers = answers or {}

    def opponents(self, rollouts: list[Rollout]) -> list[tuple[Rollout, int, str]]:
        """(answer, index, cached answer) for every answer at a state the previous iterate visited."""
        return [(r, j, text) for r in rollouts for j, text in enumerate(self.answers.get(r.messages, ()))]

    def pairs(self, fresh: list[Rollout]) -> list[Pair]:
        """Every answer against the previous iterate's answers cached for its state."""
        return [Pair(r.conversation_id, r.turn, r.sample, j, r.messages, r.response, text, opponent="previous")
                for r, j, text in self.opponents(fresh)]

    def observe(self, fresh: list[Rollout], comparisons: list[Comparison]) -> dict:
        """``optimistic_states``: the share of this iteration's states the previous iterate also
        visited; then this iteration's answers become the previous iterate's."""
        states = {(r.conversation_id, r.turn) for r in fresh}
        seen = {(c.conversation_id, c.turn) for c in comparisons if c.opponent == "previous"}
        self.replace(fresh)
        return {"optimistic_states": len(seen) / len(states) if states else 0.0}

    def replace(self, rollouts: list[Rollout]) -> None:
        """Remember this iteration's answers; they are the previous iterate's at the next one."""
        answers: dict = defaultdict(list)
        for r in sorted(rollouts, key=lambda r: (r.messages, r.sample)):
            answers[r.messages].append(r.response)
        self.answers = dict(answers)

    def save(self, directory: Path) -> None:
        (Path(directory) / CACHE_FILE).write_text(json.dumps(self.answers))

    @classmethod
    def load(cls, directory: Path) -> "OptimisticCache":
        path = Path(directory) / CACHE_FILE
        return cls(json.loads(path.read_text()) if path.exists() else {})


def previous_q(rollouts: list[Rollout], comparisons: list[Comparison]) -> dict:
    """(conversation, turn, iteration, sample) → Q̂⁽ᵗ⁻¹⁾ from the "previous" comparisons."""
    wins: dict = defaultdict(list)
    for c in comparisons:
        if c.opponent == "previous":
            wins[(c.conversation_id, c.turn, c.iteration, c.a)].append(c.probability)
    return {key: float(np.mean(p)) for key, p in wins.items()}


def build_batch(rollouts: list[Rollout], comparisons: list[Comparison], *, keep: str = "all",
                pad_id: int) -> TrainBatch:
    return mpo.build_batch(rollouts, comparisons, keep=keep, pad_id=pad_id,
                           q_prev=previous_q(rollouts, comparisons))


def loss(*, batch: TrainBatch, logp, eta: float, tau: float = 0.0, link: str = "logistic"):
    return ompo_loss(logp=logp, logp_old=batch.logp_old, q_hat=batch.q_hat, q_hat_prev=batch.q_hat_prev,
                     tau=tau, eta=eta, baseline=batch.baseline)


OMPO = Algorithm(name="ompo", build_batch=build_batch, loss=loss, plan=mpo.tree, memory=OptimisticCache)
