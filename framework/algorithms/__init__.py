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
    loss: Callable[..., torch.Tensor]  # (*, batch, logp, eta) → (B,) per-example losses


ALGORITHMS: dict[str, Algorithm] = {}


def register_algorithm(name: str, *, build_batch, loss) -> Algorithm:
    ALGORITHMS[name] = Algorithm(name, build_batch, loss)
    return ALGORITHMS[name]


def get_algorithm(name: str) -> Algorithm:
    import framework.algorithms.mpo  # noqa: F401  (registers itself)

    if name not in ALGORITHMS:
        raise InputError(f"unknown algorithm {name!r}; choose from {sorted(ALGORITHMS)}")
    return ALGORITHMS[name]


def collate(prompts: list[list[int]], responses: list[list[int]], *, pad_id: int, logp_old=None,
            q_hat=None, baseline=None, policy_version=None) -> TrainBatch:
    """Right-padded prompt+response tensors with a mask on the response tokens."""
    B = len(prompts)
    width = max(len(p) + len(r) for p, r in zip(prompts, responses))
    ids = torch.full((B, width), pad_id, dtype=torch.long)
    attention = torch.zeros((B, width), dtype=torch.long)
    resp = torch.zeros((B, width), dtype=torch.float32)
    for i, (p, r) in enumerate(zip(prompts, responses)):
        ids[i, :len(p) + len(r)] = torch.tensor(p + r)
        attention[i, :len(p) + len(r)] = 1
        resp[i, len(p):len(p) + len(r)] = 1.0
    zeros = [0.0] * B
    return TrainBatch(ids, attention, resp,
                      torch.tensor(logp_old if logp_old is not None else zeros, dtype=torch.float32),
                      torch.tensor(q_hat if q_hat is not None else zeros, dtype=torch.float32),
                      torch.tensor(baseline if baseline is not None else zeros, dtype=torch.float32),
                      torch.tensor(policy_version if policy_version is not None else [0] * B))
