"""alignplay against a peer on equal work: its sync and async pipelines against Hugging Face TRL's
``GRPOTrainer``, each stack in a fresh process, in one run.

The work, the same for every stack: one warm-started tiny model loaded from one directory; per
update 64 single-turn running-sum prompts (the same prompts, in the same order), K = 4 samples of
at most 8 new tokens at temperature 1 from the full distribution; the running-sum rule judge on
all 6 pairs of each prompt's samples (TRL's reward: a sample's mean pairwise win rate, as MPO's
target is); a KL penalty of 0.02 toward the start; AdamW at 1e-3 with linear decay, gradient
clipping at 1, one optimizer step per update over all 256 samples; float32 on the CPU.

What differs (and is not held equal): the loss (alignplay's MPO regression, TRL's default
GRPO loss, ``dapo``, with its group-normalised advantages); alignplay writes every rollout and
comparison to Parquet and a metrics line per update, TRL logs to memory; alignplay evaluates the
start and the final policy (2 held-out states, 1 sample: a few ms). TRL runs in one process on
all the cores (``torch.set_num_threads``); alignplay as configured by default, its roles in Ray
actors (``async_shared`` adds ``pipeline.shared_prompts=true``: each prompt's forward pass made
once for its K answers, which TRL does not do).

Measured per stack, medians over ``repeats`` runs of the per-run medians over updates 3 … n−1
(the first two warm up): samples/s, generated tokens/s, s/update; peak PSS summed over the
stack's whole process tree (Ray's raylet, GCS and workers included), sampled every 0.25 s by
this process; wall time from the process's start (before its imports) to the end of its first
update.

    python bench/peers.py [quick=true] [repeats=N] [updates=N] [stacks=trl,sync,async,async_shared]

TRL comes from the ``bench`` extra (``pip install -c constraints.txt -e ".[bench]"``); without
it the TRL stack is skipped and said so. Ends with one JSON line: per stack its figures, and
each alignplay stack's ratios to TRL's.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from pipeline import wait_for_ray_to_exit  # (bench/pipeline.py, beside this script)

STARTED = time.time()  # (the child's clock starts before its imports: start-up counts)

ROOT = Path(__file__).resolve().parents[1]
PROMPTS, K, NEW_TOKENS, KL, LR = 64, 4, 8, 0.02, 1e-3
#: alignplay's side of the work: the quickstart's model, warm start and method, single-turn
WORK = ["task.turns=1", f"train.conversations={PROMPTS}", f"algo.k={K}", f"model.max_new_tokens={NEW_TOKENS}",
        f"algo.kl_coef={KL}", f"algo.lr={LR}", "algo.lr_schedule=linear", "algo.epochs=1", "algo.minibatches=1",
        "algo.keep=all", "eval.every=1000000", "eval.conversations=2", "eval.final_conversations=2",
        "eval.samples=1", "eval.final_samples=1", "checkpoint.every=1000000"]
#: each stack: TRL, or alignplay's pipeline mode with the settings it adds to the defaults
STACKS = {"trl": None, "sync": ["pipeline.mode=sync"], "async": ["pipeline.mode=async"],
          "async_shared": ["pipeline.mode=async", "pipeline.shared_prompts=true"]}


def config(*extra: str):
    from framework.config import load_config

    return load_config(ROOT / "examples" / "quickstart.yaml", [*WORK, *extra])


def prompts_of(cfg, updates: int) -> list[list[list[dict]]]:
    """Each update's prompts, as alignplay's generators draw them (``selfplay.source``)."""
    import dataclasses

    from framework.jobs.selfplay import source
    from games.tasks import get_task

    episodes = source(cfg, get_task(**dataclasses.asdict(cfg.task))).episodes
    return [[e.start() for e in episodes(t)] for t in range(updates)]


# --- the stacks, each run in a child process ---------------------------------------------------
def alignplay_child(stack: str, policy: str, updates: int) -> dict:
    from framework.jobs import selfplay

    cfg = config(f"model.path={policy}", "warm_start.steps=0", *STACKS[stack], f"train.iterations={updates}")
    with tempfile.TemporaryDirectory() as run_dir:
        selfplay.run(cfg, Path(run_dir), progress=False)
        rows = [json.loads(x) for x in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
        tokens = [sum(len(r) for r in table.column("response_ids").to_pylist())
                  for table in tables(Path(run_dir) / "rollouts")]
    after = ("sync_weights_s", "log_s", "checkpoint_s", "evaluate_s")  # an iteration's stages after its update
    return {"update_s": [r["iteration_s"] for r in rows], "samples": [r["samples"] for r in rows],
            "tokens": tokens, "first_update": rows[0]["time"] - sum(rows[0][k] for k in after) - STARTED}


def tables(folder: Path):
    import pyarrow.parquet as pq

    return [pq.read_table(p, columns=["response_ids"]) for p in sorted(folder.glob("*.parquet"))]


def trl_child(policy: str, updates: int) -> dict:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from actors.judge import PreferenceJudge
    from games.tasks import get_task

    torch.set_num_threads(os.cpu_count() or 1)
    cfg = config()
    import dataclasses

    judge = PreferenceJudge(kind="rule", task=get_task(**dataclasses.asdict(cfg.task)))
    prompts = [p for update in prompts_of(cfg, updates) for p in update]

    def win_rate(prompts, completions, **_):
        """Each sample's mean win rate against the other K − 1 samples of its prompt (TRL lays a
        prompt's K completions out consecutively)."""
        texts = [c[0]["content"] for c in completions]
        rewards = [0.0] * len(texts)
        for g in range(0, len(texts), K):
            pairs = [(i, j) for i in range(g, g + K) for j in range(i + 1, g + K)]
            probs = judge.compare([prompts[i] for i, _ in pairs], [texts[i] for i, _ in pairs],
                                  [texts[j] for _, j in pairs])
            for (i, j), p in zip(pairs, probs):
                rewards[i] += p / (K - 1)
                rewards[j] += (1 - p) / (K - 1)
        return rewards

    ends: list[float] = []
    lengths: list[float] = []

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            ends.append(time.time())

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "completions/mean_length" in logs:
                lengths.append(float(logs["completions/mean_length"]))

    with tempfile.TemporaryDirectory() as out:
        args = GRPOConfig(output_dir=out, use_cpu=True, bf16=False, fp16=False, report_to="none",
                          save_strategy="no", logging_steps=1, max_steps=updates, seed=0,
                          per_device_train_batch_size=PROMPTS * K, gradient_accumulation_steps=1,
                          num_generations=K, max_completion_length=NEW_TOKENS, temperature=1.0, top_k=0,
                          top_p=1.0, beta=KL, learning_rate=LR, lr_scheduler_type="linear", warmup_steps=0,
                          weight_decay=0.0, max_grad_norm=1.0, num_iterations=1, shuffle_dataset=False,
                          dataloader_num_workers=0, disable_tqdm=True)
        trainer = GRPOTrainer(model=AutoModelForCausalLM.from_pretrained(policy, dtype=torch.float32),
                              processing_class=AutoTokenizer.from_pretrained(policy), reward_funcs=win_rate,
                              args=args, train_dataset=Dataset.from_list([{"prompt": p} for p in prompts]),
                              callbacks=[Clock()])
        from transformers.trainer_callback import PrinterCallback

        trainer.remove_callback(PrinterCallback)  # (its log lines would bury the table)
        trainer.train()
    marks = [STARTED, *ends]
    return {"update_s": [b - a for a, b in zip(marks, marks[1:])], "samples": [PROMPTS * K] * len(ends),
            "tokens": [length * PROMPTS * K for length in lengths[:len(ends)]], "first_update": ends[0] - STARTED}


def child(stack: str, policy: str, updates: int, out: str) -> None:
    result = trl_child(policy, updates) if stack == "trl" else alignplay_child(stack, policy, updates)
    Path(out).write_text(json.dumps(result))


# --- the parent: one child per stack and repeat, its memory watched ----------------------------
def tree_pss(root) -> tuple[int, int]:
    """(bytes of PSS, processes) of ``root`` and every process under it."""
    import psutil

    total = count = 0
    for p in [root, *root.children(recursive=True)]:
        try:
            total += p.memory_full_info().pss
            count += 1
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            pass
    return total, count


def measure(stack: str, policy: str, updates: int) -> dict:
    """One run of ``stack`` in a fresh process: its figures and its tree's peak PSS."""
    import psutil

    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        proc = subprocess.Popen([sys.executable, __file__, "--child", stack, policy, str(updates), out.name],
                                cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
        peak = [0, 0]
        root = psutil.Process(proc.pid)

        def watch():
            while proc.poll() is None:
                try:
                    pss, n = tree_pss(root)
                except psutil.NoSuchProcess:
                    break
                if pss > peak[0]:
                    peak[:] = [pss, n]
                time.sleep(0.25)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        if proc.wait() != 0:
            raise SystemExit(f"bench/peers.py: the {stack} run failed (exit {proc.returncode})")
        watcher.join()
        result = json.loads(Path(out.name).read_text())
    steady = slice(2, updates - 1) if updates > 4 else slice(1, None)
    s_update = statistics.median(result["update_s"][steady])
    samples = statistics.median(result["samples"][steady])
    tokens = statistics.median(result["tokens"][steady])
    wait_for_ray_to_exit()
    return {"samples_per_s": samples / s_update, "tokens_per_s": tokens / s_update, "s_per_update": s_update,
            "peak_pss_gb": peak[0] / 1e9, "processes": peak[1], "first_update_s": result["first_update"]}


def main(argv: list[str]) -> dict:
    opts = dict(a.split("=", 1) for a in argv if "=" in a)
    quick = opts.get("quick") == "true"
    updates = int(opts.get("updates", 8 if quick else 30))
    repeats = int(opts.get("repeats", 1 if quick else 2))
    stacks = opts.get("stacks", ",".join(STACKS)).split(",")
    if unknown := [s for s in stacks if s not in STACKS]:
        raise SystemExit(f"bench/peers.py: stacks: unknown {', '.join(unknown)}; choose from {', '.join(STACKS)}")
    try:
        import trl  # noqa: F401
    except ImportError:
        print("bench/peers.py: TRL is not installed (pip install -c constraints.txt -e \".[bench]\"): "
              "its stack is skipped", file=sys.stderr)
        stacks = [s for s in stacks if s != "trl"]
    import dataclasses

    from framework.jobs.warmstart import prepare_policy
    from games.tasks import get_task

    cfg = config()
    policy = prepare_policy(cfg, get_task(**dataclasses.asdict(cfg.task)))  # (cached: the one every stack loads)
    runs: dict = {s: [] for s in stacks}
    for r in range(repeats):
        for stack in stacks:
            print(f"repeat {r + 1}/{repeats}: {stack} ({updates} updates) ...", flush=True)
            runs[stack].append(measure(stack, policy, updates))
    table = {s: {k: statistics.median(run[k] for run in rs) for k in rs[0]} for s, rs in runs.items()}
    print(f"\n{'stack':<10} {'samples/s':>10} {'tokens/s':>9} {'s/update':>9} {'peak PSS':>9} {'procs':>6} "
          f"{'first update':>13}")
    for s, t in table.items():
        print(f"{s:<10} {t['samples_per_s']:>10.0f} {t['tokens_per_s']:>9.0f} {t['s_per_update']:>9.3f} "
              f"{t['peak_pss_gb']:>7.2f}GB {t['processes']:>6.0f} {t['first_update_s']:>12.1f}s")
    ratios = {}
    if "trl" in table:
        base = table["trl"]
        for s in (s for s in table if s != "trl"):
            ratios[s] = {"samples_per_s": table[s]["samples_per_s"] / base["samples_per_s"],
                         "memory": table[s]["peak_pss_gb"] / base["peak_pss_gb"],
                         "first_update": table[s]["first_update_s"] / base["first_update_s"]}
            print(f"{s} / trl: throughput {ratios[s]['samples_per_s']:.2f}×, memory {ratios[s]['memory']:.2f}×, "
                  f"time to first update {ratios[s]['first_update']:.2f}×")
    result = {"bench": "peers", "updates": updates, "repeats": repeats, "cores": os.cpu_count(),
              "stacks": table, "over_trl": ratios}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        child(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5])
    else:
        main(sys.argv[1:])
