"""The one place that applies ``ray.remote`` and placement.

The driver talks to roles through a ``Cluster``: ``spawn`` an actor from a plain class, ``call``
a method (a future comes back), ``get`` futures. ``RayCluster`` runs every role as a
Ray actor; ``LocalCluster`` runs them in this process (debugging, unit tests) with the same API.
An ``AlignplayError`` raised inside an actor reaches the caller as itself (one-line message).
"""

from __future__ import annotations

import os
import socket
import sys
from dataclasses import dataclass
from typing import Any

from framework.errors import AlignplayError


@dataclass
class Done:
    """A LocalCluster future: the call already ran."""

    value: Any = None
    error: BaseException | None = None


def _resolve(x):
    if isinstance(x, Done):
        if x.error is not None:
            raise x.error
        return x.value
    return x


class LocalCluster:
    """Every role in this process; calls run at once (no overlap between roles)."""

    def spawn(self, cls, *, cpus: float = 1, pin: list[int] | None = None, **kwargs):
        return cls(**kwargs)

    def call(self, handle, method: str, *args, **kwargs) -> Done:
        try:
            args = [_resolve(a) for a in args]
            kwargs = {k: _resolve(v) for k, v in kwargs.items()}
            return Done(getattr(handle, method)(*args, **kwargs))
        except Exception as e:  # delivered at get(), like a Ray task error
            return Done(error=e)

    def get(self, futures):
        return [_resolve(f) for f in futures] if isinstance(futures, list) else _resolve(futures)

    def init_method(self) -> str | None:
        return None

    def shutdown(self) -> None:
        pass


class RayCluster:
    """Roles as Ray actors on a local or remote Ray cluster."""

    def __init__(self, *, num_cpus: int | None = None, concurrent_roles: bool = False):
        import ray

        self.ray = ray
        self.concurrent_roles = concurrent_roles
        self.owns_ray = not ray.is_initialized()
        if self.owns_ray:
            ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False,
                     configure_logging=False)
        self.actors = []

    def spawn(self, cls, *, cpus: float = 1, pin: list[int] | None = None, **kwargs):
        # Actors import what the driver can import (a user's judge module, say): same Python path.
        env = {"PYTHONPATH": os.pathsep.join(p for p in sys.path if p and os.path.isdir(p))}
        if self.concurrent_roles and "OMP_WAIT_POLICY" not in os.environ:
            # Roles that run at the same time on shared cores: idle OpenMP threads must sleep, not
            # spin (spinning is faster when roles take turns, as in sync mode).
            env["OMP_WAIT_POLICY"] = "PASSIVE"
        actor = self.ray.remote(cls).options(num_cpus=cpus, runtime_env={"env_vars": env}).remote(**kwargs)
        if pin:
            # The CPU stand-in for separate GPUs: the actor's process may only run on these cores.
            self.ray.get(actor.__ray_call__.remote(lambda self_, cpus=pin: os.sched_setaffinity(0, cpus)))
        self.actors.append(actor)
        return actor

    def call(self, handle, method: str, *args, **kwargs):
        return getattr(handle, method).remote(*args, **kwargs)

    def get(self, futures):
        try:
            return self.ray.get(futures)
        except self.ray.exceptions.RayTaskError as e:
            cause = getattr(e, "cause", None)
            if isinstance(cause, AlignplayError):
                raise cause from None
            raise

    def init_method(self) -> str:
        """A TCP rendezvous for a torch.distributed group on this machine."""
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return f"tcp://127.0.0.1:{s.getsockname()[1]}"

    def shutdown(self) -> None:
        for actor in self.actors:
            self.ray.kill(actor)
        self.actors = []
        if self.owns_ray:
            self.ray.shutdown()


def make_cluster(*, use_ray: bool, num_cpus: int | None = None, concurrent_roles: bool = False):
    """Ray actors, or everything in this process; ``concurrent_roles``: roles overlap in time."""
    return RayCluster(num_cpus=num_cpus, concurrent_roles=concurrent_roles) if use_ray else LocalCluster()
