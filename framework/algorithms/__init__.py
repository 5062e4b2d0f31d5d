"""Algorithms as small registries: each builds its training batch and names its loss."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from framework.errors import InputError
from framework.records import TrainBatch


@dataclass(frozen=True)
class Algorithm:
    name: str
    build_batch: Callable[..., TrainBatch]  # (rollouts, comparisons, **options) → TrainBatch
    loss: Callable[..., torch.Tensor]  # (*, batch, logp, eta, tau, link[, kl_coef]) → (E,) per-example losses
    rollout: str = "tree"  # "tree": K answers branch at every turn; "paths": K whole conversations
    optimistic: bool = False  # also judges answers against the previous iterate's (OMPO)
    options: tuple[str, ...] = ()  # further ``algo.*`` settings build_batch takes as keywords
    samples: int | None = None  # own answers per state when fixed by the method (else algo.k)
    slices: bool = False  # "demos": iteration t uses slice t of T = train.iterations (IRFT rounds)
    judged: bool = True  # needs the preference judge
    reward_model: bool = False  # the learner trains an explicit reward model too (RFT)
    kl_penalty: bool = False  # its loss takes ``kl_coef`` (a KL penalty toward the starting policy)

    def rollout_mode(self, q: str) -> str:
        """How the generator plays conversations: Monte-Carlo and terminal Q continue every branch."""
        return "branches" if q != "one_step" else self.rollout


ALGORITHMS: dict[str, Algorithm] = {}


def register_algorithm(name: str, *, build_batch, loss, **settings) -> Algorithm:
    """Register an algorithm; ``settings`` are the ``Algorithm`` fields after ``loss``."""
    ALGORITHMS[name] = Algorithm(name, build_batch, loss, **settings)
    return ALGORITHMS[name]


def algorithm_names() -> list[str]:
    # each module registers itself
    import framework.algorithms.demonstrations  # noqa: F401
    import framework.algorithms.mpo  # noqa: F401
    import framework.algorithms.ompo  # noqa: F401
    import framework.algorithms.pairs  # noqa: F401
    import framework.algorithms.sppo  # noqa: F401

    return sorted(ALGORITHMS)


def get_algorithm(name: str) -> Algorithm:
    if name not in algorithm_names():
        raise InputError(f"unknown algorithm {name!r}; choose from {sorted(ALGORITHMS)}")
    return ALGORITHMS[name]


def collate(prompts: list[list[int]], responses: list[list[int]], *, pad_id: int, logp_old=None,
            q_hat=None, baseline=None, policy_version=None, example=None, side=None,
            q_hat_prev=None, logp_ref=None) -> TrainBatch:
    """Right-padded prompt+response tensors with a mask on the response tokens.

    By default every row is its own example (side 0); see ``TrainBatch`` for multi-row examples.
    """
    B = len(prompts)
    width = max((len(p) + len(r) for p, r in zip(prompts, responses)), default=1)
    ids = torch.full((B, width), pad_id, dtype=torch.long)
    attention = torch.zeros((B, width), dtype=torch.long)
    resp = torch.zeros((B, width), dtype=torch.float32)
    for i, (p, r) in enumerate(zip(prompts, responses)):
        ids[i, :len(p) + len(r)] = torch.tensor(p + r)
        attention[i, :len(p) + len(r)] = 1
        resp[i, len(p):len(p) + len(r)] = 1.0
    def floats(values):
        return torch.tensor(values if values is not None else [0.0] * B, dtype=torch.float32)

    def longs(values, default):
        return torch.tensor(values if values is not None else default, dtype=torch.long)

    return TrainBatch(ids, attention, resp, floats(logp_old), floats(q_hat), floats(baseline),
                      longs(policy_version, [0] * B), longs(example, list(range(B))), longs(side, [0] * B),
                      floats(q_hat_prev), floats(logp_ref))
