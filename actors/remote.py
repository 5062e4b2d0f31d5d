"""The one place that applies ``ray.remote``, resources and placement.

A controller talks to roles through a cluster: ``place`` what the roles ask for (one placement
group per run: each role instance gets a ``Slot``), ``spawn`` a role from a plain class into its
slot (a ``Handle`` comes back), ``handle.call(Class.method, ...)`` a method (a future comes back),
``get`` futures.

Faults: every ``get`` has a deadline per role (``pipeline.call_timeout_s`` /
``call_timeouts``). A role spawned ``restartable`` (generators, the reference, judges: what a
constructor and the last ``@state_setting`` call rebuild) that dies or misses its deadline is
killed, re-created in its slot and sent again, in order, the last state-setting call it had
completed and every call it lost, with the same arguments (so seeds: the same samples come back),
up to ``pipeline.max_restarts`` times. A deadline counts from when the role's actor is up (its
process started and its constructor done): a re-created judge that is slow to import its model
on a loaded machine has not missed it. Anything else (a learner) raises ``RoleLost``, for the job
to rebuild its roles from a checkpoint. Methods are named by their function, not a string, so "go to definition" works
from the controller and a type checker sees the arguments. ``RayCluster`` runs every role as a Ray
actor, on a Ray it starts on this machine or on the cluster it joins; ``LocalCluster`` runs them
in this process (debugging, unit tests) with the same API. An ``AlignplayError`` raised inside an
actor reaches the caller as itself (one-line message).
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Concatenate, Generic, ParamSpec, TypeVar

from framework.config import RoleResources
from framework.errors import AlignplayError, InputError

R = TypeVar("R")  # a role's class
T = TypeVar("T")  # what a method returns
P = ParamSpec("P")
Future = Any  # a ray.ObjectRef, or a LocalCluster ``Done``


class RoleLost(AlignplayError):
    """A role died or missed its deadline and was not brought back: ``rebuild`` when it cannot be
    restarted on its own (a learner: the job rebuilds its roles from a checkpoint), false when a
    restartable role used up ``pipeline.max_restarts`` (the run stops, resumable)."""

    def __init__(self, role: str, reason: str, *, rebuild: bool):
        self.role, self.reason, self.rebuild = role, reason, rebuild
        super().__init__(f"{role} {reason}")


def state_setting(method):
    """Marks a role's method whose call sets the state its later calls depend on (a generator's
    ``set_weights``): the last completed one is sent again to a re-created actor."""
    method.state_setting = True
    return method


class Handle(Generic[R]):
    """A role of class ``cls``: a Ray actor or an instance in this process."""

    def __init__(self, cls: type[R], target, submit: Callable):
        self.cls, self.target, self._submit = cls, target, submit

    @property
    def actor(self):
        """The Ray actor now behind the handle (a re-created role has a new one)."""
        return getattr(self.target, "actor", self.target)

    def call(self, method: Callable[Concatenate[R, P], T], /, *args: P.args, **kwargs: P.kwargs) -> Future:
        """Run ``method`` (a function of the role's class, e.g. ``Learner.train``) on the role;
        returns its future."""
        if getattr(self.cls, method.__name__, None) is not method:
            raise TypeError(f"{getattr(method, '__qualname__', method)} is not a method of {self.cls.__name__}")
        return self._submit(self.target, method, args, kwargs)

    def __repr__(self) -> str:
        return f"Handle({self.cls.__name__})"


#: the CPUs of a role that asks for none: a place in the placement group, not a reservation
#: (Ray ignores the placement of an actor that asks for nothing)
SLOT_CPUS = 0.01
#: how long an actor may take to start (its process, its constructor) before its calls' deadlines
#: run all the same
STARTUP_S = 600.0


@dataclass(frozen=True)
class Ask:
    """What one actor asks of the cluster; ``key`` (its config path) names it in errors."""

    role: str  # e.g. "learner 1"
    key: str  # e.g. "pipeline.resources.learner"
    cpus: float = SLOT_CPUS
    gpus: float = 0.0
    resources: tuple[tuple[str, float], ...] = ()

    def amounts(self) -> dict[str, float]:
        return {k: v for k, v in {"CPU": self.cpus, "GPU": self.gpus, **dict(self.resources)}.items() if v}


def ask(spec: RoleResources, role: str, key: str, *, cpus: float = SLOT_CPUS, gpus: float = 0.0) -> Ask:
    """The Ask of a role instance: what its config says, else the defaults given."""
    return Ask(role, key, spec.cpus if spec.cpus is not None else cpus, spec.gpus if spec.gpus is not None else gpus,
               tuple(sorted(spec.resources.items())))


@dataclass(frozen=True)
class Slot:
    """Where one actor goes: bundle ``bundle`` of a placement group (none: anywhere)."""

    ask: Ask
    group: Any = None
    bundle: int = -1


def _sum(asks: list[Ask]) -> dict[str, float]:
    total: dict = defaultdict(float)
    for a in asks:
        for res, amount in a.amounts().items():
            total[res] += amount
    return dict(total)


def _fits(bundle: dict[str, float], node: dict[str, float]) -> bool:
    return all(node.get(res, 0.0) + 1e-9 >= amount for res, amount in bundle.items())


def check_fits(groups: list[list[Ask]], nodes: list[dict[str, float]], strategy: str) -> None:
    """An InputError naming the roles and the resource when ``nodes`` (each node's resources) cannot
    hold the bundles of ``groups`` (each group's asks share one bundle, so one node)."""
    asks = [a for group in groups for a in group]
    for res, total in _sum(asks).items():
        have = sum(n.get(res, 0.0) for n in nodes)
        if total > have + 1e-9:
            by_key: dict = defaultdict(list)
            for a in asks:
                if a.amounts().get(res):
                    by_key[a.key].append(a.amounts()[res])
            parts = ", ".join(f"{key} {len(v)} × {v[0]:g}" if len(set(v)) == 1 else f"{key} {sum(v):g}"
                              for key, v in by_key.items())
            raise InputError(f"the run asks for {total:g} {res} ({parts}) but the cluster has {have:g}")
    for group in groups:
        if not any(_fits(_sum(group), n) for n in nodes):
            roles = " and ".join(f"{a.role} ({a.key})" for a in group)
            raise InputError(f"{roles} {'share a bundle that asks' if len(group) > 1 else 'asks'} for "
                             f"{_sum(group)}, more than any one node has")
    if strategy == "STRICT_PACK" and not any(_fits(_sum(asks), n) for n in nodes):
        raise InputError(f"pipeline.placement_strategy=STRICT_PACK puts every role on one node, but no node "
                         f"holds {_sum(asks)}")
    if strategy == "STRICT_SPREAD":  # a node of its own per bundle: largest bundles first, greedily
        free = list(nodes)
        for group in sorted(groups, key=lambda g: -sum(_sum(g).values())):
            node = next((n for n in free if _fits(_sum(group), n)), None)
            if node is None:
                raise InputError(f"pipeline.placement_strategy=STRICT_SPREAD puts each of the run's {len(groups)} "
                                 f"bundles on a node of its own, but the cluster has no node left for "
                                 f"{' and '.join(a.role for a in group)}")
            free.remove(node)


def local_nodes(num_cpus: int | None = None) -> list[dict[str, float]]:
    """The resources of the Ray a run starts on this machine (all its cores, or ``num_cpus``)."""
    import torch

    return [{"CPU": float(num_cpus or os.cpu_count() or 1), "GPU": float(torch.cuda.device_count())}]


def check_local_fit(pipeline, asks: Callable[[float], list[list[Ask]]]) -> None:
    """A job's preflight: when the run will start a Ray of its own here, whether this machine holds
    ``asks(gpus)`` (a cluster the run joins is checked once joined, before any role starts)."""
    if pipeline.ray and not joins_a_cluster(pipeline.address):
        nodes = local_nodes(pipeline.num_cpus)
        check_fits(asks(nodes[0]["GPU"]), nodes, pipeline.placement_strategy)


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

    def gpus(self) -> float:
        import torch

        return float(torch.cuda.device_count())

    def place(self, groups: list[list[Ask]], strategy: str = "PACK") -> list[list[Slot]]:
        return [[Slot(a) for a in group] for group in groups]

    def spawn(self, cls: type[R], *, slot: Slot | None = None, cpus: float = 1, pin: list[int] | None = None,
              restartable: bool = False, here: bool = True, **kwargs) -> Handle[R]:
        return Handle(cls, cls(**kwargs), _run_here)

    def node_of(self, handle: Handle) -> str:
        return "this process"

    def get(self, futures):
        return [_resolve(f) for f in futures] if isinstance(futures, list) else _resolve(futures)

    def init_method(self, slot: Slot | None = None) -> str | None:
        return None

    def release(self) -> None:
        pass

    def shutdown(self) -> None:
        pass


@dataclass(eq=False)
class _Role:
    """One actor of a RayCluster and what re-creates it; ``log``: its calls not known to be done
    (and the last done state-setting one), in the order they were sent."""

    cls: type
    options: dict
    pin: list[int] | None
    kwargs: dict
    name: str  # e.g. "generator 1"
    kind: str  # the role, for its deadline: generator, reference, judge, learner, dp_worker
    restartable: bool
    actor: Any = None
    log: list = field(default_factory=list)
    restarts: int = 0
    up: Any = None  # the future of the actor's start (its constructor), until it is known done


@dataclass(eq=False)
class Call:
    """A call on a Ray actor: what was called (to send it again to a re-created actor) and its
    current future."""

    role: _Role
    method: Callable
    args: tuple
    kwargs: dict
    ref: Any = None
    done: bool = False

    def submit(self) -> None:
        unwrap = lambda a: a.ref if isinstance(a, Call) else _resolve(a)  # noqa: E731 (Done: a role here)
        self.ref = getattr(self.role.actor, self.method.__name__).remote(
            *[unwrap(a) for a in self.args], **{k: unwrap(v) for k, v in self.kwargs.items()})
        self.done = False


#: alignplay's packages: shipped to every actor on a cluster the run joins (its nodes may run
#: another version, or none)
PACKAGES = ("framework", "actors", "games", "privacy")


def code_paths(modules: list[str] | tuple[str, ...]) -> list[str]:
    """The files or package directories of ``modules`` (top-level packages whole), leaving out what
    is installed (site-packages, the standard library): what a node needs shipped to import them."""
    out = []
    for name in modules:
        spec = importlib.util.find_spec(name.split(".")[0])
        if spec is None or spec.origin in ("built-in", "frozen"):
            continue
        # a package's directory (a namespace package's first), else the module's file
        path = list(spec.submodule_search_locations)[0] if spec.submodule_search_locations else spec.origin
        if path is None or {"site-packages", "dist-packages"} & set(path.split(os.sep)) or \
                path.startswith(sys.base_prefix):
            continue
        if path not in out:
            out.append(path)
    return out


class RayCluster:
    """Roles as Ray actors: on the cluster at ``address`` (default ``$RAY_ADDRESS``), else on a Ray
    started on this machine with ``num_cpus`` (default: all); a Ray already initialised in this
    process is used as it is. ``placement_timeout``: how long to wait for a joined cluster (its
    autoscaler, say) to hold the run's placement group; a Ray started here holds it or fails at once.

    Code reaches the actors through Ray's ``runtime_env``: ``modules`` (a user's judge, say) are
    shipped unless installed, and on a joined cluster alignplay's own packages too — in the job's
    runtime_env when this process starts or joins Ray (inside a ``ray job submit`` job it is merged
    with the job's ``working_dir``), else uploaded for each actor."""

    def __init__(self, *, address: str | None = None, num_cpus: int | None = None, concurrent_roles: bool = False,
                 placement_timeout: float = 300.0, modules: list[str] | tuple[str, ...] = (), max_restarts: int = 0,
                 deadlines: dict[str, float] | None = None):
        import ray

        self.ray = ray
        self.concurrent_roles = concurrent_roles
        self.owns_ray = not ray.is_initialized()
        address = address or os.environ.get("RAY_ADDRESS") or None
        self.joined = joins_a_cluster(address) or not self.owns_ray
        code = code_paths([*modules, *(PACKAGES if self.joined else ())])
        self.py_modules: list[str] = []  # what each actor's own runtime_env ships
        self.watchdog = None
        if self.owns_ray:
            # joining a cluster never sets its size; a Ray of our own gets num_cpus, on loopback only
            size = {} if address else {"num_cpus": num_cpus}
            if not address:
                loopback_only(ray)
            # "local": a Ray of its own even beside another one on this machine (address=None would
            # join whichever is running — another run's, which takes this run down when it ends)
            ray.init(address=address or "local", include_dashboard=False, log_to_driver=False,
                     configure_logging=False, runtime_env={"py_modules": code} if code else None, **size)
            if not address:
                self.watchdog = start_watchdog(ray)
        elif code:  # a Ray started elsewhere in this process: per actor, by the URIs of the uploads
            from ray._private.runtime_env.py_modules import upload_py_modules_if_needed

            self.py_modules = upload_py_modules_if_needed({"py_modules": code}, include_gitignore=True,
                                                          scratch_dir=os.getcwd())["py_modules"]
        self.placement_timeout = placement_timeout
        self.max_restarts = max_restarts
        self.deadlines = dict(deadlines or {})  # role kind (or "default") → seconds; 0: none
        self.roles: list[_Role] = []
        self.groups = []
        self.restarts: dict[str, int] = defaultdict(int)  # role name → re-creations, over the run

    def nodes(self) -> list[dict[str, float]]:
        """Each alive node's resources."""
        return [n["Resources"] for n in self.ray.nodes() if n["Alive"]]

    def gpus(self) -> float:
        return float(sum(n.get("GPU", 0.0) for n in self.nodes()))

    def place(self, groups: list[list[Ask]], strategy: str = "PACK") -> list[list[Slot]]:
        """One placement group for the run: a bundle per group of asks (the asks of a group share
        it, so a node); fails before any role starts when the cluster cannot hold it."""
        from ray.util.placement_group import placement_group, remove_placement_group

        try:
            check_fits(groups, self.nodes(), strategy)
        except InputError:
            if not self.joined or not self.placement_timeout:
                raise
            print(f"alignplay: the cluster cannot hold the run's roles yet; waiting up to "
                  f"{self.placement_timeout:.0f} s for it to grow", file=sys.stderr, flush=True)
        bundles = [_sum(group) for group in groups]
        pg = placement_group(bundles, strategy=strategy)
        self.groups.append(pg)
        ready = self.ray.wait([pg.ready()], timeout=self.placement_timeout if self.joined else 30.0)[0]
        if not ready:
            remove_placement_group(pg)
            self.groups.remove(pg)
            check_fits(groups, self.nodes(), strategy)  # names what does not fit, if it can
            raise InputError(f"the cluster could not place the run's roles ({len(bundles)} bundles, "
                             f"strategy {strategy}) within {self.placement_timeout:.0f} s")
        return [[Slot(a, pg, i) for a in group] for i, group in enumerate(groups)]

    def spawn(self, cls: type[R], *, slot: Slot | None = None, cpus: float = 1, pin: list[int] | None = None,
              restartable: bool = False, here: bool = False, **kwargs) -> Handle[R]:
        """``cls(**kwargs)`` as an actor in ``slot`` (else anywhere, with ``cpus`` CPUs);
        ``restartable``: re-created when it dies or misses a deadline (module docstring).
        ``here``: an instance in this process instead (a light role: no process to start or hold;
        its calls run when made, and it is neither placed nor restarted)."""
        if here:
            return Handle(cls, cls(**kwargs), _run_here)
        env: dict = {}
        if self.concurrent_roles and "OMP_WAIT_POLICY" not in os.environ:
            # Roles that run at the same time on shared cores: idle OpenMP threads must sleep, not
            # spin (spinning is faster when roles take turns, as in sync mode).
            env["OMP_WAIT_POLICY"] = "PASSIVE"
        runtime_env = {"env_vars": env, **({"py_modules": self.py_modules} if self.py_modules else {})}
        options = _options(slot) if slot is not None else {"num_cpus": cpus}
        name = slot.ask.role if slot is not None else cls.__name__
        kind = slot.ask.key.rsplit(".", 1)[-1] if slot is not None else ""
        role = _Role(cls, {"runtime_env": runtime_env, "max_restarts": 0, "max_task_retries": 0, **options}, pin,
                     kwargs, name, kind, restartable)
        self._start(role)
        self.roles.append(role)
        return Handle(cls, role, self._submit)

    def _start(self, role: _Role) -> None:
        # named for Ray's tools (`ray list actors`, the dashboard): the role, and a suffix of its own
        name = f"{role.name} {uuid.uuid4().hex[:8]}"
        role.actor = self.ray.remote(role.cls).options(name=name, **role.options).remote(**role.kwargs)
        role.up = role.actor.__ray_call__.remote(_up)
        if role.pin:
            # The CPU stand-in for separate GPUs: the actor's process may only run on these cores.
            self.ray.get(role.actor.__ray_call__.remote(lambda self_, cpus=role.pin: os.sched_setaffinity(0, cpus)))

    def _submit(self, role: _Role, method, args, kwargs) -> Call:
        call = Call(role, method, args, kwargs)
        call.submit()
        if role.restartable:
            self._forget_done(role)
            role.log.append(call)
        return call

    def _forget_done(self, role: _Role) -> None:
        """Keep a role's log short: state-setting calls that returned count as done (their results
        are small), and of the done calls only the last state-setting one stays."""
        setting = [c for c in role.log if not c.done and getattr(c.method, "state_setting", False)]
        if setting:
            ready = set(self.ray.wait([c.ref for c in setting], num_returns=len(setting), timeout=0)[0])
            for c in setting:  # (a call of an actor that died meanwhile is ready too, with an error)
                c.done = c.ref in ready and self._succeeded(c.ref)
        last = next((c for c in reversed(role.log) if c.done and getattr(c.method, "state_setting", False)), None)
        role.log = [c for c in role.log if not c.done or c is last]

    def deadline(self, role: _Role) -> float:
        return self.deadlines.get(role.kind, self.deadlines.get("default", 0.0))

    def get(self, futures):
        """The values of ``futures`` (a list, or one), bringing back restartable roles that died or
        missed their deadline; an AlignplayError raised in a role is raised here as itself."""
        start = time.monotonic()
        if isinstance(futures, list):
            return [self._get(f, start) for f in futures]
        return self._get(futures, start)

    def _get(self, future, start: float):
        exc = self.ray.exceptions
        while True:
            if isinstance(future, Done):  # a role in this process: it has run
                return _resolve(future)
            if not isinstance(future, Call):
                return self._value(future, None)
            seconds = self.deadline(future.role)
            if seconds and self._starting(future.role):
                start = time.monotonic()  # (the actor's start is not the call's time)
            try:
                value = self._value(future.ref, max(0.0, start + seconds - time.monotonic()) if seconds else None)
                future.done = True
                return value
            except exc.GetTimeoutError:
                self._recover(future.role, f"missed its {seconds:g} s deadline ({future.method.__qualname__})")
            except exc.RayActorError as e:
                dead = self._role_of(getattr(e, "actor_id", None)) or future.role
                self._recover(dead, f"died ({_first_line(e)})")
            start = time.monotonic()  # the re-issued call's deadline starts now

    def _starting(self, role: _Role) -> bool:
        """Whether ``role``'s actor was still starting: then this waits until it is up (or has
        failed to start: its calls then fail as a death), at most ``STARTUP_S``."""
        if role.up is None:
            return False
        waited = not self.ray.wait([role.up], timeout=0)[0]
        if waited:
            self.ray.wait([role.up], timeout=STARTUP_S)
        role.up = None
        return waited

    def _value(self, ref, timeout):
        try:
            return self.ray.get(ref, timeout=timeout)
        except self.ray.exceptions.RayTaskError as e:
            cause = getattr(e, "cause", None)
            if isinstance(cause, AlignplayError):
                raise cause from None
            raise

    def _role_of(self, actor_id) -> _Role | None:
        for role in self.roles:
            if actor_id is not None and role.actor._actor_id.hex() == actor_id:
                return role
        return None

    def _recover(self, role: _Role, reason: str) -> None:
        """Re-create ``role`` and send it again the calls it lost (module docstring), or raise
        RoleLost."""
        self.ray.kill(role.actor, no_restart=True)
        if not role.restartable:
            raise RoleLost(role.name, reason, rebuild=True)
        if role.restarts >= self.max_restarts:
            raise RoleLost(role.name, f"{reason}; pipeline.max_restarts={self.max_restarts} restarts used up",
                           rebuild=False)
        role.restarts += 1
        self.restarts[role.name] += 1
        # In send order: calls that completed (their results kept by Ray), then the lost rest.
        lost = next((i for i, c in enumerate(role.log) if not (c.done or self._succeeded(c.ref))), len(role.log))
        base = next((c for c in reversed(role.log[:lost]) if getattr(c.method, "state_setting", False)), None)
        print(f"alignplay: {role.name} {reason}; re-created it (restart {role.restarts} of {self.max_restarts}), "
              f"re-issuing {len(role.log) - lost} call(s)", file=sys.stderr, flush=True)
        self._start(role)
        replay = ([base] if base is not None else []) + role.log[lost:]
        for c in replay:
            c.submit()
        role.log = replay

    def _succeeded(self, ref) -> bool:
        try:
            self.ray.get(ref, timeout=30)
            return True
        except Exception:  # the actor's death, a lost object: the call must run again
            return False

    def init_method(self, slot: Slot | None = None) -> str:
        """A TCP rendezvous for a torch.distributed group whose rank 0 goes into ``slot``: that
        node's IP and a port free there (found by a task in the same bundle)."""
        options = _options(slot) if slot is not None and slot.group is not None else {"num_cpus": 0}
        return self.ray.get(self.ray.remote(_rendezvous).options(**options).remote())

    def node_of(self, handle: Handle) -> str:
        """The node an actor runs on (``node id[:8] @ ip``; a role here: this process's)."""
        if not hasattr(handle.target, "actor"):
            return _where(None)
        return self.ray.get(handle.actor.__ray_call__.remote(_where))

    def release(self) -> None:
        """Kill every role and free the run's placement groups (Ray stays up)."""
        from ray.util.placement_group import remove_placement_group

        for role in self.roles:
            self.ray.kill(role.actor, no_restart=True)
        self.roles = []
        for pg in self.groups:
            remove_placement_group(pg)
        self.groups = []

    def shutdown(self) -> None:
        self.release()
        if self.owns_ray:
            self.ray.shutdown()
        if self.watchdog is not None:
            self.watchdog.kill()
            self.watchdog.wait()


def _up(actor) -> None:
    """Runs on an actor once its constructor is done."""


def _options(slot: Slot) -> dict:
    """Ray's options for a task or actor in ``slot``: what its role asks, in its bundle."""
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    options = {"num_cpus": slot.ask.cpus, "num_gpus": slot.ask.gpus, "resources": dict(slot.ask.resources)}
    if slot.group is not None:
        options["scheduling_strategy"] = PlacementGroupSchedulingStrategy(slot.group, slot.bundle)
    return options


def _first_line(e: BaseException) -> str:
    return next((line.strip() for line in str(e).splitlines() if line.strip()), type(e).__name__)


def loopback_only(ray) -> None:
    """A Ray this process starts for itself listens on 127.0.0.1 only: the node's address is the
    loopback one (Ray's own local-only mode, its default on macOS and Windows), in this process and
    in the processes Ray starts."""
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    ray._private.ray_constants.ENABLE_RAY_CLUSTER = False


def start_watchdog(ray) -> subprocess.Popen:
    """A process that outlives this one only to end the Ray it started: when this process dies
    without shutting Ray down (SIGKILL), it kills every process of that Ray (``actors/watchdog.py``)."""
    node = ray._private.worker._global_node
    pids = [p.process.pid for infos in node.all_processes.values() for p in infos if p.process is not None]
    return subprocess.Popen([sys.executable, str(Path(__file__).with_name("watchdog.py")), str(os.getpid()),
                             *map(str, pids)], start_new_session=True, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _rendezvous() -> str:
    import ray

    with socket.socket() as s:
        s.bind(("", 0))
        return f"tcp://{ray.util.get_node_ip_address()}:{s.getsockname()[1]}"


def _where(actor_self) -> str:
    import ray

    return f"{ray.get_runtime_context().get_node_id()[:8]} @ {ray.util.get_node_ip_address()}"


def joins_a_cluster(address: str | None) -> bool:
    """Whether a run joins a running Ray cluster (``address`` or ``$RAY_ADDRESS``) instead of starting one."""
    return bool(address or os.environ.get("RAY_ADDRESS"))


def make_cluster(*, use_ray: bool, address: str | None = None, num_cpus: int | None = None,
                 concurrent_roles: bool = False, placement_timeout: float = 300.0, modules: tuple[str, ...] = (),
                 max_restarts: int = 0, deadlines: dict[str, float] | None = None):
    """Ray actors, or everything in this process; ``concurrent_roles``: roles overlap in time."""
    if not use_ray:
        return LocalCluster()
    return RayCluster(address=address, num_cpus=num_cpus, concurrent_roles=concurrent_roles,
                      placement_timeout=placement_timeout, modules=modules, max_restarts=max_restarts,
                      deadlines=deadlines)


def cluster_for(pipeline, *, modules: tuple[str, ...] = (), concurrent_roles: bool | None = None):
    """The cluster of a job's ``pipeline`` config: its layout, restart budget and deadlines
    (``concurrent_roles``, default: whether ``pipeline.mode`` is async)."""
    concurrent = pipeline.mode == "async" if concurrent_roles is None else concurrent_roles
    return make_cluster(use_ray=pipeline.ray, address=pipeline.address, num_cpus=pipeline.num_cpus,
                        concurrent_roles=concurrent, placement_timeout=pipeline.placement_timeout,
                        modules=modules, max_restarts=pipeline.max_restarts,
                        deadlines={"default": pipeline.call_timeout_s, **pipeline.call_timeouts})
