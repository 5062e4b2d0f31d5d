"""SPIN and IRFT: learning a reward from demonstrations through the policy's own contrast
(Chen et al. 2024; Li et al., NeurIPS 2024), and the plan every demonstration method shares.

Each demonstration (state, answer) comes back from the generator scored by the sampling policy
π_t (``sample = -1``) together with π_t's own answer (``sample 0``). The contrast

    ℓ = h(β ((log π(y_demo) − log π_t(y_demo)) − (log π(y_gen) − log π_t(y_gen)))),  β = 1/η,

has the previous iterate π_t as its reference (``spin_loss``; h = −log σ or the linear link).

- ``spin``: every iteration generates over all the demonstrations and takes this step;
- ``irft``: T rounds (``algo.rounds``, default: as many as fit), round r on the r-th slice of the
  demonstrations, the reference reset to the latest model at each round — so SPIN is IRFT with
  T = 1. With ``algo.round_iterations`` = n a round spans n iterations: the generators keep the
  round's starting policy (it draws the answers and is the reference) while the learner works
  through the slice, one part per iteration; the weights are published when the round ends.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from framework.algorithms.hooks import Algorithm, Source
from framework.batching import Rows
from framework.errors import InputError
from framework.losses import spin_loss
from framework.records import Comparison, GenerationRequest, Pair, Rollout, TrainBatch


@dataclass(frozen=True)
class Demonstrations:
    """The plan of learning from demonstrations: each iteration, the generators score a range of
    the demonstrations with π_t and draw ``own`` answers of π_t at each one's state; nothing is
    judged. With ``rounds`` T > 0 (IRFT) iteration t takes part t mod n of round ⌊t/n⌋ mod T's
    slice (n = ``round_iterations``) and the weights reach the generators when a round ends;
    otherwise every iteration takes every demonstration and publishes its update."""

    demos: list  # games.demonstrations.Demonstration
    own: int  # π_t's answers per demonstration
    rounds: int = 0
    round_iterations: int = 1
    temperature: float = 1.0  # of π_t's own answers (0: greedy)

    def span(self, iteration: int) -> tuple[int, int]:
        """[lo, hi): the demonstrations of ``iteration``."""
        if not self.rounds:
            return 0, len(self.demos)
        n, T, N = self.round_iterations, self.rounds, len(self.demos)
        r, part = (iteration // n) % T, iteration % n
        lo, hi = r * N // T, (r + 1) * N // T
        return lo + part * (hi - lo) // n, lo + (part + 1) * (hi - lo) // n

    def request(self, iteration: int) -> GenerationRequest:
        lo, hi = self.span(iteration)
        return GenerationRequest(k=self.own, temperature=self.temperature, demonstrations=tuple(
            (f"demo-{i}", self.demos[i].messages, self.demos[i].response) for i in range(lo, hi)))

    def pairs(self, rollouts: list[Rollout]) -> list[Pair]:
        return []

    def publishes(self, iteration: int) -> bool:
        return (iteration + 1) % self.round_iterations == 0

    def max_age(self, max_staleness: int) -> int:
        return self.round_iterations - 1  # within a round the samples age by design, never more

    def barrier(self, iteration: int) -> bool:
        """A round starts from the latest published policy: it draws the round's answers and is
        its reference (the paper resets both each round); only a round's later parts overlap."""
        return iteration % self.round_iterations == 0


def rounds_of(settings, iterations: int) -> int:
    """IRFT's T: ``algo.rounds``, or as many rounds of ``round_iterations`` as the run holds."""
    return settings.rounds or -(-iterations // settings.round_iterations)


def every_demonstration(settings, source: Source) -> Demonstrations:
    """SPIN: every demonstration every iteration, one own answer each."""
    return Demonstrations(source.demonstrations(), own=1, temperature=settings.temperature)


def irft_rounds(settings, source: Source) -> Demonstrations:
    """IRFT: round r of T on the r-th slice of the demonstrations, one own answer each."""
    demos, T = source.demonstrations(), rounds_of(settings, source.iterations)
    parts = T * settings.round_iterations  # slices × iterations per round
    if len(demos) < parts:
        raise InputError(f"{len(demos)} demonstrations cannot fill {parts} parts of IRFT rounds: add "
                         f"demonstrations (demos.count) or set algo.rounds")
    return Demonstrations(demos, own=1, rounds=T, round_iterations=settings.round_iterations,
                          temperature=settings.temperature)


def demonstration_rows(rollouts: list[Rollout], own: int | None, pad_id: int) -> TrainBatch:
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
    return demonstration_rows(rollouts, 1, pad_id)


def contrast(*, batch: TrainBatch, logp, eta: float, tau: float = 0.0, link: str = "logistic"):
    real, gen = batch.per_example(logp)
    ref_real, ref_gen = batch.per_example(batch.logp_old)
    return spin_loss(real_logp=real, gen_logp=gen, ref_real_logp=ref_real, ref_gen_logp=ref_gen,
                     beta=1.0 / eta, link=link)


SPIN = Algorithm(name="spin", build_batch=contrast_pairs, loss=contrast, plan=every_demonstration,
                 accepts=("temperature", "round_reset"))
IRFT = Algorithm(name="irft", build_batch=contrast_pairs, loss=contrast, plan=irft_rounds,
                 accepts=("round_iterations", "temperature", "round_reset"))
