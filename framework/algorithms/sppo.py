"""SPPO: the H = 1 form of MPO over whole conversations (DESIGN §3).

Each of the K paths of a prompt is one action y^k with win rate Q̂_k against the K paths
(``framework.algorithms.paths``); ρ_θ(y) sums log-ratios over all its assistant turns and is
regressed onto η (Q̂_k − ½).
"""

from __future__ import annotations

from framework.algorithms import register_algorithm
from framework.algorithms.mpo import select
from framework.algorithms.paths import Rows, paths
from framework.losses import sppo_loss
from framework.records import Comparison, Rollout, TrainBatch


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


register_algorithm("sppo", build_batch=build_batch, loss=loss, rollout="paths")
