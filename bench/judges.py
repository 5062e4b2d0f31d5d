"""Judge benchmark: pairs/s of each judge kind through its host, and of a pool of judge actors.

  (1) in this process, one torch thread: ``PreferenceJudge.judge_pairs`` of the ``rule``,
      ``reward_model`` and ``pairwise_model`` judges at 1, 4, 16, 64 and 256 pairs per call (the
      model judges' ``batch_size`` set to the same number). The host asks one order of the
      antisymmetric judges (rule, reward_model) and both orders of the others (pairwise_model, llm),
      as a run does: a reward-model pair costs two short rows (each answer after its conversation,
      ~17 tokens), a pairwise one two long rows (both answers, one row per order, ~80 tokens);
  (2) the pool: ``judge_all`` over M = 1, 2, 3 judge actors on a local Ray of 2 CPUs (one torch
      thread each; 1 CPU asked per actor for M ≤ 2, 0.5 for M = 3 on these 2 cores), 256 pairs per
      call and several calls per timed repeat so a repeat lasts a second or more; the speed-up over
      M = 1 is set against a target of 1.6× at M = 2;
  (3) with ``llm=true`` (needs vLLM): the ``llm`` judge against ``vllm serve`` of the tiny policy on
      127.0.0.1 (as tests/vllm_lane/test_llm_judge.py starts it: a short template and structured
      outputs forcing "[[A]]", "[[B]]" or "[[C]]"), at ``max_concurrency`` 8 and, at the largest
      batch, 32.

The model judges are one-output sequence classifiers made from the tiny policy with an untrained
head: the time of a forward pass does not depend on the weights, so they time as a trained judge
of the same sizes would. The pairs are distinct running_sum states with two answers each. Every
figure is the median of 3 timed calls (a pool: repeats) after one untimed warm-up call.

    .venv/bin/python bench/judges.py [quick=true]
    .venv-vllm/bin/python bench/judges.py llm=true [quick=true]

``quick=true``: batch sizes 1, 16, 64, one timed repeat, M = 1, 2. Ends with one JSON line:
pairs_per_s (kind → batch → pairs/s), pool (kind → M → pairs/s, speedup_2, speedup_3, in_judge: the
share of a call's time its slowest share spent judging), llm (or null).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

KINDS = ("rule", "reward_model", "pairwise_model")
POOL_PAIRS = 256
POOL_BATCH = 64  # the model judges' batch_size in the pool (their default)
CHOICE = {"structured_outputs": {"choice": ["[[A]]", "[[B]]", "[[C]]"]}}


def make_pairs(task, n: int) -> tuple[list[list[dict]], list[str], list[str]]:
    """n distinct held-out states, each with two answers in different styles, one sometimes wrong."""
    from games.tasks.running_sum import STYLES, running_total

    seen, states = set(), []
    for s in task.heldout_states(n, seed=0):  # 3 states a conversation: n distinct ones are among them
        if (key := json.dumps(s)) not in seen:
            seen.add(key)
            states.append(s)
    states = states[:n]
    totals = [running_total(s) for s in states]
    a = [f"{t}{STYLES[i % 3]}" for i, t in enumerate(totals)]
    b = [f"{t + i % 2}{STYLES[(i + 1) % 3]}" for i, t in enumerate(totals)]
    return states, a, b


def build_classifier(task, out: str) -> tuple[str, str]:
    """(a one-output sequence classifier made from the tiny policy, the policy) as directories."""
    import torch
    import transformers

    from framework.config import load_config
    from framework.jobs.warmstart import prepare_policy
    from framework.models import default_cache_dir

    cfg = load_config(None, [f"cache_dir={default_cache_dir()}", "warm_start.steps=0"])
    policy = prepare_policy(cfg, task, progress=False)
    transformers.logging.set_verbosity_error()  # "score.weight newly initialized": meant
    transformers.logging.disable_progress_bar()  # one "Loading weights" bar per judge built
    torch.manual_seed(0)
    tok = transformers.AutoTokenizer.from_pretrained(policy)
    model = transformers.AutoModelForSequenceClassification.from_pretrained(policy, num_labels=1)
    model.config.pad_token_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out, policy


def median_seconds(call, repeats: int) -> float:
    """Median seconds of ``call()`` over ``repeats`` timed calls, after one untimed one."""
    call()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - start)
    return float(np.median(seconds))


def host_rates(kind: str, task, pairs, batches, repeats: int, settings: dict) -> tuple[dict, int]:
    """pairs/s of ``PreferenceJudge.judge_pairs`` per batch size, and how many orders it asks."""
    from actors.judge import PreferenceJudge

    rates, orders = {}, 1
    for batch in batches:
        extra = {**settings, "batch_size": batch} if kind in ("reward_model", "pairwise_model") else settings
        judge = PreferenceJudge(kind=kind, task=task, settings=extra or None)
        orders = 1 if judge.antisymmetric else 2
        c, a, b = (x[:batch] for x in pairs)
        if (failures := judge.judge_pairs(c, a, b).failures):
            raise RuntimeError(f"{kind}: {failures} of {batch} pairs failed")
        rates[batch] = batch / median_seconds(lambda: judge.judge_pairs(c, a, b), repeats)
        print(f"  {kind:<15} batch {batch:>3}: {rates[batch]:>9.1f} pairs/s", flush=True)
    return rates, orders


def pool_rates(cluster, kind: str, task, pairs, sizes, repeats: int, classifier: str,
               quick: bool) -> tuple[dict, dict]:
    """pairs/s of ``judge_all`` over M judge actors, M in ``sizes`` (the same work for every M), and
    the share of a call's time its slowest share spent judging."""
    from actors.judge import PreferenceJudge, judge_all

    settings = {"path": classifier, "batch_size": POOL_BATCH, "threads": 1}
    rates, in_judge, calls, handles = {}, {}, None, []
    for m in sizes:
        cpus = 1 if m <= 2 else 0.5  # a fractional ask makes 3 actors schedulable on 2 CPUs
        if len(handles) < m or handles[0][1] != cpus:
            cluster.release()
            handles = [(cluster.spawn(PreferenceJudge, cpus=cpus, restartable=True, kind=kind, task=task,
                                      settings=settings), cpus)
                       for _ in range(max(m, 2) if cpus == 1 else m)]  # M = 1 and 2 share two actors
        pool = [h for h, _ in handles[:m]]
        work = lambda: judge_all(cluster, pool, *pairs)  # noqa: E731
        if calls is None:  # M = 1 sets how many calls a repeat makes: a second or more at M = 2
            work()  # the actors load their models
            start = time.perf_counter()
            work()
            calls = max(1, math.ceil((1.0 if quick else 2.0) * 2 / (time.perf_counter() - start)))

        spent = []  # per call: (its seconds, the slowest share's own judging seconds)

        def repeat():
            for _ in range(calls):
                start = time.perf_counter()
                verdicts = work()
                spent.append((time.perf_counter() - start, verdicts.seconds))
                if verdicts.failures:
                    raise RuntimeError(f"{kind} pool: {verdicts.failures} pairs failed")

        rates[m] = calls * len(pairs[0]) / median_seconds(repeat, repeats)
        # near 1: a call's time is the judges' compute, what Ray adds around it is small
        in_judge[m] = sum(j for _, j in spent[calls:]) / sum(c for c, _ in spent[calls:])
        print(f"  {kind:<15} M={m}: {rates[m]:>9.1f} pairs/s ({calls} calls of {len(pairs[0])} pairs a repeat; "
              f"the slowest share judging {in_judge[m]:.0%} of a call)", flush=True)
    cluster.release()
    return rates, in_judge


def wait_for_children(timeout: float = 30.0) -> None:
    """Ray's processes (this process's children) outlive ray.shutdown() by a few seconds."""
    import psutil

    psutil.wait_procs(psutil.Process().children(recursive=True), timeout=timeout)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(policy: str, scratch: str) -> tuple[subprocess.Popen, str]:
    """``vllm serve`` of the tiny policy as model "tiny" on 127.0.0.1 (in a process group of its own);
    its /v1 URL once it answers."""
    from actors.backends.vllm import CPU_ENV_DEFAULTS

    port, log_path = free_port(), Path(scratch) / "vllm-serve.log"
    max_len = json.loads((Path(policy) / "config.json").read_text())["max_position_embeddings"]
    env = {**CPU_ENV_DEFAULTS, "VLLM_CACHE_ROOT": str(Path(scratch) / "vllm"), **os.environ}
    env.setdefault("VLLM_CPU_OMP_THREADS_BIND", ",".join(map(str, sorted(os.sched_getaffinity(0)))))
    # the server's module, not the `vllm` script (which asks for a distribution named "vllm")
    command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", policy,
               "--host", "127.0.0.1", "--port", str(port), "--served-model-name", "tiny", "--dtype", "float32",
               "--max-model-len", str(max_len), "--enforce-eager", "--no-enable-chunked-prefill",
               "--generation-config", "vllm", "--seed", "0"]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}/v1"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # 127.0.0.1 only, never a proxy
    deadline = time.monotonic() + 300
    while True:
        if process.poll() is not None or time.monotonic() > deadline:
            stop(process)
            raise RuntimeError(f"vllm serve did not come up:\n{log_path.read_text()[-3000:]}")
        try:
            with opener.open(url + "/models", timeout=5) as response:
                if json.loads(response.read())["data"][0]["id"] == "tiny":
                    return process, url
        except OSError:
            pass
        time.sleep(1)


def stop(process: subprocess.Popen) -> None:
    """End the server and the engine processes it started (its process group)."""
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    try:
        os.killpg(process.pid, signal.SIGKILL)  # an engine core left behind, if any
    except ProcessLookupError:
        pass


def llm_rates(task, pairs, batches, repeats: int, policy: str, scratch: str) -> dict:
    template = Path(scratch) / "judge.txt"
    template.write_text("{question} A:{answer_a} B:{answer_b}")
    start = time.perf_counter()
    process, url = serve(policy, scratch)
    server_start_s = time.perf_counter() - start
    print(f"  vllm serve up in {server_start_s:.0f} s", flush=True)
    try:
        settings = {"base_url": url, "model": "tiny", "template": str(template), "max_tokens": 8, "timeout_s": 60.0,
                    "extra_body": CHOICE}
        rates, orders = host_rates("llm", task, pairs, batches, repeats, {**settings, "max_concurrency": 8})
        wide, _ = host_rates("llm", task, pairs, batches[-1:], repeats, {**settings, "max_concurrency": 32})
    finally:
        stop(process)
    return {"pairs_per_s": rates, "max_concurrency": 8, "max_concurrency_32": wide, "orders": orders,
            "server_start_s": server_start_s}


def main(quick: bool, llm: bool) -> dict:
    import torch

    from games.tasks import get_task

    batches = (1, 16, 64) if quick else (1, 4, 16, 64, 256)
    repeats, sizes = (1, (1, 2)) if quick else (3, (1, 2, 3))
    torch.set_num_threads(1)
    scratch = tempfile.mkdtemp(prefix="bench-judges-")
    task = get_task("running_sum", turns=3)
    classifier, policy = build_classifier(task, os.path.join(scratch, "judge"))
    pairs = make_pairs(task, max(batches[-1], POOL_PAIRS))

    print("(1) in this process, 1 torch thread", flush=True)
    rates, orders = {}, {}
    for kind in KINDS:
        settings = {} if kind == "rule" else {"path": classifier, "threads": 1}
        rates[kind], orders[kind] = host_rates(kind, task, pairs, batches, repeats, settings)

    print("(2) the pool, local Ray of 2 CPUs", flush=True)
    from actors.remote import RayCluster

    cluster = RayCluster(num_cpus=2, deadlines={"default": 300.0})
    try:
        pool_pairs = tuple(x[:POOL_PAIRS] for x in pairs)
        pool = {kind: pool_rates(cluster, kind, task, pool_pairs, sizes, repeats, classifier, quick)
                for kind in ("reward_model", "pairwise_model")}
    finally:
        cluster.shutdown()
        wait_for_children()

    llm_result = None
    if llm:
        print("(3) the llm judge against vllm serve", flush=True)
        llm_result = llm_rates(task, pairs, batches, repeats, policy, scratch)

    load = os.getloadavg()[0]
    print(f"\n{len(os.sched_getaffinity(0))} cores, load average {load:.1f} at the end; medians of {repeats} "
          f"timed call(s) after a warm-up\n")
    print("pairs/s through PreferenceJudge.judge_pairs (1 torch thread)")
    print(f"{'kind':<15} {'orders':>6} " + " ".join(f"{b:>9}" for b in batches))
    rows = [(k, orders[k], rates[k]) for k in KINDS]
    if llm_result:
        rows.append(("llm (conc. 8)", llm_result["orders"], llm_result["pairs_per_s"]))
        rows.append(("llm (conc. 32)", llm_result["orders"], llm_result["max_concurrency_32"]))
    for name, n, r in rows:
        print(f"{name:<15} {n:>6} " + " ".join(f"{r[b]:>9.1f}" if b in r else f"{'':>9}" for b in batches))
    for kind in KINDS[1:]:
        print(f"{kind}: batch {batches[-1]} over batch 1 {rates[kind][batches[-1]] / rates[kind][1]:.1f}×; "
              f"rule over {kind} at batch {batches[-1]} {rates['rule'][batches[-1]] / rates[kind][batches[-1]]:.0f}×")
    if not llm:
        print("llm: skipped (run `.venv-vllm/bin/python bench/judges.py llm=true` to start vllm serve)")
    else:
        print(f"llm: vllm serve started in {llm_result['server_start_s']:.0f} s")

    print(f"\npool: judge_all over M actors, {POOL_PAIRS} pairs a call, batch_size {POOL_BATCH}, 1 thread each")
    print(f"{'kind':<15} " + " ".join(f"{'M=' + str(m):>9}" for m in sizes) + "   speed-up over M=1")
    summary_pool = {}
    for kind, (r, in_judge) in pool.items():
        up = {m: r[m] / r[1] for m in sizes}
        verdict = "meets" if up[2] >= 1.6 else "misses"
        print(f"{kind:<15} " + " ".join(f"{r[m]:>9.1f}" for m in sizes) + "   "
              + ", ".join(f"M={m} {up[m]:.2f}×" for m in sizes[1:]) + f" (M=2 {verdict} the 1.6× target)")
        summary_pool[kind] = {**{str(m): round(r.get(m), 1) if m in r else None for m in (1, 2, 3)},
                              "speedup_2": round(up[2], 3), "speedup_3": round(up[3], 3) if 3 in up else None,
                              "in_judge": {str(m): round(v, 3) for m, v in in_judge.items()}}

    def rounded(r: dict) -> dict:
        return {str(b): round(v, 1) for b, v in r.items()}

    summary = {
        "bench": "judges", "quick": quick,
        "pairs_per_s": {k: rounded(r) for k, r in rates.items()},
        "orders": orders,
        "pool": summary_pool,
        "llm": None if llm_result is None else {
            "pairs_per_s": rounded(llm_result["pairs_per_s"]), "max_concurrency": 8,
            "max_concurrency_32": rounded(llm_result["max_concurrency_32"]), "orders": llm_result["orders"],
            "server_start_s": round(llm_result["server_start_s"], 1)},
        "threads": 1, "cpus": os.cpu_count(), "load_average": round(load, 2),
    }
    print(json.dumps(summary))
    shutil.rmtree(scratch, ignore_errors=True)
    return summary


if __name__ == "__main__":
    main(quick="quick=true" in sys.argv[1:], llm="llm=true" in sys.argv[1:])
