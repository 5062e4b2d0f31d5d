"""RFT: reward learning from demonstrations with an explicit reward model (Li et al., NeurIPS
2024; DESIGN §3). Each iteration, on π_t's K own answers at every demonstration's state:

1. the reward model (the policy's architecture with a scalar head, from the starting policy)
   takes Bradley–Terry steps −log σ(r(y_demo) − r(y_gen)) to prefer each demonstration to π_t's
   answers;
2. the policy takes a REINFORCE step with a leave-one-out baseline (RLOO) on its own answers,
   rewarded r − (1/η)(log π_t − log π_ref): the KL penalty 1/η to the starting policy π_ref.

The reward model and its optimizer live in the learner beside the policy (``Trainer.auxiliary``)
and are saved with every checkpoint.
"""

from __future__ import annotations

import dataclasses

import torch

from framework.algorithms.hooks import Algorithm, Source, Trainer
from framework.algorithms.spin import Demonstrations, demonstration_rows
from framework.errors import InputError
from framework.losses import bt_reward_loss, rloo_loss
from framework.models import load_reward_model
from framework.records import Comparison, Rollout, TrainBatch

REWARD_MODEL = "reward_model"  # its directory in checkpoints


def plan(settings, source: Source) -> Demonstrations:
    """K = ``algo.k`` own answers at each demonstration's state: every demonstration every
    iteration, or with ``algo.rounds`` T > 0 iteration t on slice t mod T (IRFT's rounds, so both
    see each demonstration equally often)."""
    demos = source.demonstrations()
    if settings.rounds:
        if len(demos) < settings.rounds:
            raise InputError(f"{len(demos)} demonstrations cannot fill algo.rounds={settings.rounds} slices: add "
                             f"demonstrations (demos.count) or lower algo.rounds")
        return Demonstrations(demos, own=settings.k, rounds=settings.rounds)
    return Demonstrations(demos, own=settings.k)


def demonstration_and_answers(rollouts: list[Rollout], comparisons: list[Comparison], *, keep: str = "all",
                              pad_id: int) -> TrainBatch:
    """Per demonstration: the demonstrated answer (side 0) and all of π_t's K answers (side 1)."""
    return demonstration_rows(rollouts, None, pad_id)


def build_reward_model(trainer: Trainer, path: str | None = None) -> tuple:
    """The reward model — from ``path`` (``algo.reward_model``: e.g. one pre-trained by ``job:
    train_judge``), else the starting policy's body with a fresh head — and its AdamW (the
    learner's learning rate)."""
    rm = load_reward_model(path or trainer.model_path, pad_token_id=trainer.tokenizer.pad_token_id).to(trainer.device)
    return rm.train(), torch.optim.AdamW(rm.parameters(), lr=trainer.lr)


def update(trainer: Trainer, batch: TrainBatch, *, loss, eta: float, tau: float, link: str, kl_coef: float,
           epochs: int, minibatches: int, reward_model: str | None = None) -> dict:
    """(1) Bradley–Terry steps of the reward model on (demonstration, own answer) pairs; (2) RLOO
    on the policy's own answers with the KL-shaped reward."""
    rm, rm_optimizer = trainer.auxiliary(REWARD_MODEL, lambda: build_reward_model(trainer, reward_model))
    rm_losses = []
    for _ in range(epochs):
        for mb in batch.shard(minibatches):
            r = rm(input_ids=mb.input_ids, attention_mask=mb.attention_mask).logits.squeeze(-1)
            r_demo, _ = mb.per_example(r)  # one demonstration row per example
            own = mb.side == 1
            value = bt_reward_loss(chosen_reward=r_demo[mb.example_index()[own]], rejected_reward=r[own]).mean()
            trainer.step(value, rm_optimizer, rm)
            rm_losses.append(float(value.detach()))
    own = batch.rows(batch.side == 1)
    with torch.no_grad():
        reward = rm(input_ids=own.input_ids, attention_mask=own.attention_mask).logits.squeeze(-1)
    shaped = reward - (own.logp_old - trainer.reference_logp(own)) / eta
    own = dataclasses.replace(own, q_hat=shaped)
    losses, norms = [], []
    for _ in range(epochs):
        for mb in own.shard(minibatches):
            value = rloo_loss(logp=trainer.logp(mb), reward=mb.q_hat, group=mb.example).mean()
            norms.append(trainer.step(value))
            losses.append(float(value.detach()))
    return {"loss": sum(losses) / len(losses), "grad_norm": sum(norms) / len(norms),
            "rho_mean": 0.0, "behaviour_gap": 0.0, "examples": len(torch.unique(batch.example)),
            "reward_loss": sum(rm_losses) / len(rm_losses), "reward_mean": float(reward.mean())}


RFT = Algorithm(name="rft", build_batch=demonstration_and_answers, plan=plan, update=update, single_learner=True,
                accepts=("round_reset", "reward_model"), update_options=("reward_model",))
