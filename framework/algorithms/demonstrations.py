"""Learning from demonstrations on the pipeline (DESIGN §3; issue 5): SFT, SPIN, IRFT and RFT.

Each demonstration (state, answer) comes back from the generator scored by the sampling policy
π_t (``sample = -1``) together with π_t's own answer (``sample 0``). The contrast

    ℓ = h(β ((log π(y_demo) − log π_t(y_demo)) − (log π(y_gen) − log π_t(y_gen)))),  β = 1/η,

has the previous iterate π_t as its reference (``spin_loss``; h = −log σ or the linear link).

- ``spin``: every iteration generates over all the demonstrations and takes this step;
- ``irft``: T rounds (``algo.rounds``, default train.iterations), round t on the t-th slice of the
  demonstrations, the reference reset to the latest model at each round — so SPIN is IRFT with T = 1;
- ``sft``: maximum likelihood on the demonstrations, the baseline with the same data and steps;
- ``rft``: the explicit variant: a reward model learns (Bradley–Terry) to prefer each
  demonstration to π_t's K own answers, and the policy takes a REINFORCE (leave-one-out) step on
  that reward with a KL penalty 1/η to the starting policy (the learner holds both models).
"""

from __future__ import annotations

from collections import defaultdict

from framework.algorithms import register_algorithm
from framework.algorithms.paths import Rows
from framework.losses import spin_loss
from framework.records import Comparison, Rollout, TrainBatch


def _demonstrations(rollouts: list[Rollout], own: int | None, pad_id: int) -> TrainBatch:
    """Per demonstration one example: the demonstrated answer (side 0) and π_t's answers (side 1):
    the first ``own`` of them, or all when ``own`` is None."""
    by_demo: dict = defaultdict(dict)
    for r in rollouts:
        by_demo[(r.conversation_id, r.iteration)][r.sample] = r
    rows = Rows()
    for answers in by_demo.values():
        rows.add([answers[-1]], side=0)
        rows.add([answers[j] for j in sorted(answers) if j >= 0][:own], side=1)
        rows.next_example()
    return rows.collate(pad_id=pad_id)


def contrast_pairs(rollouts: list[Rollout], comparisons: list[Comparison], *, keep: str = "all",
                   pad_id: int) -> TrainBatch:
    """Per demonstration: the demonstrated answer (side 0) against π_t's own first answer (side 1)."""
    return _demonstrations(rollouts, 1, pad_id)


def demonstrated(rollouts: list[Rollout], comparisons: list[Comparison], *, keep: str = "all",
                 pad_id: int) -> TrainBatch:
    rows = Rows()
    for r in rollouts:
        if r.sample == -1:
            rows.add([r])
            rows.next_example()
    return rows.collate(pad_id=pad_id)


def demonstration_and_answers(rollouts: list[Rollout], comparisons: list[Comparison], *, keep: str = "all",
                              pad_id: int) -> TrainBatch:
    """Per demonstration: the demonstrated answer (side 0) and all of π_t's K answers (side 1)."""
    return _demonstrations(rollouts, None, pad_id)


def contrast(*, batch: TrainBatch, logp, eta: float, tau: float = 0.0, link: str = "logistic"):
    real, gen = batch.per_example(logp)
    ref_real, ref_gen = batch.per_example(batch.logp_old)
    return spin_loss(real_logp=real, gen_logp=gen, ref_real_logp=ref_real, ref_gen_logp=ref_gen,
                     beta=1.0 / eta, link=link)


def likelihood(*, batch: TrainBatch, logp, eta: float, tau: float = 0.0, link: str = "logistic"):
    """−log π(y_demo), summed over the answer's tokens."""
    return -batch.per_example(logp)[0]


register_algorithm("spin", build_batch=contrast_pairs, loss=contrast, rollout="demos", samples=1, judged=False)
register_algorithm("irft", build_batch=contrast_pairs, loss=contrast, rollout="demos", samples=1, slices=True,
                   judged=False)
register_algorithm("sft", build_batch=demonstrated, loss=likelihood, rollout="demos", samples=0, slices=False,
                   judged=False)
register_algorithm("rft", build_batch=demonstration_and_answers, loss=likelihood, rollout="demos", judged=False,
                   reward_model=True)  # the learner runs RFT's two steps itself (actors/learner.py)
