"""The one place that applies ``ray.remote`` and placement.

A controller talks to roles through a cluster: ``spawn`` a role from a plain class (a ``Handle``
comes back), ``handle.call(Class.method, ...)`` a method (a future comes back), ``get`` futures.
Methods are named by their function, not a string, so "go to definition" works from the
controller and a type checker sees the arguments. ``RayCluster`` runs every role as a Ray actor;
``LocalCluster`` runs them in this process (debugging, unit tests) with the same API. An
``AlignplayError`` raised inside an actor reaches the caller as itself (one-line message).
"""

from __future__ import annotations

import os
import socket
import sys
from dataclasses import dataclass
from typing import Any, Callable, Concatenate, Generic, ParamSpec, TypeVar

from framework.errors import AlignplayError

R = TypeVar("R")  # a role's class
T = TypeVar("T")  # what a method returns
P = ParamSpec("P")
Future = Any  # a ray.ObjectRef, or a LocalCluster ``Done``


class Handle(Generic[R]):
    """A role of class ``cls``: a Ray actor or an instance in this process."""

    def __init__(self, cls: type[R], target, submit: Callable):
        self.cls, self.target, self._submit = cls, target, submit

    def call(self, method: Callable[Concatenate[R, P], T], /, *args: P.args, **kwargs: P.kwargs) -> Future:
        """Run ``method`` (a function of the role's class, e.g. ``Learner.train``) on the role;
        returns its future."""
        if getattr(self.cls, method.__name__, None) is not method:
            raise TypeError(f"{getattr(method, '__qualname__', method)} is not a method of {self.cls.__name__}")
        return self._submit(self.target, method, args, kwargs)

    def __repr__(self) -> str:
        return f"Handle({self.cls.__name__})"


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


def _run_here(instance, method, args, kwargs) -> Done:
    try:
        return Done(method(instance, *[_resolve(a) for a in args], **{k: _resolve(v) for k, v in kwargs.items()}))
    except Exception as e:  # delivered at get(), like a Ray task error
        return Done(error=e)


class LocalCluster:
    """Every role in this process; calls run at once (no overlap between roles)."""

    def spawn(self, cls: type[R], *, cpus: float = 1, pin: list[int] | None = None, **kwargs) -> Handle[R]:
        return Handle(cls, cls(**kwargs), _run_here)

    def get(self, futures):
        return [_resolve(f) for f in futures] if isinstance(futures, list) else _resolve(futures)

    def init_method(self) -> str | None:
        return None

    def shutdown(self) -> None:
        pass


def _submit_to_actor(actor, method, args, kwargs):
    return getattr(actor, method.__name__).remote(*args, **kwargs)


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

    def spawn(self, cls: type[R], *, cpus: float = 1, pin: list[int] | None = None, **kwargs) -> Handle[R]:
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
        return Handle(cls, actor, _submit_to_actor)

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
