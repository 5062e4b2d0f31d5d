"""Weight-sync benchmark: seconds to publish one policy version from the learner into a generator
and have it loaded there, by each ``pipeline.weight_sync`` path, against a local ``state_dict``
copy (the floor: what any path must at least do once).

Random-init Llamas of about 1 M, 10 M and 100 M parameters (``quick=true``: 1 M and 10 M) are
saved once; a ``Learner`` and an ``hf`` ``RolloutGenerator`` are Ray actors on this machine, one
core each, as in a run. Each path is timed end to end from the driver, as ``sync_weights`` runs
it: ``object_store`` (the learner's copy put into the store, the generator reads and loads it) and
``broadcast`` (a gloo broadcast from the learner straight into the generator's tensors). The
median of ``repeats`` versions is reported, after one untimed version per path.

    .venv/bin/python bench/weight_sync.py [quick=true]

Ends with one JSON line: seconds per path and size, each path over the copy, and whether the faster
path is within 2× the copy at the largest size (the issue's target).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

#: name → Llama sizes (head dim 64)
MODELS = {
    "1M": dict(hidden_size=128, layers=4, heads=2, intermediate_size=512),
    "10M": dict(hidden_size=256, layers=10, heads=4, intermediate_size=1024),
    "100M": dict(hidden_size=768, layers=14, heads=12, intermediate_size=2048),
}


def median_seconds(fn, repeats: int) -> float:
    fn()  # untimed: first allocations, first connections
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_size(cluster, path: str, repeats: int) -> dict:
    import torch

    from actors.generator import RolloutGenerator
    from actors.learner import Learner
    from framework.jobs.selfplay import connect_weights
    from framework.models import load_policy

    torch.set_num_threads(1)
    model = load_policy(path)[0]
    params = sum(p.numel() for p in model.parameters())
    state = model.state_dict()

    def copy():
        return {k: v.detach().clone() for k, v in state.items()}

    copy_s = median_seconds(copy, repeats)

    learner = cluster.spawn(Learner, cpus=1, model_path=path)
    by_store = cluster.spawn(RolloutGenerator, cpus=1, model_path=path, backend="hf")
    by_broadcast = cluster.spawn(RolloutGenerator, cpus=1, model_path=path, backend="hf")
    connect_weights(cluster, cluster.init_method(), [learner], [by_broadcast])
    version = iter(range(1, 10_000))

    def object_store():
        weights = learner.call(Learner.weights)
        cluster.get(by_store.call(RolloutGenerator.set_weights, next(version), weights))

    def broadcast():
        cluster.get([by_broadcast.call(RolloutGenerator.receive_weights, next(version)),
                     learner.call(Learner.broadcast_weights)])

    seconds = {"copy": copy_s, "object_store": median_seconds(object_store, repeats),
               "broadcast": median_seconds(broadcast, repeats)}
    cluster.release()
    return {"params": params, "seconds": seconds}


def main(quick: bool) -> dict:
    from actors.remote import RayCluster
    from framework.models import TinyModelSpec, build_tiny_model
    from games.tasks import get_task

    sizes = ["1M", "10M"] if quick else list(MODELS)
    repeats = 3 if quick else 5
    scratch = tempfile.mkdtemp(prefix="bench-weight-sync-")
    corpus = get_task("running_sum", turns=3).tokenizer_corpus(0)
    paths = {name: str(build_tiny_model(TinyModelSpec(**MODELS[name], max_positions=64), corpus, seed=0,
                                        cache_dir=scratch)) for name in sizes}
    cluster = RayCluster(num_cpus=3)
    try:
        results = {name: bench_size(cluster, paths[name], repeats) for name in sizes}
    finally:
        cluster.shutdown()

    print(f"\none version, learner → one hf generator (Ray actors, one core each), median of {repeats}; "
          f"{len(os.sched_getaffinity(0))} cores, load average {os.getloadavg()[0]:.1f}\n")
    print(f"{'model':<6} {'params':>9} {'copy s':>8} {'store s':>8} {'bcast s':>8} {'store/copy':>10} {'bcast/copy':>10}")
    for name, r in results.items():
        s = r["seconds"]
        print(f"{name:<6} {r['params'] / 1e6:>8.1f}M {s['copy']:>8.3f} {s['object_store']:>8.3f} {s['broadcast']:>8.3f} "
              f"{s['object_store'] / s['copy']:>10.2f} {s['broadcast'] / s['copy']:>10.2f}")
    largest = results[sizes[-1]]["seconds"]
    best = min(largest["object_store"], largest["broadcast"]) / largest["copy"]
    summary = {
        "seconds": {n: {k: round(v, 4) for k, v in r["seconds"].items()} for n, r in results.items()},
        "over_copy": {n: {k: round(r["seconds"][k] / r["seconds"]["copy"], 2) for k in ("object_store", "broadcast")}
                      for n, r in results.items()},
        "params": {n: r["params"] for n, r in results.items()},
        "largest": sizes[-1], "faster_over_copy": round(best, 2), "target_met": best <= 2.0,
        "load_average": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main(quick="quick=true" in sys.argv[1:])
