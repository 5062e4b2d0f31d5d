"""The single controller of a self-play run (DESIGN §1): build the roles, then loop over named,
timed stages — generate → judge → build_batch → update → sync_weights → checkpoint → evaluate → log.

In ``sync`` mode each stage waits for the previous one. In ``async`` mode the generation of the
next ``max_staleness`` iterations is already queued while the learner trains, so generators run
ahead of the learner by at most ``max_staleness`` policy versions; samples older than that are
dropped and counted. Ray stays behind ``actors.remote`` (this module never imports it).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import shutil
import time
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from framework import checkpoint as ckpt
from framework.algorithms import get_algorithm
from framework.algorithms.ompo import OptimisticCache
from framework.config import Config
from framework.demos import demonstrations_for
from framework.errors import AlignplayError, InputError
from framework.evaluation import class_counts, win_rate
from framework.records import Comparison, Rollout, write_parquet


@contextmanager
def timed(metrics: dict, stage: str):
    start = time.perf_counter()
    yield
    metrics[f"{stage}_s"] = metrics.get(f"{stage}_s", 0.0) + time.perf_counter() - start


@dataclass
class Roles:
    """Handles of the actors of one run (futures come from ``cluster.call``)."""

    cluster: object
    generators: list
    reference: object  # a frozen generator holding the warm-start policy (for win rates)
    judge: object
    learners: list
    pad_id: int


def split_stale(rollouts: list[Rollout], learner_version: int, max_staleness: int):
    """Rollouts no older than ``max_staleness`` versions, and the stale rest."""
    fresh = [r for r in rollouts if learner_version - r.policy_version <= max_staleness]
    stale = [r for r in rollouts if learner_version - r.policy_version > max_staleness]
    return fresh, stale


def iteration_seed(seed: int, iteration: int) -> int:
    return seed * 1_000_003 + iteration


# --- building the roles ------------------------------------------------------------------------
def build_roles(cfg: Config, task, policy_path: str, cluster) -> Roles:
    p = cfg.pipeline
    n_cpu = max(1, p.num_cpus or os.cpu_count() or 1)
    pin_gen = pin_learn = None
    if p.placement == "disaggregated":  # generators on the first cores, learners on the rest
        cores = list(range(n_cpu))
        pin_gen = [cores[: max(1, n_cpu - p.learners)]] * p.generators
        pin_learn = [[cores[-1 - i % max(1, n_cpu - 1)]] for i in range(p.learners)]
    init_method = cluster.init_method() if p.learners > 1 else None
    learners = [
        cluster.spawn(_learner_cls(), cpus=0, pin=pin_learn[i] if pin_learn else None,
                      model_path=policy_path, rank=i, world_size=p.learners, init_method=init_method,
                      lr=cfg.algo.lr, threads=p.learner_threads, seed=cfg.seed)
        for i in range(p.learners)
    ]
    generators = [
        cluster.spawn(_generator_cls(), cpus=0, pin=pin_gen[i] if pin_gen else None, model_path=policy_path,
                      backend=p.backend, generator_id=i, max_new_tokens=cfg.model.max_new_tokens,
                      threads=p.generator_threads)
        for i in range(p.generators)
    ]
    reference = cluster.spawn(_generator_cls(), cpus=0, model_path=policy_path, backend=p.backend,
                              generator_id=-1, max_new_tokens=cfg.model.max_new_tokens, threads=1)
    judge = cluster.spawn(_judge_cls(), cpus=0, kind=cfg.judge.kind, task=task, target=cfg.judge.target,
                          kwargs=dict(cfg.judge.kwargs), retries=cfg.judge.retries)
    pad_id = cluster.get(cluster.call(generators[0], "pad_id"))
    return Roles(cluster, generators, reference, judge, learners, pad_id)


def _learner_cls():
    from actors.learner import Learner
    return Learner


def _generator_cls():
    from actors.generator import RolloutGenerator
    return RolloutGenerator


def _judge_cls():
    from actors.judge import PreferenceJudge
    return PreferenceJudge


# --- stages ------------------------------------------------------------------------------------
def launch_generation(roles: Roles, task, cfg: Config, iteration: int, algo, demos=None) -> list:
    n, seed = len(roles.generators), iteration_seed(cfg.seed, iteration)
    k = cfg.algo.k if algo.samples is None else algo.samples
    if algo.rollout == "demos":  # score each demonstration and answer its state
        lo, hi = 0, len(demos)
        if algo.slices:  # round r of T takes the r-th slice, one part per iteration of the round
            n, T = cfg.algo.round_iterations, rounds_of(cfg)
            r, part = (iteration // n) % T, iteration % n
            lo_r, hi_r = r * len(demos) // T, (r + 1) * len(demos) // T
            lo, hi = lo_r + part * (hi_r - lo_r) // n, lo_r + (part + 1) * (hi_r - lo_r) // n
        items = [(f"demo-{i}", demos[i].messages, demos[i].response) for i in range(lo, hi)]
        return [roles.cluster.call(g, "respond", items[i::n], k=k, iteration=iteration, seed=seed * 10 + i)
                for i, g in enumerate(roles.generators)]
    prompt_seed = iteration_seed(cfg.seed, 0 if cfg.train.fixed_prompts else iteration)
    episodes = task.episodes("train", cfg.train.conversations, prompt_seed)
    return [roles.cluster.call(g, "rollout", episodes[i::n], k=k, iteration=iteration, seed=seed * 10 + i,
                               mode=algo.rollout_mode(cfg.algo.q))
            for i, g in enumerate(roles.generators)]


def judge_rollouts(roles: Roles, rollouts: list[Rollout], iteration: int, judge_name: str) -> list[Comparison]:
    """All K(K−1)/2 pairs at every visited state, in one call to the judge.

    With continued branches (Monte-Carlo Q) the continuations of turn h's answers are also
    compared at each later turn, branch 0 being the main line (its sample 0 there).
    """
    states: dict = {}
    for r in rollouts:
        states.setdefault((r.conversation_id, r.turn, r.branch_of), []).append(r)
    for (cid, turn, branch_of), rs in list(states.items()):
        if branch_of >= 0:
            rs += [r for r in states.get((cid, turn, -1), []) if r.sample == 0]
    conversations, a, b, keys = [], [], [], []
    for (cid, turn, branch_of), rs in states.items():
        rs.sort(key=lambda r: r.sample)
        parsed: dict = {}  # in tree mode every sample shares the state; whole paths each have theirs
        for i, j in itertools.combinations(range(len(rs)), 2):
            conversations.append(parsed.setdefault(rs[i].messages, rs[i].state))
            a.append(rs[i].response)
            b.append(rs[j].response)
            keys.append((cid, turn, branch_of, rs[i].sample, rs[j].sample))
    if not keys:
        return []
    probs = roles.cluster.get(roles.cluster.call(roles.judge, "compare", conversations, a, b))
    return [Comparison(cid, turn, iteration, i, j, float(p), judge_name, branch_of=branch_of)
            for (cid, turn, branch_of, i, j), p in zip(keys, probs)]


def judge_previous(roles: Roles, rollouts: list[Rollout], cache, iteration: int,
                   judge_name: str) -> list[Comparison]:
    """Every answer against the previous iterate's answers cached for its state (OMPO)."""
    pairs = cache.opponents(rollouts)
    if not pairs:
        return []
    parsed: dict = {}
    conversations = [parsed.setdefault(r.messages, r.state) for r, _, _ in pairs]
    probs = roles.cluster.get(roles.cluster.call(roles.judge, "compare", conversations,
                                                 [r.response for r, _, _ in pairs], [t for _, _, t in pairs]))
    return [Comparison(r.conversation_id, r.turn, iteration, r.sample, j, float(p), judge_name, "previous")
            for (r, j, _), p in zip(pairs, probs)]


def update(roles: Roles, batch, cfg: Config, iteration: int) -> dict:
    shards = batch.shard(len(roles.learners))
    lr = cfg.algo.lr_at(iteration, cfg.train.iterations)
    results = roles.cluster.get([
        roles.cluster.call(learner, "train", shard, algorithm=cfg.algo.name, eta=cfg.algo.eta, tau=cfg.algo.tau,
                           link=cfg.algo.link, epochs=cfg.algo.epochs, minibatches=cfg.algo.minibatches, lr=lr,
                           kl_coef=cfg.algo.kl_coef)
        for learner, shard in zip(roles.learners, shards)
    ])
    skip = ("examples", "version", "train_seconds")
    out = {k: float(np.mean([r[k] for r in results])) for k in results[0] if k not in skip}
    out["examples"] = sum(r["examples"] for r in results)
    out["lr"] = lr
    return out


def rounds_of(cfg: Config) -> int:
    """IRFT's T: ``algo.rounds``, or as many rounds of ``round_iterations`` as the run holds."""
    return cfg.algo.rounds or -(-cfg.train.iterations // cfg.algo.round_iterations)


def sync_weights(roles: Roles, version: int, wait: bool):
    """Learner rank 0 → object store → every generator (one copy in the store per version);
    returns (version, weights future): what the generators hold from now on."""
    weights = roles.cluster.call(roles.learners[0], "weights")
    done = [roles.cluster.call(g, "set_weights", version, weights) for g in roles.generators]
    if wait:
        roles.cluster.get(done)
    return version, weights


def evaluate(roles: Roles, task, states: list, samples: int, seed: int) -> dict:
    """Win rate of the current policy against the warm start, and exploitability, on held-out states."""
    c = roles.cluster
    cur, ref = c.get([c.call(roles.generators[0], "sample", states, k=samples, seed=seed),
                      c.call(roles.reference, "sample", states, k=samples, seed=seed + 1)])
    conversations = [s for s in states for _ in range(samples)]
    a = [x.text for group in cur for x in group]
    b = [x.text for group in ref for x in group]
    probs = np.array(c.get(c.call(roles.judge, "compare", conversations, a, b))).reshape(len(states), samples)
    rate, half = win_rate(probs)
    out = {"win_rate_vs_init": rate, "win_rate_ci95": half}
    if hasattr(task, "exploitability"):
        counts = class_counts(task, states, [[x.text for x in g] for g in cur])
        out["exploitability"] = float(task.exploitability(counts).mean())
        correct = [i for i, name in enumerate(task.class_names) if name.startswith("correct")]
        out["correct"] = float(counts[:, correct].sum() / counts.sum())
    return out


def write_records(run_dir: Path, iteration: int, fresh: list[Rollout], stale: list[Rollout],
                  comparisons: list[Comparison], learner_version: int) -> None:
    """This iteration's rollouts (with the learner version that consumed them) and comparisons."""
    rows = [dataclasses.replace(r, learner_version=learner_version) for r in fresh]
    rows += [dataclasses.replace(r, learner_version=learner_version, stale=True) for r in stale]
    write_parquet(rows, run_dir / "rollouts" / f"iter_{iteration:06d}.parquet")
    write_parquet(comparisons, run_dir / "comparisons" / f"iter_{iteration:06d}.parquet")


def save_checkpoint(roles: Roles, run_dir: Path, iteration: int, version: int, counters: dict, keep: int,
                    final: bool = False, cache=None, held=None) -> Path:
    """Policy, optimizer and run state (plus OMPO's previous-iterate answers) in one directory.

    ``held``: (version, weights future) the generators hold; mid-way through an IRFT round that is
    the round's starting policy, saved too (``generator.safetensors``) so a resume continues the round.
    """
    name = "final" if final else f"iter_{iteration:06d}"
    tmp = run_dir / "checkpoints" / f".{name}.tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    roles.cluster.get(roles.cluster.call(roles.learners[0], "save", str(tmp)))
    if cache is not None:
        cache.save(tmp)
    extra = {}
    if held is not None and held[0] != version:
        extra["generator_version"] = held[0]
        if held[1] is not None:
            from safetensors.torch import save_file

            weights = held[1] if isinstance(held[1], dict) else roles.cluster.get(held[1])
            save_file({k: v.contiguous() for k, v in weights.items()}, str(tmp / "generator.safetensors"))
    ckpt.write_state(tmp, {"iteration": iteration, "policy_version": version, **counters, **extra})
    out = run_dir / "checkpoints" / name
    ckpt.finalize(tmp, out)
    periodic = sorted((run_dir / "checkpoints").glob("iter_*"))
    for old in periodic[:-keep] if keep > 0 else []:
        shutil.rmtree(old)
    return out


# --- the run -----------------------------------------------------------------------------------
def run_selfplay(cfg: Config, run_dir: Path, *, progress: bool = True) -> dict:
    """Warm start (cached), then MPO self-play; writes metrics, records, checkpoints, a summary."""
    from tqdm.auto import tqdm

    from actors.remote import make_cluster
    from framework.warmstart import prepare_policy
    from games.tasks import get_task

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    task = get_task(**dataclasses.asdict(cfg.task))
    algo = get_algorithm(cfg.algo.name)
    policy_path = prepare_policy(cfg, task, progress=progress)
    cluster = make_cluster(use_ray=cfg.pipeline.ray, num_cpus=cfg.pipeline.num_cpus,
                           concurrent_roles=cfg.pipeline.mode == "async")
    try:
        roles = build_roles(cfg, task, policy_path, cluster)
        loop_start = time.perf_counter()
        start, version, counters = 0, 0, {"dropped_stale": 0, "samples_total": 0, "generated_total": 0}
        held = (0, None)  # the generators start with the initial policy
        cache = OptimisticCache() if algo.optimistic else None
        demos = demonstrations_for(cfg, task) if algo.rollout == "demos" else None
        parts = rounds_of(cfg) * cfg.algo.round_iterations  # slices × iterations per round
        if demos is not None and algo.slices and len(demos) < parts:
            raise InputError(f"{len(demos)} demonstrations cannot fill {parts} parts of IRFT rounds: add "
                             f"demonstrations (demos.count) or set algo.rounds")
        metrics_path = run_dir / "metrics.jsonl"
        if cfg.resume:
            start, version, counters, latest, held = _resume(roles, run_dir)
            if algo.optimistic:
                cache = OptimisticCache.load(latest)
        eval_states = task.heldout_states(cfg.eval.conversations, cfg.seed)
        final_states = task.heldout_states(cfg.eval.final_conversations, cfg.seed + 1)
        summary_path = run_dir / "summary.json"
        summary = json.loads(summary_path.read_text()) if cfg.resume and summary_path.exists() else {}
        summary["init_policy"] = str(Path(policy_path).resolve())
        if "start" not in summary:
            summary["start"] = evaluate(roles, task, final_states, cfg.eval.samples, seed=cfg.seed)
            summary_path.write_text(json.dumps(summary, indent=1))

        ahead = cfg.pipeline.max_staleness if cfg.pipeline.mode == "async" else 0
        inflight: deque = deque()
        next_launch = start
        bar = tqdm(total=cfg.train.iterations, initial=start, desc="self-play", disable=not progress, unit="it")
        for t in range(start, cfg.train.iterations):
            m: dict = {"iteration": t + 1}
            wall = time.perf_counter()
            try:
                with timed(m, "generate"):
                    while next_launch <= min(t + ahead, cfg.train.iterations - 1):
                        inflight.append(launch_generation(roles, task, cfg, next_launch, algo, demos))
                        next_launch += 1
                    rollouts = [r for part in cluster.get(inflight.popleft()) for r in part]
                with timed(m, "judge"):
                    judge_name = cfg.judge.target or cfg.judge.kind
                    # an IRFT round keeps its starting policy: its samples age by design
                    fresh, stale = split_stale(rollouts, version,
                                               cfg.pipeline.max_staleness + cfg.algo.round_iterations - 1)
                    comparisons = judge_rollouts(roles, rollouts, t, judge_name) if algo.judged else []
                    if cache is not None:
                        previous = judge_previous(roles, fresh, cache, t, judge_name)
                        comparisons += previous
                        m["optimistic_states"] = _share_with_previous(fresh, previous)
                with timed(m, "build_batch"):
                    options = {name: getattr(cfg.algo, name) for name in algo.options}
                    batch = algo.build_batch(fresh, comparisons, keep=cfg.algo.keep, pad_id=roles.pad_id, **options)
                    if cache is not None:
                        cache.replace(fresh)
                with timed(m, "update"):
                    m.update(update(roles, batch, cfg, t))
                    version += 1
                with timed(m, "sync_weights"):
                    if (t + 1) % cfg.algo.round_iterations == 0:
                        held = sync_weights(roles, version, wait=cfg.pipeline.mode == "sync")
            except AlignplayError:
                # Stop with a resumable checkpoint: each iteration makes exactly one update, so
                # `version` iterations are complete (whichever stage failed).
                save_checkpoint(roles, run_dir, version, version, counters, cfg.checkpoint.keep, cache=cache,
                                held=held)
                raise
            generated = sum(r.sample >= 0 for r in rollouts)  # demonstrations are sample -1
            counters["dropped_stale"] += len(stale)
            counters["samples_total"] += len(batch)
            counters["generated_total"] += generated
            ages = [version - 1 - r.policy_version for r in fresh]
            with timed(m, "checkpoint"):
                if (t + 1) % cfg.checkpoint.every == 0 and t + 1 < cfg.train.iterations:
                    save_checkpoint(roles, run_dir, t + 1, version, counters, cfg.checkpoint.keep, cache=cache,
                                    held=held)
            with timed(m, "evaluate"):
                if (t + 1) % cfg.eval.every == 0 or t + 1 == cfg.train.iterations:
                    m.update(evaluate(roles, task, eval_states, cfg.eval.samples, seed=cfg.seed + t + 1))
            with timed(m, "log"):
                write_records(run_dir, t + 1, fresh, stale, comparisons, learner_version=version - 1)
                elapsed = time.perf_counter() - wall
                m.update(policy_version=version, samples=len(batch), generated=generated,
                         samples_per_s=len(batch) / elapsed,
                         iteration_s=elapsed, staleness_mean=float(np.mean(ages)) if ages else 0.0,
                         dropped_stale=len(stale), dropped_stale_total=counters["dropped_stale"])
                m.setdefault("win_rate_vs_init", None)
                m.setdefault("exploitability", None)
                with metrics_path.open("a") as f:
                    f.write(json.dumps(m) + "\n")
            bar.update(1)
            if m["win_rate_vs_init"] is not None:
                bar.set_postfix(win_rate=f"{m['win_rate_vs_init']:.3f}")
        bar.close()
        cluster.get([cluster.call(g, "ping") for g in roles.generators])  # drain queued weight syncs
        final = save_checkpoint(roles, run_dir, cfg.train.iterations, version, counters, cfg.checkpoint.keep,
                                final=True, cache=cache, held=held)
        if held[0] != version:  # a run ending mid-round: evaluate the learner's latest policy
            held = sync_weights(roles, version, wait=True)
        summary["final"] = evaluate(roles, task, final_states, cfg.eval.samples, seed=cfg.seed + 10**6)
        summary["final_policy"] = str((final / "policy").resolve())
        summary["iterations"] = cfg.train.iterations
        summary["samples_generated"] = counters["generated_total"]
        # seconds of this invocation after the (cached) warm start; a resumed run counts its last part
        summary["wall_s"] = time.perf_counter() - loop_start
        summary_path.write_text(json.dumps(summary, indent=1))
        return summary
    finally:
        cluster.shutdown()


def _share_with_previous(fresh: list[Rollout], previous: list[Comparison]) -> float:
    """Share of this iteration's states that the previous iterate also visited."""
    states = {(r.conversation_id, r.turn) for r in fresh}
    seen = {(c.conversation_id, c.turn) for c in previous}
    return len(seen) / len(states) if states else 0.0


def _resume(roles: Roles, run_dir: Path) -> tuple[int, int, dict, Path, tuple]:
    latest = ckpt.latest_checkpoint(run_dir)
    if latest is None:
        raise InputError(f"resume=true but {run_dir} has no checkpoint")
    state = ckpt.read_state(latest)
    iteration, version = state["iteration"], state["policy_version"]
    c = roles.cluster
    c.get([c.call(learner, "load", str(latest), version) for learner in roles.learners])
    held = (version, None)
    if "generator_version" in state:  # mid-way through an IRFT round: its starting policy again
        held = (state["generator_version"], None)
        if (latest / "generator.safetensors").exists():
            from safetensors.torch import load_file

            weights = load_file(str(latest / "generator.safetensors"))
            c.get([c.call(g, "set_weights", held[0], weights) for g in roles.generators])
            held = (held[0], weights)
    else:
        held = sync_weights(roles, version, wait=True)
    # Forget what was logged after the checkpoint: the resumed run writes it again.
    metrics = run_dir / "metrics.jsonl"
    if metrics.exists():
        lines = [ln for ln in metrics.read_text().splitlines() if json.loads(ln)["iteration"] <= iteration]
        metrics.write_text("".join(ln + "\n" for ln in lines))
    for folder in ("rollouts", "comparisons"):
        for shard in (run_dir / folder).glob("iter_*.parquet"):
            if int(shard.stem.split("_")[1]) > iteration:
                shard.unlink()
    counters = {k: state.get(k, 0) for k in ("dropped_stale", "samples_total", "generated_total")}
    return iteration, version, counters, latest, held


# --- evaluating a finished policy (``alignplay eval``) -----------------------------------------
def evaluate_policy(cfg: Config, policy: str, reference: str, *, conversations: int, samples: int,
                    seed: int) -> dict:
    """Judge win rate of ``policy`` against ``reference`` on held-out states (95% interval), and
    the task's exploitability estimate where it has one; in this process, no Ray."""
    from actors.remote import make_cluster
    from games.tasks import get_task

    task = get_task(**dataclasses.asdict(cfg.task))
    cluster = make_cluster(use_ray=False)
    try:
        make = dict(backend="hf", max_new_tokens=cfg.model.max_new_tokens, threads=os.cpu_count() or 1)
        current = cluster.spawn(_generator_cls(), cpus=0, model_path=policy, generator_id=0, **make)
        ref = cluster.spawn(_generator_cls(), cpus=0, model_path=reference, generator_id=-1, **make)
        judge = cluster.spawn(_judge_cls(), cpus=0, kind=cfg.judge.kind, task=task, target=cfg.judge.target,
                              kwargs=dict(cfg.judge.kwargs), retries=cfg.judge.retries)
        roles = Roles(cluster, [current], ref, judge, [], cluster.get(cluster.call(current, "pad_id")))
        states = task.heldout_states(conversations, seed)
        out = evaluate(roles, task, states, samples, seed=seed)
    finally:
        cluster.shutdown()
    out["win_rate_vs_reference"] = out.pop("win_rate_vs_init")
    return {**out, "policy": str(policy), "reference": str(reference), "task": cfg.task.name,
            "states": len(states), "samples_per_state": samples, "seed": seed}
