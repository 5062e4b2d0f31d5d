"""``job: compare_irl``: learning from demonstrations side by side (SFT, SPIN, IRFT, …).

For each seed and data variant (``compare.variants``, e.g. clean and corrupted demonstrations),
every method of ``compare.methods`` runs as an ordinary run under
``RUN_DIR/runs/<method>@<variant>-seed<seed>`` from the same warm start (finished runs are
reused). ``sft`` (SFT trained on the same demonstrations) must be among the methods: it is the
baseline the others are judged against.

Metrics per run, then mean and std over seeds in ``comparison.json`` (keys ``<method>@<variant>``):
``correctness`` (held-out task accuracy), ``win_rate_vs_sft`` (judge win rate of the final policy
against the same variant's SFT policy, with ``win_rate_vs_sft_ci95``), ``implicit_reward_acc``
(share of held-out states where the implicit reward log π/π_init ranks the right answer above an
answer of π_init) and ``wall_s``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path

import numpy as np

from actors.generator import RolloutGenerator
from framework.config import Config
from framework.errors import InputError
from framework.jobs import compare, selfplay
from framework.jobs.evaluate import evaluate_policy
from framework.jobs.reports import aggregate
from framework.jobs.rundir import strict_json, check_dirs, run_or_reuse
from games.tasks import get_task

#: the method every other is judged against: ``algo.name=sft`` trained on the same demonstrations
BASELINE = "sft"
METRICS = ("correctness", "win_rate_vs_sft", "implicit_reward_acc", "wall_s")


def method_config(cfg: Config, method: str, variant: str, seed: int) -> Config:
    return compare.method_config(cfg, method, seed, *cfg.compare.variants.get(variant, ()))


def preflight(cfg: Config, run_dir: Path) -> None:
    if BASELINE not in cfg.compare.methods:
        raise InputError(f"compare.methods: compare_irl needs {BASELINE!r} (the baseline the others are judged "
                         f"against)")
    check_dirs(cfg, run_dir)
    for method in cfg.compare.methods:
        for variant in cfg.compare.variants or {"data": []}:
            compare.check_run(method_config(cfg, method, variant, cfg.compare.seeds[0]))  # bad overrides fail here


def implicit_reward_accuracy(cfg: Config, policy: str, init: str, *, conversations: int, seed: int) -> float:
    """P(r(y_right) > r(y_init)) on held-out states, r = log π_policy − log π_init, y_init ~ π_init."""
    task = get_task(**dataclasses.asdict(cfg.task))
    if not task.heldout_answers:
        return float("nan")
    pairs = task.heldout_demonstrations(conversations, seed)
    make = dict(backend="hf", max_new_tokens=cfg.model.max_new_tokens, threads=os.cpu_count() or 1,
                dtype=cfg.model.dtype)
    final, start = RolloutGenerator(model_path=policy, **make), RolloutGenerator(model_path=init, **make)
    states, right = [s for s, _ in pairs], [a for _, a in pairs]
    own = [group[0].text for group in start.sample(states, k=1, seed=seed)]
    r_right = np.array(final.score(states, right)) - np.array(start.score(states, right))
    r_own = np.array(final.score(states, own)) - np.array(start.score(states, own))
    differs = np.array([a != b for a, b in zip(right, own)])  # a tie carries no ranking
    return float((r_right[differs] > r_own[differs]).mean()) if differs.any() else float("nan")


def run(cfg: Config, run_dir: Path) -> dict:
    preflight(cfg, run_dir)
    run_dir = Path(run_dir)
    methods = [BASELINE, *[m for m in cfg.compare.methods if m != BASELINE]]
    variants = cfg.compare.variants or {"data": []}
    started = time.perf_counter()
    per_seed: dict = {f"{m}@{v}": [] for v in variants for m in methods}
    for seed in cfg.compare.seeds:
        for variant in variants:
            sft_policy = None
            for method in methods:
                key, sub = f"{method}@{variant}", run_dir / "runs" / f"{method}@{variant}-seed{seed}"
                sub_cfg = method_config(cfg, method, variant, seed)
                summary = run_or_reuse(sub_cfg, sub, f"compare_irl {key}, seed {seed}", selfplay.run)
                # from the run directory, not the summary (whose path may be relative to another cwd)
                final_policy = str(sub / "checkpoints" / "final" / "policy")
                if method == BASELINE:
                    sft_policy = final_policy
                scores_path = sub / "irl_scores.json"
                if scores_path.exists():
                    scores = json.loads(scores_path.read_text())
                else:
                    judged = evaluate_policy(sub_cfg, final_policy, sft_policy,
                                             conversations=cfg.eval.final_conversations, samples=cfg.eval.samples,
                                             seed=seed + 2)
                    scores = {"correctness": summary["final"].get("correct"),
                              "win_rate_vs_sft": judged["win_rate_vs_reference"],
                              "win_rate_vs_sft_ci95": judged["win_rate_ci95"],
                              "implicit_reward_acc": implicit_reward_accuracy(
                                  sub_cfg, final_policy, summary["init_policy"],
                                  conversations=cfg.eval.final_conversations, seed=seed + 3),
                              "wall_s": summary["wall_s"]}
                    scores_path.write_text(strict_json(scores))
                per_seed[key].append(scores)
    table = aggregate(per_seed, METRICS)
    (run_dir / "comparison.json").write_text(strict_json(table, indent=1))
    (run_dir / "comparison_seeds.json").write_text(strict_json(per_seed, indent=1))
    (run_dir / "comparison.md").write_text(markdown(cfg, table, time.perf_counter() - started))
    print((run_dir / "comparison.md").read_text())
    return table


def markdown(cfg: Config, table: dict, wall: float) -> str:
    def cell(entry, key):
        return f"{entry[key]:.3f} ± {entry[key + '_std']:.3f}" if key in entry else "—"

    lines = [f"# Learning from demonstrations on `{cfg.task.name}`", "",
             f"{len(cfg.compare.seeds)} seed(s) {list(cfg.compare.seeds)}; variants: "
             + "; ".join(f"`{v}` = {' '.join(o) or 'defaults'}" for v, o in (cfg.compare.variants or {"data": []}).items())
             + f". Wall time of this invocation: {wall:.0f} s.", "",
             "Mean ± std over seeds; the win rate's [±] is the judge's 95% interval of the mean.", "",
             "| method@data | correctness | win rate vs SFT | implicit reward acc. | wall s |", "|---|---|---|---|---|"]
    for key, e in table.items():
        lines.append(f"| {key} | {cell(e, 'correctness')} | {cell(e, 'win_rate_vs_sft')} "
                     f"[±{e.get('win_rate_vs_sft_ci95', float('nan')):.3f}] | {cell(e, 'implicit_reward_acc')} | "
                     f"{e.get('wall_s', 0):.0f} |")
    lines += ["", "## Target", ""]
    for variant in cfg.compare.variants or {"data": []}:
        a, b = table.get(f"irft@{variant}"), table.get(f"sft@{variant}")
        if a and b:
            lines.append(f"- IRFT ≥ SFT on `{variant}` demonstrations (correctness): {a['correctness']:.3f} vs "
                         f"{b['correctness']:.3f} → {'met' if a['correctness'] >= b['correctness'] else 'missed'}")
    return "\n".join(lines) + "\n"
