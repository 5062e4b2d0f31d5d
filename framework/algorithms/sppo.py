"""SPPO: the H = 1 form of MPO over whole conversations (DESIGN §3), and the whole-conversation
plan it shares with iterative DPO and IPO.

With ``mode = "paths"`` the generator samples K whole conversations per prompt (sample k is path k
at every turn). The judge compares the paths' answers turn by turn, and the whole-conversation
preference is the mean over turns:

    P(y^k ≻ y^k') = (1/H) Σ_h P(a^k_h ≻ a^k'_h),    Q̂_k = (1/K) Σ_k' P(y^k ≻ y^k')  (self-pair ½).

Each path y^k is one action with win rate Q̂_k; ρ_θ(y) sums log-ratios over all its assistant
turns and is regressed onto η (Q̂_k − ½).
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from framework.algorithms.hooks import Algorithm, Source
from framework.algorithms.mpo import SelfPlay, select
from framework.batching import Rows
from framework.errors import InputError
from framework.losses import sppo_loss
from framework.records import Comparison, Rollout, TrainBatch


def whole_conversations(settings, source: Source) -> SelfPlay:
    """K whole conversations per prompt, each continuing with its own answers."""
    return SelfPlay(source, settings.k, "paths")


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


def build_batch(rollouts: list[Rollout], comparisons: list[Comparison], *, keep: str = "all",
                pad_id: int) -> TrainBatch:
    rows = Rows()
    for ps, W in paths(rollouts, comparisons):
        q = W.mean(axis=1)
        for i in select(q, keep):
            rows.add(ps[i], q=float(q[i]))
            rows.next_example()
    return rows.collate(pad_id=pad_id)


def loss(*, batch: TrainBatch, logp, eta: float, tau: float = 0.0, link: str = "logistic"):
    logp_y, _ = batch.per_example(logp)
    logp_old_y, _ = batch.per_example(batch.logp_old)
    return sppo_loss(logp=logp_y, logp_old=logp_old_y, win_rate=batch.first_of_example(batch.q_hat), eta=eta)


def target(*, batch: TrainBatch, tau: float = 0.0, kl_coef: float = 0.0):
    return batch.first_of_example(batch.q_hat) - 0.5


SPPO = Algorithm(name="sppo", build_batch=build_batch, loss=loss, plan=whole_conversations, target=target,
                 accepts=("round_reset",))
