"""``job: compare_irl``: learning from demonstrations side by side (SFT, SPIN, IRFT, RFT).

For each seed and data variant (``compare.variants``, e.g. clean and corrupted demonstrations),
every method of ``compare.methods`` runs as an ordinary run under
``RUN_DIR/runs/<method>@<variant>-seed<seed>[-lr<lr>]`` from the same start (finished runs are
reused). ``sft`` (SFT trained further on the same demonstrations) must be among the methods: it
is the baseline the others are judged against. The comparison is on equal footing:

- every method gets the same optimizer, schedule, optimizer steps and data (the config's), and its
  learning rate from one grid (``compare.lr_grid``), chosen per method by greedy correctness on
  validation states — held-out states other than the test ones — on the first variant and seed,
  then used for every variant and seed (so a clean → corrupted drop is one method's);
- with ``algo.reward_model`` unset, RFT's reward model is first trained to a measured held-out
  accuracy (``job: train_judge`` on the demonstrations against the start's own answers, states
  split) and the policy phase starts from it, as the authors train it before the policy.

Metrics per run, then mean and std over seeds in ``comparison.json`` (keys ``<method>@<variant>``):
``correctness`` (sampled held-out task accuracy), ``greedy_correctness``, ``malformed_share`` and
``wrong_number_share`` (the kinds of the sampled answers' errors: a wrong total, or no answer of
the task's form), ``win_rate_vs_sft`` (judge win rate against the same variant's SFT policy, with
``win_rate_vs_sft_ci95``), ``implicit_reward_acc`` (share of held-out states where log π/π_start
ranks the right answer above an answer of π_start), ``reward_model_acc`` (RFT: its reward model's
held-out pair accuracy before the policy phase, and ``reward_model_ceiling``, the accuracy its
pairs allow: a judge of correctness alone, ½ where both answers are right or both wrong — a right
answer's style is the demonstrator's coin flip), ``start_correctness`` (the run's own start
evaluation), ``start_greedy_correctness`` and ``start_sampled_correctness`` (the start on the test
states) and ``wall_s``. ``targets.json`` holds the paired differences over seeds (mean, 95%
t-interval) the targets name, and ``continued_sft_gain_*``: what continued SFT gains over the start
(a converged start gains less than ``CONVERGED_GAIN``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path

import numpy as np

from actors.generator import RolloutGenerator
from framework.config import Config, with_overrides
from framework.errors import InputError
from framework.evaluation import answer_kinds
from framework.jobs import compare, selfplay, train_judge
from framework.jobs.evaluate import evaluate_policy
from framework.jobs.reports import aggregate
from framework.jobs.rundir import strict_json, check_dirs, finished_summary, run_or_reuse
from framework.jobs.warmstart import prepare_policy, warm_start_record
from games.tasks import get_task

#: the method every other is judged against: ``algo.name=sft`` trained on the same demonstrations
BASELINE = "sft"
METRICS = ("correctness", "greedy_correctness", "malformed_share", "wrong_number_share", "win_rate_vs_sft",
           "implicit_reward_acc", "reward_model_acc", "reward_model_ceiling", "start_correctness",
           "start_greedy_correctness", "start_sampled_correctness", "wall_s")
#: a start is converged when continued SFT gains less than this in greedy correctness (the issue's bar)
CONVERGED_GAIN = 0.02
#: validation states are held-out states drawn with this offset to the seed (the test ones use +1..+3)
VALIDATION_SEED = 10_000


def method_config(cfg: Config, method: str, variant: str, seed: int, *extra: str) -> Config:
    return compare.method_config(cfg, method, seed, *cfg.compare.variants.get(variant, ()), *extra)


def preflight(cfg: Config, run_dir: Path) -> None:
    if BASELINE not in cfg.compare.methods:
        raise InputError(f"compare.methods: compare_irl needs {BASELINE!r} (the baseline the others are judged "
                         f"against)")
    check_dirs(cfg, run_dir)
    for method in cfg.compare.methods:
        for variant in cfg.compare.variants or {"data": []}:
            compare.check_run(method_config(cfg, method, variant, cfg.compare.seeds[0]))  # bad overrides fail here


def _generator(cfg: Config, policy: str) -> RolloutGenerator:
    return RolloutGenerator(model_path=policy, backend="hf", max_new_tokens=cfg.model.max_new_tokens,
                            threads=os.cpu_count() or 1, dtype=cfg.model.dtype)


def implicit_reward_accuracy(cfg: Config, policy: str, init: str, *, conversations: int, seed: int) -> float:
    """P(r(y_right) > r(y_init)) on held-out states, r = log π_policy − log π_init, y_init ~ π_init."""
    task = get_task(**dataclasses.asdict(cfg.task))
    if not task.heldout_answers:
        return float("nan")
    pairs = task.heldout_demonstrations(conversations, seed)
    final, start = _generator(cfg, policy), _generator(cfg, init)
    states, right = [s for s, _ in pairs], [a for _, a in pairs]
    own = [group[0].text for group in start.sample(states, k=1, seed=seed)]
    r_right = np.array(final.score(states, right)) - np.array(start.score(states, right))
    r_own = np.array(final.score(states, own)) - np.array(start.score(states, own))
    differs = np.array([a != b for a, b in zip(right, own)])  # a tie carries no ranking
    return float((r_right[differs] > r_own[differs]).mean()) if differs.any() else float("nan")


def answer_scores(cfg: Config, policy: str, *, conversations: int, seed: int) -> dict:
    """On held-out states: greedy correctness, and the kinds of the sampled answers (``eval.samples``
    per state): the share right, with a wrong number, and malformed (not of the task's form)."""
    task = get_task(**dataclasses.asdict(cfg.task))
    if not task.response_classes:
        return {}
    states, gen = task.heldout_states(conversations, seed), _generator(cfg, policy)
    greedy = answer_kinds(task, states, [[s.text for s in g] for g in gen.sample(states, k=1, seed=seed,
                                                                                  temperature=0.0)])
    sampled = answer_kinds(task, states, [[s.text for s in g] for g in gen.sample(states, k=cfg.eval.samples,
                                                                                   seed=seed)])
    return {"greedy_correctness": greedy["correct"], "greedy_malformed_share": greedy["malformed"],
            "sampled_correctness": sampled["correct"], "malformed_share": sampled["malformed"],
            "wrong_number_share": sampled["wrong_number"]}


def reward_model(cfg: Config, out: Path) -> dict:
    """RFT's reward model trained before its policy phase (``job: train_judge`` in ``out``): the
    run's demonstrations preferred to the start's own answers at their states (ties left out),
    states split into training and held out. Returns the train_judge summary."""
    done = finished_summary(out / "judge_run", "judge_path")
    if done is not None:
        return done
    task = get_task(**dataclasses.asdict(cfg.task))
    start = prepare_policy(cfg, task, progress=False)
    demos = selfplay.source(cfg, task).demonstrations()
    own = _generator(cfg, start).sample([d.messages for d in demos], k=1, seed=cfg.seed + 5)
    out.mkdir(parents=True, exist_ok=True)
    rows = [{"messages": d.messages, "chosen": d.response, "rejected": g[0].text}
            for d, g in zip(demos, own) if g[0].text != d.response]
    data = out / "preferences.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    judge_cfg = with_overrides(cfg, ["job=train_judge", f"train_judge.data={data}", "train_judge.kind=reward_model",
                                     f"train_judge.base={start}"])
    return run_or_reuse(judge_cfg, out / "judge_run", "compare_irl: RFT's reward model", train_judge.run,
                        done_key="judge_path")


def preference_ceiling(cfg: Config, data: Path) -> float | None:
    """The pair accuracy a judge can reach on ``data`` (rows ``{messages, chosen, rejected}``)
    when correctness is all the preference carries: 1 where only the chosen answer is right, 0
    where only the rejected one is, ½ otherwise; None for a task without answer classes."""
    task = get_task(**dataclasses.asdict(cfg.task))
    if not task.response_classes:
        return None
    right = task.correct_classes
    scores = []
    for line in data.read_text().splitlines():
        row = json.loads(line)
        a, b = (task.classify(row["messages"], row[k]) in right for k in ("chosen", "rejected"))
        scores.append(0.5 if a == b else float(a))
    return float(np.mean(scores)) if scores else None


def one_run(cfg: Config, run_dir: Path, method: str, variant: str, seed: int, lr: float | None) -> tuple[Config, Path, dict]:
    """A method's run (its reward model first, for RFT): (config, directory, summary)."""
    extra, scores = ([f"algo.lr={lr}"] if lr is not None else []), {}
    sub_cfg = method_config(cfg, method, variant, seed, *extra)
    if method == "rft" and not sub_cfg.algo.reward_model:
        judged = reward_model(sub_cfg, run_dir / "reward_models" / f"{variant}-seed{seed}")
        scores["reward_model_acc"] = judged["held_out_accuracy"]
        scores["reward_model_ceiling"] = preference_ceiling(
            sub_cfg, run_dir / "reward_models" / f"{variant}-seed{seed}" / "preferences.jsonl")
        sub_cfg = method_config(cfg, method, variant, seed, *extra, f"algo.reward_model={judged['judge_path']}")
    name = f"{method}@{variant}-seed{seed}" + (f"-lr{lr:g}" if lr is not None else "")
    sub = run_dir / "runs" / name
    summary = run_or_reuse(sub_cfg, sub, f"compare_irl {method}@{variant}, seed {seed}"
                           + (f", lr {lr:g}" if lr is not None else ""), selfplay.run)
    return sub_cfg, sub, {**summary, **scores}


def start_scores(cfg: Config, policy: str, path: Path, *, conversations: int, seed: int) -> dict:
    """The start's greedy and sampled correctness on the methods' test states (cached in ``path``):
    what continued SFT gains over it says whether the start had converged."""
    if not path.exists():
        scores = answer_scores(cfg, policy, conversations=conversations, seed=seed)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(strict_json({f"start_{k}": scores[k] for k in ("greedy_correctness", "sampled_correctness")}
                                    if scores else {}))
    return json.loads(path.read_text())


def select_lrs(cfg: Config, run_dir: Path, methods: list[str], variant: str, seed: int) -> dict:
    """Each method's learning rate from ``compare.lr_grid``: the best greedy correctness on
    validation states (ties: the smaller rate); written to ``selection.json``."""
    selection = {}
    for method in methods:
        scores = {}
        for lr in cfg.compare.lr_grid:
            sub_cfg, sub, _ = one_run(cfg, run_dir, method, variant, seed, lr)
            path = sub / "validation.json"
            if not path.exists():
                path.write_text(strict_json(answer_scores(sub_cfg, str(sub / "checkpoints" / "final" / "policy"),
                                                          conversations=cfg.compare.validation_conversations,
                                                          seed=VALIDATION_SEED + seed)))
            scores[f"{lr:g}"] = json.loads(path.read_text())["greedy_correctness"]
        best = max(sorted(cfg.compare.lr_grid), key=lambda lr: scores[f"{lr:g}"])
        selection[method] = {"lr": best, "validation_greedy_correctness": scores}
        print(f"compare_irl: {method} lr {best:g} (validation greedy correctness "
              + ", ".join(f"{k}: {v:.3f}" for k, v in scores.items()) + ")", flush=True)
    (run_dir / "selection.json").write_text(strict_json(selection, indent=1))
    return {m: s["lr"] for m, s in selection.items()}


def run(cfg: Config, run_dir: Path) -> dict:
    preflight(cfg, run_dir)
    run_dir = Path(run_dir)
    methods = [BASELINE, *[m for m in cfg.compare.methods if m != BASELINE]]
    variants = cfg.compare.variants or {"data": []}
    started = time.perf_counter()
    lrs = (select_lrs(cfg, run_dir, methods, next(iter(variants)), cfg.compare.seeds[0]) if cfg.compare.lr_grid
           else dict.fromkeys(methods))
    per_seed: dict = {f"{m}@{v}": [] for v in variants for m in methods}
    for seed in cfg.compare.seeds:
        for variant in variants:
            sft_policy, start = None, None
            for method in methods:
                sub_cfg, sub, summary = one_run(cfg, run_dir, method, variant, seed, lrs[method])
                # from the run directory, not the summary (whose path may be relative to another cwd)
                final_policy = str(sub / "checkpoints" / "final" / "policy")
                if method == BASELINE:
                    sft_policy = final_policy
                    start = start_scores(sub_cfg, summary["init_policy"], run_dir / "starts" / f"{variant}-seed{seed}.json",
                                         conversations=cfg.eval.final_conversations, seed=seed + 1)
                scores_path = sub / "irl_scores.json"
                if not scores_path.exists():
                    judged = evaluate_policy(sub_cfg, final_policy, sft_policy,
                                             conversations=cfg.eval.final_conversations, samples=cfg.eval.samples,
                                             seed=seed + 2)
                    scores = {"correctness": summary["final"].get("correct"),
                              "start_correctness": summary["start"].get("correct"),
                              "win_rate_vs_sft": judged["win_rate_vs_reference"],
                              "win_rate_vs_sft_ci95": judged["win_rate_ci95"],
                              "implicit_reward_acc": implicit_reward_accuracy(
                                  sub_cfg, final_policy, summary["init_policy"],
                                  conversations=cfg.eval.final_conversations, seed=seed + 3),
                              **answer_scores(sub_cfg, final_policy, conversations=cfg.eval.final_conversations,
                                              seed=seed + 1),
                              "reward_model_acc": summary.get("reward_model_acc"),
                              "warm_start": warm_start_record(summary["init_policy"]),
                              "lr": sub_cfg.algo.lr, "wall_s": summary["wall_s"]}
                    scores_path.write_text(strict_json(scores))
                ceiling = {k: summary[k] for k in ("reward_model_ceiling",) if k in summary}
                per_seed[f"{method}@{variant}"].append({**json.loads(scores_path.read_text()), **ceiling, **start})
    table = aggregate(per_seed, METRICS)
    targets = paired_targets(per_seed, list(variants))
    (run_dir / "comparison.json").write_text(strict_json(table, indent=1))
    (run_dir / "comparison_seeds.json").write_text(strict_json(per_seed, indent=1))
    (run_dir / "targets.json").write_text(strict_json(targets, indent=1))
    (run_dir / "comparison.md").write_text(markdown(cfg, table, targets, lrs, per_seed, time.perf_counter() - started))
    print((run_dir / "comparison.md").read_text())
    return table


# --- paired targets ----------------------------------------------------------------------------
def paired(a: list[float], b: list[float]) -> dict:
    """Mean of the per-seed differences a − b and its two-sided 95% t-interval (n − 1 degrees)."""
    from scipy.stats import t

    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    half = float(t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else float("nan")
    return {"mean": float(d.mean()), "ci95": half, "low": float(d.mean()) - half, "seeds": len(d)}


def paired_targets(per_seed: dict, variants: list[str]) -> dict:
    """The issue's targets as paired differences over seeds (the same seed's runs share their start)."""
    def col(key, metric):
        return [r.get(metric) for r in per_seed.get(key, [])]

    out: dict = {}
    clean, corrupted = variants[0], (variants[1] if len(variants) > 1 else None)
    for metric in ("greedy_correctness", "correctness"):
        for other in ("sft", "spin"):
            a, b = col(f"irft@{clean}", metric), col(f"{other}@{clean}", metric)
            if a and b and None not in a + b:
                out[f"irft_minus_{other}_{metric}@{clean}"] = paired(a, b)
        if corrupted:
            drops = {}
            for m in ("irft", "sft"):
                a, b = col(f"{m}@{clean}", metric), col(f"{m}@{corrupted}", metric)
                if a and b and None not in a + b:
                    drops[m] = np.asarray(a) - np.asarray(b)
            if len(drops) == 2:  # IRFT's drop ≤ SFT's: sft_drop − irft_drop ≥ 0
                out[f"sft_drop_minus_irft_drop_{metric}"] = paired(list(drops["sft"]), list(drops["irft"]))
    for metric in ("greedy_correctness", "sampled_correctness"):  # the start's convergence: gains < CONVERGED_GAIN
        for variant in variants:
            a, b = col(f"sft@{variant}", metric), col(f"sft@{variant}", f"start_{metric}")
            if a and b and None not in a + b:
                out[f"continued_sft_gain_{metric}@{variant}"] = paired(a, b)
    a, b = col(f"irft@{clean}", "implicit_reward_acc"), col(f"sft@{clean}", "implicit_reward_acc")
    if a and b and None not in a + b:
        out[f"irft_minus_sft_implicit_reward_acc@{clean}"] = paired(a, b)
    return out


def markdown(cfg: Config, table: dict, targets: dict, lrs: dict, per_seed: dict, wall: float) -> str:
    def cell(entry, key):
        return f"{entry[key]:.3f} ± {entry[key + '_std']:.3f}" if key in entry else "—"

    starts = {json.dumps(r.get("warm_start", {}).get("steps")) for rows in per_seed.values() for r in rows}
    lines = [f"# Learning from demonstrations on `{cfg.task.name}`", "",
             f"{len(cfg.compare.seeds)} seed(s) {list(cfg.compare.seeds)}; variants: "
             + "; ".join(f"`{v}` = {' '.join(o) or 'defaults'}" for v, o in (cfg.compare.variants or {"data": []}).items())
             + f". Learning rates (from {list(cfg.compare.lr_grid) or 'algo.lr'}): "
             + ", ".join(f"{m} {lr if lr is not None else cfg.algo.lr:g}" for m, lr in lrs.items())
             + f". Warm-start SFT steps per seed and variant: {', '.join(sorted(starts))}."
             + f" Wall time of this invocation: {wall:.0f} s.", "",
             "Mean ± std over seeds; the win rate's [±] is the judge's 95% interval of the mean. Answer kinds are "
             "of the sampled answers.", "",
             "| method@data | correctness | greedy correctness | wrong number | malformed | win rate vs SFT | "
             "implicit reward acc. | reward model acc. (ceiling) | start correctness |",
             "|---|---|---|---|---|---|---|---|---|"]
    for key, e in table.items():
        lines.append(f"| {key} | {cell(e, 'correctness')} | {cell(e, 'greedy_correctness')} | "
                     f"{cell(e, 'wrong_number_share')} | {cell(e, 'malformed_share')} | {cell(e, 'win_rate_vs_sft')} "
                     f"[±{e.get('win_rate_vs_sft_ci95', float('nan')):.3f}] | {cell(e, 'implicit_reward_acc')} | "
                     f"{cell(e, 'reward_model_acc')}"
                     + (f" ({e['reward_model_ceiling']:.3f})" if "reward_model_ceiling" in e else "")
                     + f" | {cell(e, 'start_correctness')} |")
    lines += ["", "## Targets (paired over seeds, mean [95% interval]; met when the interval's low end ≥ 0)", ""]
    for name, d in targets.items():
        verdict = "met" if d["low"] >= 0 else ("missed" if d["mean"] + d["ci95"] < 0 else "not shown (interval spans 0)")
        if name.startswith("continued_sft_gain"):
            verdict = f"{'converged' if d['mean'] < CONVERGED_GAIN else 'not converged'} start (bar: < {CONVERGED_GAIN})"
        lines.append(f"- `{name}`: {d['mean']:+.3f} [{d['low']:+.3f}, {d['mean'] + d['ci95']:+.3f}] → {verdict}")
    return "\n".join(lines) + "\n"
