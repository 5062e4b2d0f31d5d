"""Preference-pair methods on self-play data, the reference being the previous iterate (the
policy that sampled the pair, whose log-probs the generator recorded):

- ``dpo``: iterative DPO on the best and worst of the K whole conversations of a prompt;
- ``ipo``: IPO on the same pairs;
- ``step_dpo``: DPO on the branch at turn h, the best and worst of the K answers at a state.

η is the step size everywhere in alignplay: DPO's β = 1/η and IPO's τ = 1/η (both regularise
towards the reference as 1/η does in π ∝ π_ref exp(η r)). Pairs whose win rates tie carry no
preference and are skipped.
"""

from __future__ import annotations

import numpy as np

from framework.algorithms.hooks import Algorithm
from framework.algorithms.mpo import group, one_step_q, tree, win_matrix
from framework.algorithms.sppo import paths, whole_conversations
from framework.batching import Rows
from framework.losses import dpo_loss, ipo_loss
from framework.records import Comparison, Rollout, TrainBatch


def _best_worst(q: np.ndarray) -> tuple[int, int] | None:
    best, worst = int(np.argmax(q)), int(np.argmin(q))
    return None if q[best] == q[worst] else (best, worst)


def conversation_pairs(rollouts: list[Rollout], comparisons: list[Comparison], *, keep: str = "best_worst",
                       pad_id: int) -> TrainBatch:
    """Chosen (side 0) and rejected (side 1) whole conversations, one pair per prompt."""
    rows = Rows()
    for ps, W in paths(rollouts, comparisons):
        pair = _best_worst(W.mean(axis=1))
        if pair:
            rows.add(ps[pair[0]], side=0)
            rows.add(ps[pair[1]], side=1)
            rows.next_example()
    return rows.collate(pad_id=pad_id)


def step_pairs(rollouts: list[Rollout], comparisons: list[Comparison], *, keep: str = "best_worst",
               pad_id: int) -> TrainBatch:
    """Chosen and rejected answers at each visited state (the branch at turn h)."""
    rows = Rows()
    for rs, cs in group(rollouts, comparisons):
        pair = _best_worst(one_step_q(win_matrix(len(rs), cs)))
        if pair:
            rows.add([rs[pair[0]]], side=0)
            rows.add([rs[pair[1]]], side=1)
            rows.next_example()
    return rows.collate(pad_id=pad_id)


def _sides(batch: TrainBatch, logp):
    chosen, rejected = batch.per_example(logp)
    ref_chosen, ref_rejected = batch.per_example(batch.logp_old)
    return dict(chosen_logp=chosen, rejected_logp=rejected, ref_chosen_logp=ref_chosen,
                ref_rejected_logp=ref_rejected)


def dpo(*, batch: TrainBatch, logp, eta: float, tau: float = 0.0, link: str = "logistic"):
    return dpo_loss(**_sides(batch, logp), beta=1.0 / eta)


def ipo(*, batch: TrainBatch, logp, eta: float, tau: float = 0.0, link: str = "logistic"):
    return ipo_loss(**_sides(batch, logp), tau=1.0 / eta)


DPO = Algorithm(name="dpo", build_batch=conversation_pairs, loss=dpo, plan=whole_conversations,
                accepts=("round_reset",))
IPO = Algorithm(name="ipo", build_batch=conversation_pairs, loss=ipo, plan=whole_conversations,
                accepts=("round_reset",))
STEP_DPO = Algorithm(name="step_dpo", build_batch=step_pairs, loss=dpo, plan=tree, accepts=("round_reset",))
