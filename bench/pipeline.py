"""Pipeline benchmark: one self-play workload run five ways, in one process run.

  (a) bare: a single-process loop doing the same generate → judge → build batch → train →
      load weights work with the plain classes, no Ray;
  (b) the Ray pipeline, sync and async, *disaggregated*: generator and learner actors each pinned
      to their own core with one thread (the CPU stand-in for separate generator/learner GPUs);
  (c) the same *colocated*: both actors share both cores (two threads each), like the bare loop;
  (d) (b) on a multi-node cluster (``ray.cluster_utils``: a head of 0 CPUs and two raylets of one
      CPU each on this machine), the generator on one node and the learner on the other, so every
      weight version and batch crosses nodes through Ray's object store.

Ideal async/sync ratios come from each run's own stage times: disaggregated (G₁ + T₁)/max(G₁, T₁);
colocated (G₂ + T₂)/max(G₁, T₁) — overlapped, the two roles get one core each.

    python bench/pipeline.py [quick=true]

Ends with one JSON line: async_over_sync, async_ideal (disaggregated), sync_over_bare (colocated
sync time / bare time, same threads), the colocated ratio, the stage times, and the multi-node
case: multinode_async_over_sync and multinode_over_single_node (its s/iteration over (b)'s, per mode).
"""

from __future__ import annotations

import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

WORKLOAD = ["model.tiny.hidden_size=128", "model.tiny.heads=4", "model.tiny.layers=4",
            "model.tiny.intermediate_size=384",
            "model.max_new_tokens=16", "warm_start.steps=0", "train.conversations=64", "algo.k=4",
            "algo.keep=best_worst", "task.turns=3",
            "eval.every=100000", "eval.conversations=2", "eval.final_conversations=2", "eval.samples=1",
            "checkpoint.every=100000"]


def config(extra: list[str], iterations: int, cache: str):
    from framework.config import load_config

    return load_config(None, [*WORKLOAD, f"train.iterations={iterations}", f"cache_dir={cache}", *extra])


def bare_loop(cfg, threads: int) -> dict:
    """The same work, in this process, with the plain classes (no Ray, no driver loop)."""
    import torch

    from actors.generator import RolloutGenerator
    from actors.judge import PreferenceJudge
    from actors.learner import Learner
    from framework.algorithms.registry import get_algorithm
    from framework.algorithms.mpo import state_pairs
    from framework.jobs.selfplay import iteration_seed
    from framework.jobs.warmstart import prepare_policy
    from games.tasks import get_task

    task = get_task(**dataclasses.asdict(cfg.task))
    path = prepare_policy(cfg, task, progress=False)
    gen = RolloutGenerator(model_path=path, max_new_tokens=cfg.model.max_new_tokens, threads=threads)
    learner = Learner(model_path=path, lr=cfg.algo.lr, threads=threads, seed=cfg.seed)
    judge = PreferenceJudge(kind="rule", task=task)
    algo = get_algorithm(cfg.algo.name)
    torch.set_num_threads(threads)
    times = {"generate": [], "train": [], "iteration": []}
    for t in range(cfg.train.iterations):
        start = time.perf_counter()
        episodes = task.episodes("train", cfg.train.conversations, iteration_seed(cfg.seed, t))
        rollouts = gen.rollout(episodes, k=cfg.algo.k, iteration=t, seed=iteration_seed(cfg.seed, t) * 10)
        g = time.perf_counter()
        pairs = state_pairs(rollouts)  # every pair at every state, as the pipeline's MPO judges
        probs = judge.compare([json.loads(p.state) for p in pairs], [p.answer_a for p in pairs],
                              [p.answer_b for p in pairs])
        comparisons = [p.judged(q, iteration=t, judge="rule") for p, q in zip(pairs, probs)]
        batch = algo.build_batch(rollouts, comparisons, keep=cfg.algo.keep, pad_id=gen.pad_id())
        u = time.perf_counter()
        learner.train(batch, algorithm=cfg.algo.name, eta=cfg.algo.eta, epochs=cfg.algo.epochs,
                      minibatches=cfg.algo.minibatches)
        gen.set_weights(t + 1, learner.weights())
        end = time.perf_counter()
        times["generate"].append(g - start)
        times["train"].append(end - u)
        times["iteration"].append(end - start)
    return {k: float(np.median(v[1:])) for k, v in times.items()}  # the first iteration warms up


def in_fresh_process(fn, *args, **kwargs):
    """Run fn in a new Python process, as every Ray actor runs in one (same start-up, same heap)."""
    import multiprocessing as mp

    with mp.get_context("spawn").Pool(1) as pool:
        return pool.apply(fn, args, kwargs)


def wait_for_ray_to_exit(timeout: float = 30.0) -> None:
    """Ray's processes outlive ray.shutdown() by a few seconds; measuring then would share cores."""
    import psutil

    deadline = time.time() + timeout
    while time.time() < deadline and any(
            p.info["name"] and ("raylet" in p.info["name"] or p.info["name"].startswith("ray::"))
            for p in psutil.process_iter(["name"])):
        time.sleep(0.5)


def pipeline(cfg, wait: bool = True) -> dict:
    from framework.jobs import selfplay

    with tempfile.TemporaryDirectory() as run_dir:
        selfplay.run(cfg, Path(run_dir), progress=False)
        rows = [json.loads(x) for x in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()][1:]
    if wait:
        wait_for_ray_to_exit()
    busy = [r["iteration_s"] - r["evaluate_s"] - r["checkpoint_s"] for r in rows]
    # medians: single iterations on a shared 2-core machine have outliers either way
    return {"iteration": float(np.median(busy)), "generate": float(np.median([r["generate_s"] for r in rows])),
            "train": float(np.median([r["update_s"] for r in rows])),
            "samples_per_s": float(np.median([r["samples"] for r in rows]) / np.median(busy))}


#: the multi-node case: generator on node_gen, learner (with the judge and reference) on node_learn
ON_TWO_NODES = ["pipeline.resources.generator.resources={node_gen: 0.01}",
                *(f"pipeline.resources.{role}.resources={{node_learn: 0.01}}" for role in ("learner", "judge", "reference"))]


def on_two_nodes(cfg) -> dict:
    """``pipeline(cfg)`` on a cluster of two raylets, one CPU each, on this machine."""
    import socket

    import ray
    from ray.cluster_utils import Cluster

    with socket.socket() as sock:  # the head's dashboard agent: not the port another Ray may hold
        sock.bind(("127.0.0.1", 0))
        agent_port = sock.getsockname()[1]
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "dashboard_agent_listen_port": agent_port})
    c.add_node(num_cpus=1, resources={"node_gen": 1})
    c.add_node(num_cpus=1, resources={"node_learn": 1})
    ray.init(address=c.address, log_to_driver=False, configure_logging=False)
    try:
        return pipeline(cfg, wait=False)
    finally:
        ray.shutdown()
        c.shutdown()
        wait_for_ray_to_exit()


def main(quick: bool) -> dict:
    iterations = 3 if quick else 8
    cache = tempfile.mkdtemp(prefix="alignplay-bench-")
    base = ["pipeline.generators=1", "pipeline.learners=1", "pipeline.max_staleness=1"]
    colocated = [*base, "pipeline.placement=colocated", "pipeline.generator_threads=2", "pipeline.learner_threads=2"]
    disagg = [*base, "pipeline.placement=disaggregated", "pipeline.generator_threads=1", "pipeline.learner_threads=1"]
    print("bare loop (2 threads) ...", flush=True)
    bare = in_fresh_process(bare_loop, config([], iterations, cache), threads=2)
    runs = {}
    for name, extra in (("disaggregated_sync", [*disagg, "pipeline.mode=sync"]),
                        ("disaggregated_async", [*disagg, "pipeline.mode=async"]),
                        ("colocated_sync", [*colocated, "pipeline.mode=sync"]),
                        ("colocated_async", [*colocated, "pipeline.mode=async"])):
        print(f"{name} ...", flush=True)
        runs[name] = pipeline(config(extra, iterations, cache))
    for mode in ("sync", "async"):
        print(f"multinode_{mode} ...", flush=True)
        runs[f"multinode_{mode}"] = on_two_nodes(config([*disagg, *ON_TWO_NODES, f"pipeline.mode={mode}"], iterations,
                                                        cache))
    g1, t1 = runs["disaggregated_sync"]["generate"], runs["disaggregated_sync"]["train"]
    g2, t2 = runs["colocated_sync"]["generate"], runs["colocated_sync"]["train"]
    ratio = runs["disaggregated_async"]["samples_per_s"] / runs["disaggregated_sync"]["samples_per_s"]
    ideal = (g1 + t1) / max(g1, t1)
    coloc_ratio = runs["colocated_async"]["samples_per_s"] / runs["colocated_sync"]["samples_per_s"]
    coloc_ideal = (g2 + t2) / max(g1, t1)
    sync_over_bare = runs["colocated_sync"]["iteration"] / bare["iteration"]
    multi_ratio = runs["multinode_async"]["samples_per_s"] / runs["multinode_sync"]["samples_per_s"]
    multi_over_single = {m: runs[f"multinode_{m}"]["iteration"] / runs[f"disaggregated_{m}"]["iteration"]
                         for m in ("sync", "async")}
    print(f"\nbare loop: {bare['iteration']:.2f} s/iteration (generate {bare['generate']:.2f} s, "
          f"train {bare['train']:.2f} s)")
    for name, r in runs.items():
        print(f"{name:<22} {r['iteration']:.2f} s/iteration, {r['samples_per_s']:.0f} samples/s "
              f"(generate {r['generate']:.2f} s, update {r['train']:.2f} s)")
    print(f"\ndisaggregated async/sync throughput {ratio:.2f}× (ideal {ideal:.2f}×, {ratio / ideal:.0%} of it)")
    print(f"colocated    async/sync throughput {coloc_ratio:.2f}× (ideal {coloc_ideal:.2f}×)")
    print(f"colocated sync time / bare loop time {sync_over_bare:.3f}× (same threads)")
    print(f"multi-node   async/sync throughput {multi_ratio:.2f}×; s/iteration over one node: "
          f"sync {multi_over_single['sync']:.3f}×, async {multi_over_single['async']:.3f}×")
    result = {"bench": "pipeline", "iterations": iterations, "async_over_sync": ratio, "async_ideal": ideal,
              "async_fraction_of_ideal": ratio / ideal, "colocated_async_over_sync": coloc_ratio,
              "colocated_async_ideal": coloc_ideal, "sync_over_bare": sync_over_bare,
              "bare_s_per_iteration": bare["iteration"],
              "stage_s": {"G1": g1, "T1": t1, "G2": g2, "T2": t2},
              "multinode_async_over_sync": multi_ratio, "multinode_over_single_node": multi_over_single}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main(quick="quick=true" in sys.argv[1:])
