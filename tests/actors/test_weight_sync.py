"""Weights as a collective (``pipeline.weight_sync=broadcast``): what the generators receive over a
gloo group equals what the object store hands them, in their own dtype, and a run that broadcasts
is the run that goes through the store."""

import json

import torch
from safetensors.torch import load_file

from actors.generator import RolloutGenerator
from actors.learner import Learner
from actors.remote import RayCluster
from tests.actors.test_learner import _batch
from tests.conftest import SMALL


def test_a_broadcast_delivers_the_object_stores_weights_in_each_generators_dtype(ray_session, tiny_policy, task):
    cluster = RayCluster(modules=(__name__, "tests"))
    try:
        learner = cluster.spawn(Learner, cpus=0, model_path=tiny_policy, lr=1e-2)
        by_store, fp32, bf16 = (cluster.spawn(RolloutGenerator, cpus=0, model_path=tiny_policy, backend="hf",
                                              dtype=dtype) for dtype in ("float32", "float32", "bfloat16"))
        local = Learner(model_path=tiny_policy)  # only to build a batch with the right tokens
        cluster.get(learner.call(Learner.train, _batch(task, local), algorithm="mpo", eta=1.0))
        before = cluster.get(fp32.call(RolloutGenerator.weights))
        manifest = cluster.get(fp32.call(RolloutGenerator.weight_manifest))
        bf16_manifest = cluster.get(bf16.call(RolloutGenerator.weight_manifest))
        assert manifest.names == bf16_manifest.names and set(bf16_manifest.dtypes) == {"bfloat16"}
        # one group per dtype: rank 0 sends each tensor in the receivers' dtype
        groups = [([fp32], manifest), ([bf16], bf16_manifest)]
        for receivers, m in groups:
            address = cluster.init_method()
            cluster.get([learner.call(Learner.join_weight_group, address, 1 + len(receivers), m),
                         *[g.call(RolloutGenerator.join_weight_group, address, 1 + i, 1 + len(receivers))
                           for i, g in enumerate(receivers)]])
            held = cluster.get([g.call(RolloutGenerator.receive_weights, 1) for g in receivers] +
                               [learner.call(Learner.broadcast_weights)])
            assert held == [1, 1]  # the version the generator holds, the version the learner sent
        store = learner.call(Learner.weights)
        assert cluster.get(by_store.call(RolloutGenerator.set_weights, 1, store)) == 1
        store, a, b, c = cluster.get([store, *(g.call(RolloutGenerator.weights) for g in (by_store, fp32, bf16))])
    finally:
        cluster.shutdown()
    assert any(not torch.equal(before[k], store[k]) for k in store)  # the step moved the weights
    for k in store:
        assert torch.equal(a[k], store[k]) and torch.equal(b[k], store[k]), k
        assert c[k].dtype == torch.bfloat16 and torch.equal(c[k], store[k].to(torch.bfloat16)), k


def test_a_sharded_learner_broadcasts_its_full_weights(ray_session, tiny_policy, task):
    """Under fsdp each tensor is gathered on both ranks as it goes and rank 0 sends it: the
    generator ends up with what the object-store path (rank 0's gathered copy) would give it."""
    from framework.jobs.selfplay import connect_weights

    cluster = RayCluster(modules=(__name__, "tests"))
    try:
        init, address = cluster.init_method(), cluster.init_method()
        pair = [cluster.spawn(Learner, cpus=0, model_path=tiny_policy, rank=r, world_size=2, init_method=init,
                              lr=1e-2, strategy="fsdp") for r in range(2)]
        generator = cluster.spawn(RolloutGenerator, cpus=0, model_path=tiny_policy, backend="hf")
        batch = _batch(task, Learner(model_path=tiny_policy))
        cluster.get([w.call(Learner.train, shard, algorithm="mpo", eta=1.0) for w, shard in zip(pair, batch.shard(2))])
        connect_weights(cluster, address, pair, [generator])
        sent = cluster.get([generator.call(RolloutGenerator.receive_weights, 1),
                            *[w.call(Learner.broadcast_weights) for w in pair]])
        full, _ = cluster.get([w.call(Learner.weights) for w in pair])
        got = cluster.get(generator.call(RolloutGenerator.weights))
    finally:
        cluster.shutdown()
    assert sent == [1, 1, 1]
    assert got.keys() == full.keys() and all(torch.equal(got[k], full[k]) for k in full)


def test_a_run_that_broadcasts_weights_is_the_run_through_the_object_store(ray_session, tiny_policy, cache_dir,
                                                                         tmp_path):
    """IRFT with rounds of two iterations under Ray, sync mode: the same metrics either way, and the
    checkpoint half-way through a round saves the same generators' policy (under broadcast it
    comes from generator 0, not from a copy in the store)."""
    from framework.config import load_config
    from framework.jobs.selfplay import run as run_selfplay

    common = [f"cache_dir={cache_dir}", *SMALL, "demos.count=8", "train.iterations=4", "checkpoint.every=1",
              "checkpoint.keep=5", "eval.every=4", "pipeline.mode=sync", "pipeline.generators=2", "algo.name=irft",
              "algo.rounds=2", "algo.round_iterations=2"]
    for sync in ("object_store", "broadcast"):
        run_selfplay(load_config(None, [*common, f"pipeline.weight_sync={sync}"]), tmp_path / sync, progress=False)
    a, b = ([json.loads(x) for x in (tmp_path / d / "metrics.jsonl").read_text().splitlines()]
            for d in ("object_store", "broadcast"))
    for key in ("loss", "rho_mean", "examples", "win_rate_vs_init", "policy_version"):
        assert [r[key] for r in a] == [r[key] for r in b], key
    mid = "checkpoints/iter_000003"  # round 2 started at version 2; the learner is at 3
    assert json.loads((tmp_path / "broadcast" / mid / "state.json").read_text())["generator_version"] == 2
    held_a, held_b = (load_file(str(tmp_path / d / mid / "generator.safetensors")) for d in ("object_store", "broadcast"))
    assert held_a.keys() == held_b.keys() and all(torch.equal(held_a[k], held_b[k]) for k in held_a)

