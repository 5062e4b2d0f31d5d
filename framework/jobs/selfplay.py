"""``job: selfplay``: the single controller of a self-play run (DESIGN §1).

It builds the roles — rollout generators, a frozen reference generator holding the warm start,
the preference judge and the learner group — then loops over named, timed stages: generate →
judge → build_batch → update → sync_weights → checkpoint → evaluate → log. What a method
generates, judges, remembers and how it updates come from its algorithm's hooks
(``framework.algorithms``); this file names no method.

In ``sync`` mode each stage waits for the previous one. In ``async`` mode the generation of the
next ``max_staleness`` iterations is already queued while the learner trains, so generators run
ahead of the learner by at most ``max_staleness`` policy versions; samples older than that are
dropped and counted. A plan's barrier (a demonstration method's round start) is never run ahead
into: that iteration's generation starts from the latest published policy in either mode. Ray
stays behind ``actors.remote`` (this module never imports it).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from collections import deque
from typing import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from actors.generator import RolloutGenerator
from actors.judge import JudgeError, PreferenceJudge, judge_all
from actors.learner import Learner
from actors.remote import Ask, Handle, RoleLost, ask, check_local_fit, cluster_for
from framework import checkpoint as ckpt
from framework.algorithms.registry import get_algorithm
from framework.algorithms.hooks import Algorithm, Memory, Plan, Source
from framework.config import AlgoConfig, Config
from framework.errors import AlignplayError
from framework.jobs import evaluate as held_out
from framework.jobs.rundir import (append_metrics, preflight as check_run_dir, read_summary, timed, truncate,
                                   write_checkpoint, write_summary)
from framework.jobs.warmstart import prepare_policy
from framework.models import check_model_path
from framework.records import Comparison, Pair, ParquetWriter, Rollout, TrainBatch, Verdicts
from games.demonstrations import demonstrations
from games.judges import build_judge, judge_modules
from games.judges.llm import RateLimiter
from games.tasks import Task, get_task

#: What defines a self-play experiment: a resumed run must keep these as they were.
EXPERIMENT_KEYS = ("seed", "model", "task", "warm_start", "algo", "train.conversations", "train.fixed_prompts")


def preflight(cfg: Config, run_dir: Path) -> None:
    """Checks that fail fast, before anything is written to the run directory (on a cluster it
    joins, the run checks its resources when it has joined, before any role starts)."""
    check_run_dir(cfg, run_dir, experiment_keys=EXPERIMENT_KEYS)
    task = get_task(**dataclasses.asdict(cfg.task))
    build_judge(cfg.judge.kind, task=task, target=cfg.judge.target, settings=cfg.judge.settings())
    if cfg.algo.reward_model:
        check_model_path(cfg.algo.reward_model, "algo.reward_model")
    check_local_fit(cfg.pipeline, lambda gpus: placement(cfg, gpus))


@dataclass
class Roles:
    """The roles of one run (``Handle.call`` returns futures, ``cluster.get`` waits for them)."""

    cluster: object
    generators: list[Handle[RolloutGenerator]]
    reference: Handle[RolloutGenerator]  # a frozen generator holding the warm-start policy (for win rates)
    judges: list[Handle[PreferenceJudge]]  # the pool (pipeline.judges) sharing each iteration's pairs
    learners: list[Handle[Learner]]
    pad_id: int
    weight_sync: str = "object_store"  # pipeline.weight_sync
    learner_strategy: str = "ddp"  # pipeline.learner_strategy

    @property
    def gathering(self) -> list[Handle[Learner]]:
        """The learners that take part in gathering the full policy (publishing, checkpoints):
        every rank of a sharded group, else rank 0 alone (its replica is the policy)."""
        return self.learners if self.learner_strategy == "fsdp" else self.learners[:1]


@dataclass
class RunState:
    """What a checkpoint holds besides the roles' weights: where the loop is, its counters, the
    policy version the generators hold (and its weights future, while it differs from the
    learner's) and the method's memory."""

    memory: Memory
    iteration: int = 0
    version: int = 0  # learner updates so far
    held: tuple = (0, None)  # (version, weights) the generators hold; they start with the initial policy
    counters: dict = field(default_factory=lambda: {"dropped_stale": 0, "samples_total": 0, "generated_total": 0})

    def count(self, rollouts: list[Rollout], stale: list[Rollout], batch: TrainBatch) -> None:
        self.counters["dropped_stale"] += len(stale)
        self.counters["samples_total"] += len(batch)
        self.counters["generated_total"] += generated(rollouts)


def generated(rollouts: list[Rollout]) -> int:
    """The answers the policy drew (a demonstration scored by it is sample -1)."""
    return sum(r.sample >= 0 for r in rollouts)


def split_stale(rollouts: list[Rollout], learner_version: int, max_staleness: int):
    """Rollouts no older than ``max_staleness`` versions, and the stale rest."""
    fresh = [r for r in rollouts if learner_version - r.policy_version <= max_staleness]
    stale = [r for r in rollouts if learner_version - r.policy_version > max_staleness]
    return fresh, stale


def iteration_seed(seed: int, iteration: int) -> int:
    return seed * 1_000_003 + iteration


def source(cfg: Config, task: Task) -> Source:
    """What the run generates from: the task's training conversations (the same ones every
    iteration with ``train.fixed_prompts``) and the run's demonstrations."""
    def episodes(iteration: int) -> list:
        return task.episodes("train", cfg.train.conversations,
                             iteration_seed(cfg.seed, 0 if cfg.train.fixed_prompts else iteration))

    def demos() -> list:
        return demonstrations(task, path=cfg.demos.path, count=cfg.demos.count, corruption=cfg.demos.corruption,
                              seed=cfg.seed)

    return Source(episodes, demos, cfg.train.iterations)


# --- building the roles ------------------------------------------------------------------------
def placement(cfg: Config, gpus: float) -> list[list[Ask]]:
    """What each role asks for, grouped into the bundles of the run's placement group: with
    ``colocated`` generator i and learner i share bundle i (on GPUs, half of one GPU each), with
    ``disaggregated`` each has its own (a whole GPU); the reference and each judge have their own."""
    p, r = cfg.pipeline, cfg.pipeline.resources
    shared = p.placement == "colocated"
    gpu = (0.5 if shared else 1.0) if gpus else 0.0
    learners = [ask(r.learner, f"learner {i}", "pipeline.resources.learner", gpus=gpu) for i in range(p.learners)]
    generators = [ask(r.generator, f"generator {i}", "pipeline.resources.generator", gpus=gpu)
                  for i in range(p.generators)]
    pairs = [[*learners[i:i + 1], *generators[i:i + 1]] for i in range(max(p.learners, p.generators))]
    groups = pairs if shared else [[a] for a in learners + generators]
    return groups + [[ask(r.reference, "reference", "pipeline.resources.reference")],
                     *[[ask(r.judge, f"judge {i}", "pipeline.resources.judge")] for i in range(p.judges)]]


def light_here(cfg: Config, cluster) -> set[str]:
    """The light roles (``reference``, ``judge``) that run in this process (``pipeline.light_roles``)."""
    p, r = cfg.pipeline, cfg.pipeline.resources
    light = {"reference", *(["judge"] if cfg.judge.kind == "rule" and p.judges == 1 else [])}
    if p.light_roles == "driver":
        return light
    if p.light_roles == "actors" or getattr(cluster, "joined", False):
        return set()
    asks_nothing = lambda spec: not spec.gpus and not spec.resources  # noqa: E731
    return {role for role in light if asks_nothing(getattr(r, role)) and (role != "reference" or p.backend != "vllm")}


def thread_budget(cfg: Config, cluster, n_cpu: int, pinned: bool) -> tuple[int, int]:
    """(threads per generator, threads per learner): as configured, else the budget
    (``pipeline.learner_threads``'s docstring)."""
    p, r = cfg.pipeline, cfg.pipeline.resources
    if getattr(cluster, "joined", False):
        budget = (max(1, int(r.generator.cpus or 1)), max(1, int(r.learner.cpus or 1)))
    elif pinned:  # (the cores of each, as build_roles pins them)
        budget = (max(1, n_cpu - p.learners), 1)
    elif p.mode == "sync":  # the roles take turns: whichever runs has every core
        budget = (max(1, n_cpu // p.generators), max(1, n_cpu // p.learners))
    else:  # they overlap: the learners get the larger half
        learning = max(p.learners, min(n_cpu - p.generators, -(-n_cpu // 2)))
        budget = (max(1, (n_cpu - learning) // p.generators), max(1, learning // p.learners))
    return p.generator_threads or budget[0], p.learner_threads or budget[1]


def build_roles(cfg: Config, task: Task, policy_path: str, cluster) -> Roles:
    p = cfg.pipeline
    gpus = cluster.gpus()
    slots = {s.ask.role: s for group in cluster.place(placement(cfg, gpus), p.placement_strategy) for s in group}
    n_cpu = max(1, p.num_cpus or os.cpu_count() or 1)
    pin_gen = pin_learn = None
    if p.placement == "disaggregated" and not gpus:  # the CPU stand-in for separate GPUs:
        cores = list(range(n_cpu))  # generators on the first cores, learners on the rest
        pin_gen = [cores[: max(1, n_cpu - p.learners)]] * p.generators
        pin_learn = [[cores[-1 - i % max(1, n_cpu - 1)]] for i in range(p.learners)]
    gen_threads, learn_threads = thread_budget(cfg, cluster, n_cpu, pinned=pin_gen is not None)
    # rendezvous on learner 0's node, found before its bundle is taken
    init_method = cluster.init_method(slots["learner 0"]) if p.learners > 1 else None
    weights_at = None
    while p.weight_sync == "broadcast" and weights_at in (None, init_method):  # (two probes may find one port)
        weights_at = cluster.init_method(slots["learner 0"])
    learners = [cluster.spawn(Learner, slot=slots[f"learner {i}"], pin=pin_learn[i] if pin_learn else None,
                              model_path=policy_path, rank=i, world_size=p.learners, init_method=init_method,
                              lr=cfg.algo.lr, threads=learn_threads, seed=cfg.seed, dtype=cfg.model.dtype,
                              strategy=p.learner_strategy, shared_prompts=p.shared_prompts)
                for i in range(p.learners)]
    # Generators, the reference and the judge are rebuilt by their constructor and last weights
    # (a broadcast group cannot take a new member: a generator lost there rebuilds the run).
    generators = [cluster.spawn(RolloutGenerator, slot=slots[f"generator {i}"], pin=pin_gen[i] if pin_gen else None,
                                restartable=p.weight_sync != "broadcast", model_path=policy_path, backend=p.backend, generator_id=i,
                                max_new_tokens=cfg.model.max_new_tokens, threads=gen_threads,
                                dtype=cfg.model.dtype)
                  for i in range(p.generators)]
    here = light_here(cfg, cluster)
    reference = cluster.spawn(RolloutGenerator, slot=slots["reference"], restartable=True, here="reference" in here,
                              model_path=policy_path, backend=p.backend, generator_id=-1,
                              max_new_tokens=cfg.model.max_new_tokens, threads=1, dtype=cfg.model.dtype)
    j = cfg.judge
    # one rate limit for the whole run, held by a small actor every judge asks (not one per judge)
    limiter = cluster.spawn(RateLimiter, cpus=0, requests_per_minute=j.requests_per_minute,
                            tokens_per_minute=j.tokens_per_minute).actor if j.kind == "llm" else None
    # the API key reaches judge actors on other processes or nodes from this one's environment
    name = j.api_key_env if j.kind == "llm" else None
    key = {name: os.environ[name]} if name and name in os.environ else None
    judges = [cluster.spawn(PreferenceJudge, slot=slots[f"judge {i}"], restartable=True, here="judge" in here,
                            kind=j.kind, task=task, target=j.target, settings=j.settings(), retries=j.retries,
                            requeue=j.requeue, limiter=limiter, environment=key)
              for i in range(p.judges)]
    pad_id = cluster.get(generators[0].call(RolloutGenerator.pad_id))
    if p.weight_sync == "broadcast":
        connect_weights(cluster, weights_at, learners, generators)
    return Roles(cluster, generators, reference, judges, learners, pad_id, p.weight_sync, p.learner_strategy)


def connect_weights(cluster, address: str, learners: list[Handle[Learner]],
                    generators: list[Handle[RolloutGenerator]]) -> None:
    """One weight-broadcast group: learner rank 0 (hosting it at ``address``) and the generators;
    every learner learns what the generators receive."""
    manifest = cluster.get(generators[0].call(RolloutGenerator.weight_manifest))
    world = 1 + len(generators)
    cluster.get([*[learner.call(Learner.join_weight_group, address, world, manifest) for learner in learners],
                 *[g.call(RolloutGenerator.join_weight_group, address, 1 + i, world) for i, g in enumerate(generators)]])


# --- stages ------------------------------------------------------------------------------------
class Generation:
    """The generate stage: iteration t's request is sent to the generators ``ahead`` iterations
    early (0 in sync mode), each generator taking every n-th part of it, but never past an
    iteration the plan makes a barrier (``Plan.barrier``: it is sent once t's update is published,
    and the generators apply weights in the order they are sent)."""

    def __init__(self, roles: Roles, plan: Plan, *, seed: int, iterations: int, ahead: int, start: int):
        self.roles, self.plan, self.seed, self.iterations, self.ahead = roles, plan, seed, iterations, ahead
        self.inflight: deque = deque()
        self.next = start

    def take(self, t: int) -> list[Rollout]:
        """Iteration t's rollouts (after queueing the requests of the iterations up to t + ahead)."""
        while self.next <= min(t + self.ahead, self.iterations - 1):
            if self.next > t and self.plan.barrier(self.next):  # it waits for t's update
                break
            seed = iteration_seed(self.seed, self.next)
            parts = self.plan.request(self.next).split(len(self.roles.generators))
            self.inflight.append([g.call(RolloutGenerator.generate, part, iteration=self.next, seed=seed * 10 + i)
                                  for i, (g, part) in enumerate(zip(self.roles.generators, parts))])
            self.next += 1
        return [r for part in self.roles.cluster.get(self.inflight.popleft()) for r in part]


def judge(roles: Roles, pairs: list[Pair], iteration: int, judge_name: str) -> tuple[list[Comparison], Verdicts]:
    """Every pair, shared by the judge pool; the pairs the judge dropped are not compared."""
    parsed = {state: json.loads(state) for state in {p.state for p in pairs}}  # many pairs share a state
    verdicts = judge_all(roles.cluster, roles.judges, [parsed[p.state] for p in pairs],
                         [p.answer_a for p in pairs], [p.answer_b for p in pairs])
    if pairs and verdicts.failures == len(pairs):
        raise JudgeError(f"judge {judge_name}: every one of iteration {iteration + 1}'s {len(pairs)} pairs failed")
    return [p.judged(prob, iteration=iteration, judge=judge_name)
            for p, prob in zip(pairs, verdicts.probabilities) if prob is not None], verdicts


def unjudged(pairs: list[Pair], verdicts: Verdicts) -> set[str]:
    """The conversations with a pair the judge dropped: they sit this update out (a state missing
    a comparison has no win rates)."""
    return {p.conversation_id for p, prob in zip(pairs, verdicts.probabilities) if prob is None}


def update(roles: Roles, batch: TrainBatch, settings: AlgoConfig, t: int, iterations: int) -> Callable[[], dict]:
    """Iteration t's update sent to every learner, each with its shard; returns what waits for it:
    the learners' metrics averaged. With ``algo.round_reset`` a round's first update starts the
    optimizer afresh and each step takes its place in the round's schedule."""
    staged = settings.round_reset
    position = t % settings.round_iterations
    lr = settings.round_lrs(position) if staged else settings.lr_at(t, iterations)
    options = {name: getattr(settings, name) for name in get_algorithm(settings.name).update_options}
    futures = [
        learner.call(Learner.train, shard, algorithm=settings.name, eta=settings.eta, tau=settings.tau,
                     link=settings.link, epochs=settings.epochs, minibatches=settings.minibatches, lr=lr,
                     kl_coef=settings.kl_coef, reset_optimizer=staged and position == 0, options=options)
        for learner, shard in zip(roles.learners, batch.shard(len(roles.learners)))
    ]

    def results() -> dict:
        done = roles.cluster.get(futures)
        skip = ("examples", "version", "train_seconds")
        values = {k: [r[k] for r in done if r.get(k) is not None] for k in done[0] if k not in skip}
        out = {k: float(np.mean(v)) if v else None for k, v in values.items()}  # (None: e.g. no fitted step)
        return {**out, "examples": sum(r["examples"] for r in done), "lr": lr[0] if staged else lr}

    return results


def sync_weights(roles: Roles, version: int, wait: bool) -> tuple:
    """Learner rank 0 → every generator, through the object store (one copy in the store per
    version) or a broadcast; returns (version, weights future or None): what the generators hold
    from now on."""
    if roles.weight_sync == "broadcast":
        weights = None
        done = [g.call(RolloutGenerator.receive_weights, version) for g in roles.generators]
        done += [learner.call(Learner.broadcast_weights) for learner in roles.gathering]
    else:
        # (under fsdp the other ranks' calls take part in gathering and return None)
        weights = [learner.call(Learner.weights) for learner in roles.gathering][0]
        done = [g.call(RolloutGenerator.set_weights, version, weights) for g in roles.generators]
    if wait:
        roles.cluster.get(done)
    return version, weights


def save_checkpoint(roles: Roles, run_dir: Path, state: RunState, iteration: int, keep: int,
                    final: bool = False, records: ParquetWriter | None = None) -> Path:
    """Policy, optimizer and run state (plus the method's memory) in one directory. Mid-way
    through a round that keeps the generators' policy (``state.held``), that policy is saved too
    (``generator.safetensors``), so a resume continues the round. ``records``: the run's Parquet
    writer, flushed first (the checkpoint's iterations have their records on disk)."""
    if records is not None:
        records.flush()

    def save(directory: Path) -> None:
        roles.cluster.get([learner.call(Learner.save, str(directory)) for learner in roles.gathering])
        state.memory.save(directory)
        if state.held[0] != state.version and (state.held[1] is not None or roles.weight_sync == "broadcast"):
            # (a broadcast left no copy in the store: generator 0 has what it received)
            held = state.held[1] if state.held[1] is not None else roles.generators[0].call(RolloutGenerator.weights)
            held = held if isinstance(held, dict) else roles.cluster.get(held)
            save_file({k: v.contiguous() for k, v in held.items()}, str(directory / "generator.safetensors"))

    extra = {"generator_version": state.held[0]} if state.held[0] != state.version else {}
    return write_checkpoint(run_dir, "final" if final else f"iter_{iteration:06d}",
                            {"iteration": iteration, "policy_version": state.version, **state.counters, **extra},
                            save, keep)


def resume(roles: Roles, run_dir: Path, algo: Algorithm) -> RunState:
    """The run state of the latest checkpoint, with the roles' weights restored from it (none
    yet, after a rebuild: the run starts again)."""
    latest = ckpt.latest_checkpoint(run_dir)
    if latest is None:
        truncate(run_dir, 0)
        return RunState(algo.memory())
    saved = ckpt.read_state(latest)
    state = RunState(algo.memory.load(latest), saved["iteration"], saved["policy_version"],
                     counters={k: saved.get(k, 0) for k in ("dropped_stale", "samples_total", "generated_total")})
    roles.cluster.get([learner.call(Learner.load, str(latest), state.version) for learner in roles.learners])
    if "generator_version" in saved:  # mid-way through a round: its starting policy again
        state.held = (saved["generator_version"], None)
        if (latest / "generator.safetensors").exists():
            weights = load_file(str(latest / "generator.safetensors"))
            roles.cluster.get([g.call(RolloutGenerator.set_weights, state.held[0], weights) for g in roles.generators])
            state.held = (state.held[0], weights)
    else:
        state.held = sync_weights(roles, state.version, wait=True)
    truncate(run_dir, state.iteration)
    return state


def log(records: ParquetWriter, run_dir: Path, m: dict, state: RunState, rollouts: list[Rollout],
        fresh: list[Rollout], stale: list[Rollout], comparisons: list[Comparison], batch: TrainBatch) -> None:
    """Queue the iteration's records (each rollout with the learner version that consumed it) for
    the background writer and complete its metrics."""
    consumer = state.version - 1
    rows = [dataclasses.replace(r, learner_version=consumer) for r in fresh]
    rows += [dataclasses.replace(r, learner_version=consumer, stale=True) for r in stale]
    records.write(rows, run_dir / "rollouts" / f"iter_{m['iteration']:06d}.parquet")
    records.write(comparisons, run_dir / "comparisons" / f"iter_{m['iteration']:06d}.parquet")
    ages = [consumer - r.policy_version for r in fresh]
    m.update(policy_version=state.version, samples=len(batch), generated=generated(rollouts),
             staleness_mean=float(np.mean(ages)) if ages else 0.0, dropped_stale=len(stale),
             dropped_stale_total=state.counters["dropped_stale"])
    m.setdefault("win_rate_vs_init", None)
    m.setdefault("exploitability", None)


def evaluate(roles: Roles, task: Task, states: list, samples: int, seed: int) -> dict:
    """The current policy against the warm start on held-out states (``framework.jobs.evaluate``)."""
    return held_out.evaluate(roles.cluster, roles.generators[0], roles.reference, roles.judges, task, states,
                             samples=samples, seed=seed)


# --- the run -----------------------------------------------------------------------------------
def run(cfg: Config, run_dir: Path, *, progress: bool = True, start: dict | None = None) -> dict:
    """Warm start (cached), then self-play; writes metrics, records, checkpoints and a summary.
    A lost learner (or a role past its restarts that cannot be replaced alone) rebuilds every role
    and continues from the latest checkpoint, up to ``train.max_failures`` times. ``start`` is the
    starting policy's held-out evaluation where another run already made the same one (a
    comparison's runs of one seed): it is not evaluated again (``summary["start_shared"]``)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)  # private to the user (as the CLI makes it)
    task = get_task(**dataclasses.asdict(cfg.task))
    policy_path = prepare_policy(cfg, task, progress=progress)
    cluster = cluster_for(cfg.pipeline, modules=judge_modules(cfg.judge.kind, cfg.judge.target))
    summary = read_summary(run_dir) if cfg.resume else {}
    if start is not None and "start" not in summary:
        summary.update(start=start, start_shared=True)
    bar = tqdm(total=cfg.train.iterations, desc="self-play", disable=not progress, unit="it")
    faults = {"rebuilds": 0, "restarts": getattr(cluster, "restarts", {})}
    resuming, loop_start = cfg.resume, time.perf_counter()
    try:
        while True:
            try:
                summary = selfplay(cfg, run_dir, task, policy_path, cluster, summary, resuming, bar)
                summary.update(wall_s=time.perf_counter() - loop_start,  # this invocation, after the warm start
                               faults={"rebuilds": faults["rebuilds"], "restarts": dict(faults["restarts"])})
                write_summary(run_dir, summary)
                return summary
            except RoleLost as e:
                if not e.rebuild:
                    raise
                if faults["rebuilds"] >= cfg.train.max_failures:
                    raise RoleLost(e.role, f"{e.reason}; train.max_failures={cfg.train.max_failures} rebuilds "
                                   f"used up (resume=true continues from the latest checkpoint)", rebuild=True) from None
                faults["rebuilds"] += 1
                print(f"alignplay: {e}; rebuilding the roles from the latest checkpoint (rebuild "
                      f"{faults['rebuilds']} of {cfg.train.max_failures})", file=sys.stderr, flush=True)
                cluster.release()
                resuming = True
    finally:
        bar.close()
        cluster.shutdown()


@dataclass
class Prepared:
    """An iteration's data up to its batch (``prepare``), with the metrics of those stages."""

    m: dict
    rollouts: list[Rollout]
    fresh: list[Rollout]
    stale: list[Rollout]
    judged: list[Rollout]  # the fresh ones whose conversation has every pair judged
    comparisons: list[Comparison]  # every verdict (the records)
    kept: list[Comparison]  # those of the judged conversations (what the update and memory see)
    batch: TrainBatch


def prepare(cfg: Config, roles: Roles, algo: Algorithm, plan: Plan, generation: Generation, state: RunState,
            t: int) -> Prepared:
    """Iteration t's stages before its update, each timed: generate → judge → build_batch. They
    change nothing the run keeps (the method's memory observes the iteration when it runs:
    ``learn``), so async mode prepares iteration t + 1 while the learner works on t."""
    m: dict = {"iteration": t + 1}
    options = {name: getattr(cfg.algo, name) for name in algo.options}
    with timed(m, "generate"):
        rollouts = generation.take(t)
    with timed(m, "judge"):
        fresh, stale = split_stale(rollouts, state.version, plan.max_age(cfg.pipeline.max_staleness))
        pairs = plan.pairs(rollouts) + state.memory.pairs(fresh)
        comparisons, verdicts = judge(roles, pairs, t, cfg.judge.target or cfg.judge.kind)
        dropped = unjudged(pairs, verdicts)
        judged = [r for r in fresh if r.conversation_id not in dropped]
        kept = [c for c in comparisons if c.conversation_id not in dropped]
    m.update(verdicts.metrics(), judge_pairs_per_s=len(pairs) / m["judge_s"] if pairs else None,
             judge_dropped_conversations=len(dropped))
    with timed(m, "build_batch"):
        batch = algo.build_batch(judged, kept, keep=cfg.algo.keep, pad_id=roles.pad_id, **options)
    return Prepared(m, rollouts, fresh, stale, judged, comparisons, kept, batch)


def learn(cfg: Config, roles: Roles, plan: Plan, state: RunState, p: Prepared, t: int) -> Callable[[], dict]:
    """Iteration t's update sent and its policy published (neither waited for: a generator's calls
    run in order, so it loads the version before its next generation); returns what waits for the
    update's metrics."""
    p.m.update(state.memory.observe(p.judged, p.kept))
    with timed(p.m, "update"):
        results = update(roles, p.batch, cfg.algo, t, cfg.train.iterations)
        state.version += 1
    with timed(p.m, "sync_weights"):
        if plan.publishes(t):
            state.held = sync_weights(roles, state.version, wait=False)
    return results


def prefetches(cfg: Config, plan: Plan, t: int) -> bool:
    """Whether iteration t + 1 is prepared while t's update runs: in async mode, unless t + 1 is a
    barrier or past the end, or t ends with a checkpoint (which holds no later iteration's data)."""
    return (cfg.pipeline.mode == "async" and t + 1 < cfg.train.iterations and not plan.barrier(t + 1)
            and (t + 1) % cfg.checkpoint.every != 0)


def selfplay(cfg: Config, run_dir: Path, task: Task, policy_path: str, cluster, summary: dict, resuming: bool,
             bar) -> dict:
    """Build the roles, restore the run (``resuming``) and play it to the end: the loop of stages."""
    algo = get_algorithm(cfg.algo.name)
    plan = algo.plan(cfg.algo, source(cfg, task))
    roles = build_roles(cfg, task, policy_path, cluster)
    state = resume(roles, run_dir, algo) if resuming else RunState(algo.memory())
    bar.n = state.iteration
    bar.refresh()
    eval_states = task.heldout_states(cfg.eval.conversations, cfg.seed)
    final_states = task.heldout_states(cfg.eval.final_conversations, cfg.seed + 1)
    summary["init_policy"] = str(Path(policy_path).resolve())
    if "start" not in summary:
        summary["start"] = evaluate(roles, task, final_states, cfg.eval.headline_samples, seed=cfg.seed)
        write_summary(run_dir, summary)
    generation = Generation(roles, plan, seed=cfg.seed, iterations=cfg.train.iterations,
                            ahead=cfg.pipeline.ahead, start=state.iteration)
    with ParquetWriter() as records:  # (Parquet shards written off the loop's critical path)
        upcoming: Prepared | AlignplayError | None = None  # iteration t's data, prepared during t − 1
        for t in range(state.iteration, cfg.train.iterations):
            wall, before = time.perf_counter(), (state.version, state.held)
            try:
                if isinstance(upcoming, AlignplayError):  # (raised while t − 1 was finishing: it is t's)
                    raise upcoming
                p = upcoming or prepare(cfg, roles, algo, plan, generation, state, t)
                results = learn(cfg, roles, plan, state, p, t)
                upcoming = None
                if prefetches(cfg, plan, t):
                    try:
                        upcoming = prepare(cfg, roles, algo, plan, generation, state, t + 1)
                    except AlignplayError as e:
                        upcoming = e
                with timed(p.m, "update"):
                    p.m.update(results())
                before = None
            except AlignplayError as e:
                if before is not None:  # the update did not complete: what it published is no version
                    state.version, state.held = before
                # Stop with a resumable checkpoint: each iteration makes exactly one update, so
                # `version` iterations are complete (whichever stage failed). A lost learner has
                # nothing to save: the run rebuilds from the latest checkpoint. Nor has a learner that
                # refused a non-finite value part-way through its update (its weights are no iteration's).
                if not (isinstance(e, RoleLost) and e.rebuild) and not getattr(e, "applied", 0):
                    save_checkpoint(roles, run_dir, state, state.version, cfg.checkpoint.keep, records=records)
                raise
            m, rollouts, fresh, stale, comparisons, batch = p.m, p.rollouts, p.fresh, p.stale, p.comparisons, p.batch
            state.count(rollouts, stale, batch)
            with timed(m, "log"):  # (before a checkpoint: one that holds iteration t + 1 has its records)
                log(records, run_dir, m, state, rollouts, fresh, stale, comparisons, batch)
            with timed(m, "checkpoint"):
                if (t + 1) % cfg.checkpoint.every == 0 and t + 1 < cfg.train.iterations:
                    save_checkpoint(roles, run_dir, state, t + 1, cfg.checkpoint.keep, records=records)
            try:
                with timed(m, "evaluate"):
                    if (t + 1) % cfg.eval.every == 0 or t + 1 == cfg.train.iterations:
                        m.update(evaluate(roles, task, eval_states, cfg.eval.samples, seed=cfg.seed + t + 1))
            except AlignplayError as e:  # the iteration is complete and logged: keep it, then stop
                append_metrics(run_dir, m)
                if not (isinstance(e, RoleLost) and e.rebuild):
                    save_checkpoint(roles, run_dir, state, t + 1, cfg.checkpoint.keep, records=records)
                raise
            elapsed = time.perf_counter() - wall
            append_metrics(run_dir, {**m, "samples_per_s": len(batch) / elapsed, "iteration_s": elapsed,
                                      "time": time.time()})  # (when it ended, Unix seconds)
            bar.update(1)
            if m["win_rate_vs_init"] is not None:
                bar.set_postfix(win_rate=f"{m['win_rate_vs_init']:.3f}")
        cluster.get([g.call(RolloutGenerator.ping) for g in roles.generators])  # drain queued weight syncs
        final = save_checkpoint(roles, run_dir, state, cfg.train.iterations, cfg.checkpoint.keep, final=True,
                                records=records)
    if state.held[0] != state.version:  # a run ending mid-round: evaluate the learner's latest policy
        state.held = sync_weights(roles, state.version, wait=True)
    summary.update(final=evaluate(roles, task, final_states, cfg.eval.headline_samples, seed=cfg.seed + 10**6),
                   final_policy=str((final / "policy").resolve()), iterations=cfg.train.iterations,
                   samples_generated=state.counters["generated_total"])
    return summary
