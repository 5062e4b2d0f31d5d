"""Weights as a collective (``pipeline.weight_sync=broadcast``): learner rank 0 broadcasts the
policy into every generator over a process group of their own — gloo on CPU, NCCL on GPU — made
beside the learners' own group (``torch.distributed``'s default group, if any, is not touched).

The generators say what they receive (``Manifest``: the names, shapes and dtypes of their own
policy's tensors, in order); rank 0 sends each of its tensors in that dtype, one at a time, so it
never holds a second copy of the model. A generator on the ``hf`` backend receives straight into
its model's tensors; one on ``vllm`` into buffers it then hands to its engine's in-place reload.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from framework.models import group_backend


@dataclass(frozen=True)
class Manifest:
    """What a generator receives, in the order it is sent."""

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    dtypes: tuple[str, ...]

    @classmethod
    def of(cls, tensors: dict[str, torch.Tensor]) -> Manifest:
        return cls(tuple(tensors), tuple(tuple(t.shape) for t in tensors.values()),
                   tuple(str(t.dtype).removeprefix("torch.") for t in tensors.values()))

    def check(self, tensors: dict[str, torch.Tensor]) -> None:
        """Refuses a sender whose tensors differ from the manifest in name or shape."""
        missing = [n for n in self.names if n not in tensors]
        if missing:
            raise ValueError(f"weight broadcast: the learner has no tensor {missing[0]!r} "
                             f"({len(missing)} of the generators' {len(self.names)} missing)")
        for name, shape in zip(self.names, self.shapes):
            if tuple(tensors[name].shape) != shape:
                raise ValueError(f"weight broadcast: {name} is {tuple(tensors[name].shape)} on the learner, "
                                 f"{shape} on the generators")



def is_sharded(t) -> bool:
    """Whether ``t`` is an FSDP2 ``DTensor`` (its module, slow to import, is loaded only where a
    learner shards: a tensor of a process without it is a plain one)."""
    dtensor = sys.modules.get("torch.distributed.tensor")
    return dtensor is not None and isinstance(t, dtensor.DTensor)

def full(t: torch.Tensor) -> torch.Tensor:
    """The whole tensor: a sharded one (an FSDP2 ``DTensor``) gathered from every rank — a
    collective — else itself."""
    return t.full_tensor() if is_sharded(t) else t


def gather(state: dict[str, torch.Tensor], manifest: Manifest) -> None:
    """A sharded learner's rank > 0 during ``send``: its part of gathering each tensor, in order."""
    for name in manifest.names:
        full(state[name])


class WeightGroup:
    """Rank ``rank`` of ``world_size`` in a weight-broadcast group that meets at ``address``
    (``tcp://host:port``; rank 0 hosts the store there). Every member must construct it at the same
    time: construction returns once all have joined."""

    def __init__(self, address: str, *, rank: int, world_size: int, device: torch.device,
                 timeout: float = 600.0):
        host, port = address.removeprefix("tcp://").rsplit(":", 1)
        store = dist.TCPStore(host, int(port), world_size, is_master=rank == 0, wait_for_workers=False,
                              timeout=timedelta(seconds=timeout))
        store = dist.PrefixStore("alignplay/weights", store)
        self.rank, self.world_size, self.device = rank, world_size, device
        if group_backend(device) == "nccl":  # as torch.distributed makes its own NCCL groups
            options = dist.ProcessGroupNCCL.Options()
            options._timeout = timedelta(seconds=timeout)
            self.group = dist.ProcessGroupNCCL(store, rank, world_size, options)
        else:
            self.group = dist.ProcessGroupGloo(store, rank, world_size, timedelta(seconds=timeout))
        self._store = store  # kept alive: rank 0's store is the rendezvous of the others

    def broadcast(self, tensors) -> None:
        """Each tensor from rank 0 into the same-shaped tensor of every other rank (in place)."""
        works = [self.group.broadcast(t, 0) for t in tensors]
        for work in works:
            work.wait()

    def send(self, state: dict[str, torch.Tensor], manifest: Manifest) -> None:
        """Rank 0: the manifest's tensors from ``state``, each cast to the manifest's dtype on this
        device (a cast makes one tensor at a time, never a second copy of the model)."""
        manifest.check(state)
        works = []
        for name, dtype in zip(manifest.names, manifest.dtypes):
            t = full(state[name]).detach().to(self.device, getattr(torch, dtype)).contiguous()
            works.append(self.group.broadcast(t, 0))
            if len(works) > 8:  # bounded: at most this many cast tensors wait to go
                works.pop(0).wait()
        for work in works:
            work.wait()
