"""What a method is to the pipeline: an ``Algorithm`` record of pure maths and hooks.

The self-play job and the learner call these hooks without knowing which method runs, so a new
method touches its own module and the registry (``framework/algorithms/__init__.py``) only:

- ``plan(settings, source) → Plan``: what each iteration generates (a ``GenerationRequest``),
  which answers the judge compares, and after which iterations the learner's weights reach the
  generators;
- ``memory``: what the method keeps from one iteration to the next (extra pairs to judge, saved
  with every checkpoint); ``Stateless`` keeps nothing;
- ``build_batch`` and ``loss``: the batch and the per-example loss (pure, tested on hand-worked
  numbers);
- ``update(trainer, batch, ...)``: how the learner steps on a batch; ``regress`` (minibatch passes
  over ``loss``) unless the method brings its own;
- ``target``: for a mirror-descent method, what ρ is regressed onto (the update then measures
  the step it took).

``settings`` is the run's ``AlgoConfig`` (``algo.*``); ``trainer`` is the learner role (see
``Trainer``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol

import torch

from framework.records import Comparison, GenerationRequest, Pair, Rollout, TrainBatch


@dataclass(frozen=True)
class Source:
    """What a run generates from (the self-play job builds it from the task and the config)."""

    episodes: Callable[[int], list]  # iteration → the conversations to play (games.conversation.Episode)
    demonstrations: Callable[[], list]  # the run's demonstrations (games.demonstrations), loaded when asked
    iterations: int  # train.iterations


class Plan(Protocol):
    """One run of a method, iteration by iteration."""

    def request(self, iteration: int) -> GenerationRequest:
        """What the generators produce for ``iteration``."""

    def pairs(self, rollouts: list[Rollout]) -> list[Pair]:
        """Which of an iteration's answers the judge compares."""

    def publishes(self, iteration: int) -> bool:
        """Whether the weights after ``iteration``'s update go to the generators."""

    def max_age(self, max_staleness: int) -> int:
        """How many policy versions a trained-on sample may lag behind the learner."""

    def barrier(self, iteration: int) -> bool:
        """Whether ``iteration`` must start from the latest policy: its request waits until every
        earlier update is published, whatever ``pipeline.mode`` (async generation never runs
        ahead into it)."""


class Memory(Protocol):
    """What a method keeps between iterations; part of the run state in every checkpoint."""

    def pairs(self, fresh: list[Rollout]) -> list[Pair]:
        """Extra pairs to judge for this iteration's answers."""

    def observe(self, fresh: list[Rollout], comparisons: list[Comparison]) -> dict:
        """Remember this iteration (after its batch is built); returns metrics."""

    def save(self, directory: Path) -> None: ...

    @classmethod
    def load(cls, directory: Path) -> "Memory": ...


class Stateless:
    """The memory of a method that keeps nothing between iterations."""

    def pairs(self, fresh: list[Rollout]) -> list[Pair]:
        return []

    def observe(self, fresh: list[Rollout], comparisons: list[Comparison]) -> dict:
        return {}

    def save(self, directory: Path) -> None:
        pass

    @classmethod
    def load(cls, directory: Path) -> "Stateless":
        return cls()


class Trainer(Protocol):
    """What an ``update`` hook uses of the learner (``actors.learner.Learner``)."""

    model_path: str  # the starting policy
    tokenizer: Any
    lr: float  # the learning rate the learner was made with
    device: Any  # where it computes (models it trains beside the policy go there too)

    def logp(self, batch: TrainBatch, model=None) -> torch.Tensor:
        """(B,) log-probs of the responses under ``model`` (default: the trained policy)."""

    def step(self, loss: torch.Tensor, optimizer=None, module=None) -> float:
        """One clipped optimizer step on ``loss`` (default: the policy's optimizer); the gradient norm."""

    def reference_logp(self, batch: TrainBatch) -> torch.Tensor:
        """(B,) log-probs under the frozen starting policy."""

    def auxiliary(self, name: str, build: Callable[[], tuple]) -> tuple:
        """(module, optimizer) of a model trained beside the policy, saved with it."""


#: examples the effective step is measured on (a forward pass after the update: over 64 of a
#: 256-sample batch it costs a quarter of a forward, and its slope's standard error stays ≪ 1)
STEP_SAMPLE = 64


def fitted_slope(target: torch.Tensor, rho: torch.Tensor) -> float | None:
    """The least-squares slope of ``rho`` on ``target`` (with an intercept); None when the target
    does not vary."""
    y, x = rho.double() - rho.double().mean(), target.double() - target.double().mean()
    spread = float((x * x).sum())
    return float((x * y).sum()) / spread if spread > 1e-12 else None


def regress(trainer: Trainer, batch: TrainBatch, *, loss: Callable[..., torch.Tensor], eta: float, tau: float,
            link: str, kl_coef: float, epochs: int, minibatches: int,
            target: Callable[..., torch.Tensor] | None = None) -> dict:
    """``epochs`` passes over the batch in ``minibatches`` optimizer steps each on the mean of
    ``loss`` (minibatches hold whole examples: a conversation's turns or a pair stay together).

    ρ is measured against the policy that generated the samples (the generator's log-probs), as
    PPO measures its ratio against the behaviour policy: with async generation one version behind,
    the step is taken from there, which damps overshooting (in our runs anchoring on the learner's
    newer weights instead made correctness swing by ±10 points). In sync mode both anchors are the
    same; ``behaviour_gap`` reports how far apart they are (measured on the first minibatch, before
    the first step). ``rho_mean`` is the mean ρ the last pass saw.

    ``kl_coef`` β > 0 penalises the divergence from the starting policy; ``kl_ref`` reports mean
    log π_t(a|s) − log π_ref(a|s) over the samples, an estimate of that KL.

    A mirror-descent method names its ``target`` (per example, per unit of η: ρ is regressed onto
    η·target). ``effective_step`` is then the step the update took: the least-squares slope of ρ
    after the update on the target, measured by one more forward pass over up to ``STEP_SAMPLE``
    examples spread over the batch. It is η when the regression is solved; a few steps of a small
    learning rate leave it well below (``algo.round_reset`` and ``algo.epochs`` solve each
    iteration's regression).
    """
    examples = len(torch.unique(batch.example))
    extra, kl = ({"kl_coef": kl_coef}, {"kl_ref": 0.0}) if kl_coef else ({}, {})
    if examples == 0:  # e.g. every pair tied: nothing to learn from, the policy stays
        return {"loss": 0.0, "grad_norm": 0.0, "rho_mean": 0.0, "behaviour_gap": 0.0, "examples": 0, **kl}
    if kl_coef:
        batch = dataclasses.replace(batch, logp_ref=trainer.reference_logp(batch))
        kl["kl_ref"] = float((batch.logp_old - batch.logp_ref).mean())
    # Diagnostics come from the training forwards (no extra passes over the batch).
    losses, norms, rhos, behaviour_gap = [], [], [], 0.0
    for epoch in range(epochs):
        for i, mb in enumerate(batch.shard(minibatches)):
            logp = trainer.logp(mb)
            rho = logp.detach() - mb.logp_old
            if epoch == 0 and i == 0:
                behaviour_gap = float(rho.mean())
            if epoch == epochs - 1:
                rhos.append(rho)
            value = loss(batch=mb, logp=logp, eta=eta, tau=tau, link=link, **extra).mean()
            norms.append(trainer.step(value))
            losses.append(float(value.detach()))
    fit = {}
    if target is not None:  # (on up to STEP_SAMPLE examples spread over the batch: one cheap forward)
        ids = torch.unique(batch.example)
        sample = batch.rows(torch.isin(batch.example, ids[torch.linspace(0, len(ids) - 1, min(len(ids), STEP_SAMPLE),
                                                                        device=ids.device).long()]))
        with torch.no_grad():
            after, _ = sample.per_example(trainer.logp(sample) - sample.logp_old)
        fit["effective_step"] = fitted_slope(target(batch=sample, tau=tau, kl_coef=kl_coef), after)
    return {"loss": sum(losses) / len(losses), "grad_norm": sum(norms) / len(norms),
            "rho_mean": float(torch.cat(rhos).mean()), "behaviour_gap": behaviour_gap, "examples": examples,
            **kl, **fit}


@dataclass(frozen=True, kw_only=True)
class Algorithm:
    """A method: its maths and the hooks the pipeline reaches it through (module docstring)."""

    name: str
    build_batch: Callable[..., TrainBatch]  # (rollouts, comparisons, *, keep, pad_id, **options) → TrainBatch
    plan: Callable[[Any, Source], Plan]  # (settings, source) → this run's Plan
    loss: Callable[..., torch.Tensor] | None = None  # (*, batch, logp, eta, tau, link[, kl_coef]) → (E,)
    update: Callable[..., dict] = regress  # (trainer, batch, *, loss, eta, tau, link, kl_coef, epochs, minibatches)
    # mirror-descent methods: (*, batch, tau, kl_coef) → (E,) what ρ is regressed onto per unit of
    # η, ordered like ``TrainBatch.per_example`` (``regress`` reports the ``effective_step``)
    target: Callable[..., torch.Tensor] | None = None
    memory: type = Stateless  # made once per run, restored from checkpoints with ``load``
    options: tuple[str, ...] = ()  # further ``algo.*`` settings build_batch takes as keywords
    update_options: tuple[str, ...] = ()  # further ``algo.*`` settings the update hook takes as keywords
    # method-specific ``algo.*`` settings it implements, of "q", "kl_coef", "round_iterations",
    # "temperature", "round_reset", "reward_model":
    # others must keep their defaults (the config refuses them, naming the methods that have them)
    accepts: tuple[str, ...] = ()
    single_learner: bool = False  # the update is not data-parallel (pipeline.learners must be 1)
