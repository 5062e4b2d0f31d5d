"""OMPO: MPO with optimism (optimistic online gradient descent; DESIGN §3).

The target of answer a^k at state s is η (2 Q̂⁽ᵗ⁾_k − Q̂⁽ᵗ⁻¹⁾_k − τ − ½) where

    Q̂⁽ᵗ⁾_k   = (1/K) Σ_k' P(a^k ≻ a^k')            (this iterate's answers, as in MPO)
    Q̂⁽ᵗ⁻¹⁾_k = (1/K') Σ_j P(a^k ≻ a_prev^j)         (the previous iterate's answers at s)

The previous iterate's answers are OMPO's memory (``OptimisticCache``), saved with every
checkpoint; each of this iteration's answers is judged against them too, at this iteration's
state. A state is keyed as the paper's state at this level: the conversation's user turns so far
(its turn), not the earlier answers the policy happened to sample — those differ from iteration
to iteration, so an exact key missed 30–47% of the states. Where the previous iteration did not
play the state (the first iteration, or fresh prompts) Q̂⁽ᵗ⁻¹⁾ = Q̂⁽ᵗ⁾, i.e. the MPO target; a
fixed prompt set (``train.fixed_prompts=true``, as in the paper) makes every state recur
(metric ``optimistic_hit_rate``).

The optimistic recursion assumes consecutive iterates: iteration t's answers from π_t, the
cache's from π_{t−1}. Run OMPO with ``pipeline.mode=sync`` (as the comparisons do); with async
generation the data lags one version and the hint 2Q̂ᵗ − Q̂ᵗ⁻¹ mixes π_{t−1} and π_{t−2}
(``alignplay lab`` with ``lab.staleness=1`` shows what that costs on the exact game).
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from framework.algorithms import mpo
from framework.algorithms.hooks import Algorithm
from framework.losses import ompo_loss, ompo_target
from framework.records import Comparison, Pair, Rollout, TrainBatch

CACHE_FILE = "optimistic_cache.json"


def state_key(messages: str) -> str:
    """The cache's key of a state (a conversation as JSON): its user turns so far."""
    return json.dumps([m["content"] for m in json.loads(messages) if m["role"] == "user"])


class OptimisticCache:
    """OMPO's memory: the previous iterate's answers per state (``state_key`` → answer texts)."""

    def __init__(self, answers: dict[str, list[str]] | None = None):
        self.answers = answers or {}

    def opponents(self, rollouts: list[Rollout]) -> list[tuple[Rollout, int, str]]:
        """(answer, index, cached answer) for every answer at a state the previous iterate played."""
        keys = {m: state_key(m) for m in {r.messages for r in rollouts}}
        return [(r, j, text) for r in rollouts for j, text in enumerate(self.answers.get(keys[r.messages], ()))]

    def pairs(self, fresh: list[Rollout]) -> list[Pair]:
        """Every answer against the previous iterate's answers cached for its state."""
        return [Pair(r.conversation_id, r.turn, r.sample, j, r.messages, r.response, text, opponent="previous")
                for r, j, text in self.opponents(fresh)]

    def observe(self, fresh: list[Rollout], comparisons: list[Comparison]) -> dict:
        """``optimistic_hit_rate``: the share of this iteration's states whose answers met the
        previous iterate's (the rest took the MPO target; ``optimistic_states`` is its former
        name); then this iteration's answers become the previous iterate's."""
        states = {(r.conversation_id, r.turn) for r in fresh}
        seen = {(c.conversation_id, c.turn) for c in comparisons if c.opponent == "previous"}
        self.replace(fresh)
        rate = len(seen & states) / len(states) if states else 0.0
        return {"optimistic_hit_rate": rate, "optimistic_states": rate}

    def replace(self, rollouts: list[Rollout]) -> None:
        """Remember this iteration's answers; they are the previous iterate's at the next one."""
        answers: dict = defaultdict(list)
        for r in sorted(rollouts, key=lambda r: (state_key(r.messages), r.conversation_id, r.sample)):
            answers[state_key(r.messages)].append(r.response)
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


def target(*, batch: TrainBatch, tau: float = 0.0, kl_coef: float = 0.0):
    return batch.first_of_example(ompo_target(q_hat=batch.q_hat, q_hat_prev=batch.q_hat_prev, tau=tau,
                                              baseline=batch.baseline))


OMPO = Algorithm(name="ompo", build_batch=build_batch, loss=loss, plan=mpo.tree, target=target, memory=OptimisticCache,
                 accepts=("round_reset",))
