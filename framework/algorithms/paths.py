"""Whole conversations as actions: grouping, win rates and batch rows shared by SPPO, DPO and IPO.

With ``rollout = "paths"`` the generator samples K whole conversations per prompt (sample k is
path k at every turn). The judge compares the paths' answers turn by turn, and the
whole-conversation preference is the mean over turns:

    P(y^k ≻ y^k') = (1/H) Σ_h P(a^k_h ≻ a^k'_h),    Q̂_k = (1/K) Σ_k' P(y^k ≻ y^k')  (self-pair ½).
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from framework.errors import InputError
from framework.records import Comparison, Rollout


def paths(rollouts: list[Rollout], comparisons: list[Comparison]):
    """Per prompt: its K paths (each a turn-ordered list of rollouts) and the (K, K) path win matrix."""
    by_prompt: dict = defaultdict(lambda: defaultdict(list))
    for r in rollouts:
        by_prompt[(r.conversation_id, r.iteration)][r.sample].append(r)
    pair_probs: dict = defaultdict(list)
    for c in comparisons:
        if c.opponent == "self":
            pair_probs[(c.conversation_id, c.iteration, c.a, c.b)].append(c.probability)
    out = []
    for (cid, it), samples in by_prompt.items():
        ks = sorted(samples)
        W = np.full((len(ks), len(ks)), 0.5)
        for i, a in enumerate(ks):
            for j, b in enumerate(ks):
                if i < j:
                    probs = pair_probs.get((cid, it, a, b))
                    if not probs:
                        raise InputError(f"conversation {cid}: no comparison between paths {a} and {b}")
                    W[i, j] = float(np.mean(probs))
                    W[j, i] = 1.0 - W[i, j]
        out.append(([sorted(samples[k], key=lambda r: r.turn) for k in ks], W))
    return out


class Rows:
    """Accumulates collate() arguments for multi-row examples."""

    def __init__(self):
        self.prompts, self.responses, self.logp_old, self.versions = [], [], [], []
        self.q_hat, self.example, self.side = [], [], []
        self.examples = 0

    def add(self, rollouts: list[Rollout], *, side: int = 0, q: float = 0.0) -> None:
        for r in rollouts:
            self.prompts.append(r.prompt_ids)
            self.responses.append(r.response_ids)
            self.logp_old.append(r.logprob)
            self.versions.append(r.policy_version)
            self.q_hat.append(q)
            self.example.append(self.examples)
            self.side.append(side)

    def next_example(self) -> None:
        self.examples += 1

    def collate(self, *, pad_id: int, baseline: float = 0.5):
        from framework.algorithms import collate

        return collate(self.prompts, self.responses, pad_id=pad_id, logp_old=self.logp_old, q_hat=self.q_hat,
                       baseline=[baseline] * len(self.prompts), policy_version=self.versions,
                       example=self.example, side=self.side)
