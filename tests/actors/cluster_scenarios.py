"""Multi-node scenarios on one machine: ``ray.cluster_utils.Cluster`` starts a head with no CPUs
and worker raylets, each with its own CPUs, declared GPUs and custom resources (Ray schedules on
declared GPUs even where the machine has none). Each scenario runs in a process of its own
(``test_multinode.py`` starts them): a process holds one Ray, and the test session has its own.

    python tests/actors/cluster_scenarios.py NAME RUN_DIR

prints ``node <role> <node>`` for every role it placed and exits non-zero on a failed check.
"""

from __future__ import annotations

import json
import re
import sys
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

#: the session's small self-play experiment (tests/conftest.py), its warm start cached
SMALL = ["task.turns=2", "warm_start.steps=150", "train.conversations=6", "algo.k=3",
         "eval.conversations=4", "eval.final_conversations=6", "eval.samples=2"]


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def cluster(*nodes: dict):
    """A head of 0 CPUs and one raylet per ``nodes`` entry (``add_node`` arguments). The head's
    dashboard agent gets a free port, not the default one another Ray on this machine may hold."""
    import ray
    from ray.cluster_utils import Cluster

    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "dashboard_agent_listen_port": free_port()})
    for node in nodes:
        c.add_node(**node)
    ray.init(address=c.address, log_to_driver=False, configure_logging=False)
    try:
        yield c
    finally:
        ray.shutdown()
        c.shutdown()


def node_names(c) -> dict[str, str]:
    """node id[:8] → the custom resource that names it."""
    import ray

    return {n["NodeID"][:8]: next((k for k in n["Resources"] if k.startswith("node_")), "head")
            for n in ray.nodes() if n["Alive"]}


def config(*overrides: str):
    from framework.config import load_config

    return load_config(None, [*SMALL, *overrides])


def batch_for(learner, task, n: int = 8):
    """A training batch of ``n`` held-out states with made-up answers and targets."""
    import torch

    from framework.batching import collate

    tok = learner.tokenizer
    states = task.heldout_states(n, seed=0)[:n]
    prompts = [list(tok.apply_chat_template(s, add_generation_prompt=True, tokenize=True)["input_ids"]) for s in states]
    responses = [tok(f"{i}!", add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for i in range(n)]
    with torch.no_grad():
        old = learner.logp(collate(prompts, responses, pad_id=tok.pad_token_id)).tolist()
    q = torch.rand(n, generator=torch.Generator().manual_seed(0)).tolist()
    return collate(prompts, responses, pad_id=tok.pad_token_id, logp_old=old, q_hat=q, baseline=[0.5] * n)


def roles_land_where_their_resources_say(run_dir: Path) -> None:
    """Two learners on the two GPU nodes (one GPU each) form one group across them, and their
    step equals one full-batch step in this process; the generator, the reference and the judge
    go to the node their custom resource names, and the generator receives the new weights."""
    import torch

    from actors.generator import RolloutGenerator
    from actors.learner import Learner
    from actors.remote import RayCluster
    from framework.jobs.selfplay import build_roles, sync_weights, update
    from framework.jobs.warmstart import prepare_policy
    from games.tasks import get_task

    with cluster(dict(num_cpus=1, num_gpus=1, resources={"node_a": 1}),
                 dict(num_cpus=1, num_gpus=1, resources={"node_b": 1}),
                 dict(num_cpus=1, resources={"node_c": 1})) as c:
        cfg = config("pipeline.placement=disaggregated", "pipeline.learners=2", "algo.minibatches=1",
                     *(f"pipeline.resources.{role}.resources={{node_c: 0.01}}" for role in ("generator", "reference",
                                                                                          "judge")),
                     "pipeline.resources.generator.gpus=0")
        task = get_task("running_sum", turns=2)
        policy = prepare_policy(cfg, task, progress=False)
        remote = RayCluster()
        roles = build_roles(cfg, task, policy, remote)
        names = node_names(c)
        placed = {"learner 0": roles.learners[0], "learner 1": roles.learners[1], "generator 0": roles.generators[0],
                  "reference": roles.reference, "judge": roles.judges[0]}
        where = {role: names[remote.node_of(h)[:8]] for role, h in placed.items()}
        for role, node in where.items():
            print(f"node {role} {node}", flush=True)
        assert {where["learner 0"], where["learner 1"]} == {"node_a", "node_b"}, where  # one GPU each
        assert where["generator 0"] == where["reference"] == where["judge"] == "node_c", where
        single = Learner(model_path=policy, lr=cfg.algo.lr)
        batch = batch_for(single, task)
        single.train(batch, algorithm="mpo", eta=cfg.algo.eta, minibatches=1, lr=cfg.algo.lr)
        update(roles, batch, cfg.algo, 0, 1)  # iteration 0 of 1: the constant lr
        w0, w1 = remote.get([h.call(Learner.weights) for h in roles.learners])
        for k, v in single.weights().items():
            torch.testing.assert_close(w0[k], w1[k])  # the replicas on two nodes stay identical
            torch.testing.assert_close(w0[k], v, atol=1e-5, rtol=1e-4)  # and equal the full-batch step
        sync_weights(roles, 1, wait=True)
        assert remote.get(roles.generators[0].call(RolloutGenerator.ping)) == 1
        remote.shutdown()


def print_actor_nodes(c) -> dict[str, list[str]]:
    """Class name → the nodes its actors ran on (the state API remembers dead actors too)."""
    from ray.util.state import list_actors

    names, out = node_names(c), {}
    for a in list_actors(detail=True, limit=1000):
        out.setdefault(a.class_name, []).append(names.get((a.node_id or "")[:8], "?"))
    for cls, nodes in sorted(out.items()):
        print(f"node {cls} {' '.join(sorted(nodes))}", flush=True)
    return out


def selfplay_across_nodes(run_dir: Path) -> None:
    """A short async MPO run with two sharded learners (FSDP2 over gloo) and two generators spread
    over three nodes, the weights broadcast from learner 0 into generators on other nodes."""
    from framework.jobs import selfplay

    with cluster(*(dict(num_cpus=1, resources={f"node_{x}": 1}) for x in "abc")) as c:
        cfg = config("train.iterations=2", "eval.every=2", "checkpoint.every=2", "pipeline.learners=2",
                     "pipeline.generators=2", "pipeline.placement_strategy=SPREAD", "pipeline.weight_sync=broadcast", "pipeline.learner_strategy=fsdp")
        summary = selfplay.run(cfg, run_dir, progress=False)
        rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        assert [r["policy_version"] for r in rows] == [1, 2] and 0 <= summary["final"]["win_rate_vs_init"] <= 1
        nodes = print_actor_nodes(c)
        assert len(set(nodes["Learner"])) == 2, nodes  # SPREAD: the two learner+generator bundles apart


def dp_workers_across_nodes(run_dir: Path) -> None:
    """``dp.workers=2`` as two DP learners on two nodes in one gloo group."""
    from framework.jobs import dp
    from tests.conftest import DP_SMALL

    with cluster(*(dict(num_cpus=1, resources={f"node_{x}": 1}) for x in "ab")) as c:
        cfg = config(*DP_SMALL, "dp.method=dp_continual", "dp.workers=2", "pipeline.placement_strategy=STRICT_SPREAD")
        summary = dp.run(cfg, run_dir, progress=False)
        assert summary["final"]["private_steps"] == cfg.dp.private_steps
        assert abs(summary["final"]["epsilon"] - cfg.dp.target_epsilon) <= 1e-3 * cfg.dp.target_epsilon
        nodes = print_actor_nodes(c)
        assert sorted(nodes["DPLearner"]) == ["node_a", "node_b"], nodes


def more_gpus_than_the_cluster_has(run_dir: Path) -> None:
    """Two learners asking for a GPU each on a cluster with one: refused before any role starts."""
    from ray.util.state import list_actors

    from framework.errors import InputError
    from framework.jobs import selfplay

    with cluster(dict(num_cpus=2, num_gpus=1)):
        cfg = config("pipeline.learners=2", "pipeline.resources.learner.gpus=1", "pipeline.placement_timeout=0")
        try:
            selfplay.run(cfg, run_dir, progress=False)
        except InputError as e:
            print(f"error {e}", flush=True)
            assert "pipeline.resources.learner 2 × 1" in str(e) and "GPU" in str(e), e
        else:
            raise AssertionError("the run started")
        assert not list_actors(), list_actors()  # no role was started


def job_submit(run_dir: Path) -> None:
    """``ray job submit`` for real, as the README's cluster section runs it: a one-node Ray of this
    process with a job server on 127.0.0.1, the repository as the job's working_dir, a quick
    self-play run as the job. The head's dashboard agent listens on a free port: on its default
    (52365) it would lose to any other Ray on this machine, such as the test session's own, and the
    job server would answer "No available agent" for ever."""
    import os
    import subprocess
    import time

    from ray.cluster_utils import Cluster

    port = free_port()
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"  # `alignplay` for the job
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 2, "include_dashboard": True, "dashboard_host": "127.0.0.1", "dashboard_port": port,
        "dashboard_agent_listen_port": free_port()})
    try:
        out = run_dir / "quickstart"
        cmd = [str(Path(sys.executable).parent / "ray"), "job", "submit", "--address", f"http://127.0.0.1:{port}",
               "--working-dir", ".", "--", "alignplay", "run", "examples/quickstart.yaml", "--run-dir", str(out),
               "quick=true", *SMALL, "train.iterations=4", "eval.every=4", "checkpoint.every=4"]
        for attempt in range(6):  # a job server answers before its agent is up: "try again later"
            res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600,
                                 env=dict(os.environ, NO_COLOR="1", RAY_COLOR_PREFIX="0"))
            if "No available agent" not in res.stderr:
                break
            time.sleep(5)
        said = [re.sub(r"\x1b\[[0-9;]*m", "", line) for line in res.stdout.splitlines()]
        succeeded = [line for line in said if re.search(r"Job '\S+' succeeded", line)]
        print("\n".join(f"job {line.split(' -- ')[-1]}" for line in succeeded), flush=True)
        assert res.returncode == 0 and succeeded, res.stdout[-3000:] + res.stderr[-3000:]
        rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        assert [r["iteration"] for r in rows] == [1, 2, 3, 4]
        assert json.loads((out / "summary.json").read_text())["final"]["win_rate_vs_init"] is not None
    finally:
        cluster.shutdown()


def node_loss(run_dir: Path) -> None:
    """A sync run over three nodes (the learner held on node_a); once two iterations are logged
    the node running generator 0 (node_b or node_c) is removed. Its roles are re-created on the surviving nodes and
    the run completes every iteration, each record once."""
    import threading
    import time

    import pyarrow.parquet as pq
    import ray._private.state

    from framework.jobs import selfplay

    with cluster(dict(num_cpus=1, resources={"node_a": 1}),
                 *(dict(num_cpus=1, resources={f"node_{x}": 1, "spare": 1}) for x in "bc")) as c:
        # the learner on node_a; generator 0 on node_b or node_c, either able to take it
        cfg = config("train.iterations=6", "eval.every=3", "checkpoint.every=2", "pipeline.mode=sync",
                     "pipeline.placement=disaggregated", "pipeline.resources.learner.resources={node_a: 0.01}",
                     "pipeline.resources.generator.resources={spare: 0.01}")
        names, done = node_names(c), {}
        thread = threading.Thread(target=lambda: done.update(summary=selfplay.run(cfg, run_dir, progress=False)),
                                  daemon=True)
        thread.start()
        metrics = run_dir / "metrics.jsonl"
        while not (metrics.exists() and len(metrics.read_text().splitlines()) >= 2) and thread.is_alive():
            time.sleep(0.1)
        generator = next(a for a in ray._private.state.actors().values()
                         if a["State"] == "ALIVE" and a["Name"].startswith("generator 0 "))
        lost = generator["Address"]["NodeID"]
        assert names[lost[:8]] != "node_a", names
        c.remove_node(next(n for n in c.worker_nodes if n.node_id == lost))
        print(f"removed {names[lost[:8]]} (generator 0's node)", flush=True)
        thread.join(timeout=900)
        summary = done["summary"]
        print(f"faults {json.dumps(summary['faults'])}", flush=True)
        rows = [json.loads(line) for line in metrics.read_text().splitlines()]
        assert [r["iteration"] for r in rows] == list(range(1, 7)), rows
        keys = [(r["iteration"], r["conversation_id"], r["turn"], r["sample"], r["branch_of"])
                for r in pq.read_table(run_dir / "rollouts").to_pylist()]
        assert len(keys) == len(set(keys)) == 6 * 6 * 2 * 3, len(keys)  # iterations × conversations × turns × K
        assert sorted({k[0] for k in keys}) == list(range(6))
        assert summary["faults"]["restarts"].get("generator 0", 0) >= 1, summary["faults"]


def main(name: str, run_dir: str) -> None:
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    {"roles": roles_land_where_their_resources_say, "selfplay": selfplay_across_nodes,
     "dp": dp_workers_across_nodes, "too_many_gpus": more_gpus_than_the_cluster_has,
     "job": job_submit, "node_loss": node_loss}[name](Path(run_dir))
    print(json.dumps({"scenario": name, "ok": True}))


if __name__ == "__main__":
    main(*sys.argv[1:])
