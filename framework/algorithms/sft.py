"""SFT on the pipeline: maximum likelihood on the demonstrations, the baseline of the reward-
learning methods with the same data and steps (DESIGN §3)."""

from __future__ import annotations

from framework.algorithms.hooks import Algorithm, Source
from framework.algorithms.spin import Demonstrations
from framework.batching import Rows
from framework.records import Comparison, Rollout, TrainBatch


def plan(settings, source: Source) -> Demonstrations:
    """Every demonstration every iteration, scored by π_t; no answers of its own."""
    return Demonstrations(source.demonstrations(), own=0)


def demonstrated(rollouts: list[Rollout], comparisons: list[Comparison], *, keep: str = "all",
                 pad_id: int) -> TrainBatch:
    """One example per demonstrated answer."""
    rows = Rows()
    for r in rollouts:
        if r.sample == -1:
            rows.add([r])
            rows.next_example()
    return rows.collate(pad_id=pad_id)


def likelihood(*, batch: TrainBatch, logp, eta: float, tau: float = 0.0, link: str = "logistic"):
    """−log π(y_demo), summed over the answer's tokens."""
    return -batch.per_example(logp)[0]


SFT = Algorithm(name="sft", build_batch=demonstrated, loss=likelihood, plan=plan, accepts=("round_reset",))
