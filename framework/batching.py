"""Training batches from rollouts: ``collate`` pads token ids into a ``TrainBatch``; ``Rows``
gathers the rows of multi-row examples (a whole conversation, a preference pair)."""

from __future__ import annotations

import torch

from framework.records import Rollout, TrainBatch


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


class Rows:
    """Accumulates collate() arguments for multi-row examples."""

    def __init__(self):
        self.prompts, self.responses, self.logp_old, self.versions = [], [], [], []
        self.q_hat, self.example, self.side = [], [], []
        self.examples = 0

    def add(self, rollouts: list[Rollout], *, side: int = 0, q: float = 0.0) -> None:
        for r in rollouts:
            self.prompts.append(r.prompt_ids)
            self.responses.append(r.response_ids)
            self.logp_old.append(r.logprob)
            self.versions.append(r.policy_version)
            self.q_hat.append(q)
            self.example.append(self.examples)
            self.side.append(side)

    def next_example(self) -> None:
        self.examples += 1

    def collate(self, *, pad_id: int, baseline: float = 0.5) -> TrainBatch:
        return collate(self.prompts, self.responses, pad_id=pad_id, logp_old=self.logp_old, q_hat=self.q_hat,
                       baseline=[baseline] * len(self.prompts), policy_version=self.versions,
                       example=self.example, side=self.side)
