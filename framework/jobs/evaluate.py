"""Held-out evaluation — the self-play loop's ``evaluate`` stage — and ``alignplay eval``: the
judge's win rate of a policy against a reference (95% interval), and exploitability and
correctness where the task has response classes.

Exploitability is reported as the plug-in estimate (``exploitability``, biased upward by few
samples per state), its parts (``exploitability_<part>``, e.g. ``style`` and ``correctness``,
summing to it) and the cross-validated estimate (``exploitability_cv``, ``exploitability_style_cv``:
``framework.evaluation.loo_exploitability``, unbiased at an equilibrium)."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np

from actors.generator import RolloutGenerator
from actors.judge import PreferenceJudge, judge_all
from actors.remote import Handle, make_cluster
from framework.config import Config, load_config
from framework.errors import InputError
from framework.evaluation import class_counts, loo_exploitability, win_rate
from framework.models import check_model_path
from framework.jobs.reports import selfplay_report
from framework.jobs.rundir import strict_json, check_writable
from games.tasks import Task, get_task


def evaluate(cluster, policy: Handle[RolloutGenerator], reference: Handle[RolloutGenerator],
             judges: list[Handle[PreferenceJudge]], task: Task, states: list, *, samples: int, seed: int) -> dict:
    """Win rate of ``policy`` against ``reference`` on held-out states (by the pool ``judges``; a
    pair the judge dropped counts for neither), and its exploitability."""
    cur, ref = cluster.get([policy.call(RolloutGenerator.sample, states, k=samples, seed=seed),
                            reference.call(RolloutGenerator.sample, states, k=samples, seed=seed + 1)])
    conversations = [s for s in states for _ in range(samples)]
    a = [x.text for group in cur for x in group]
    b = [x.text for group in ref for x in group]
    verdicts = judge_all(cluster, judges, conversations, a, b)
    probs = np.array([np.nan if p is None else p for p in verdicts.probabilities])
    rate, half = win_rate(probs.reshape(len(states), samples))
    out = {"win_rate_vs_init": rate, "win_rate_ci95": half, "eval_judge_failures": verdicts.failures}
    if task.response_classes:
        counts = class_counts(task, states, [[x.text for x in g] for g in cur])
        out["exploitability"] = float(task.exploitability(counts).mean())
        out["class_mix"] = (counts.sum(axis=0) / counts.sum()).tolist()  # over every sampled answer
        parts = task.exploitability_parts(counts)
        out.update({f"exploitability_{part}": float(values.mean()) for part, values in parts.items()})
        if samples > 1:  # the cross-validated estimate (a best response fitted on the other answers)
            cv = loo_exploitability(task.class_matrix, counts)
            out["exploitability_cv"] = float(cv.mean())
            if "style" in parts:  # the correctness part is linear in the class mix: its estimate is unbiased
                out["exploitability_style_cv"] = float((cv - sum(v for k, v in parts.items() if k != "style")).mean())
        out["correct"] = float(counts[:, task.correct_classes].sum() / counts.sum())
    return out


def evaluate_policy(cfg: Config, policy: str, reference: str, *, conversations: int, samples: int,
                    seed: int) -> dict:
    """``evaluate`` of two policy directories in this process (no Ray), on ``conversations``
    held-out conversations of the config's task, with its judge."""
    task = get_task(**dataclasses.asdict(cfg.task))
    cluster = make_cluster(use_ray=False)
    make = dict(backend="hf", max_new_tokens=cfg.model.max_new_tokens, threads=os.cpu_count() or 1,
                dtype=cfg.model.dtype)
    current = cluster.spawn(RolloutGenerator, model_path=policy, generator_id=0, **make)
    ref = cluster.spawn(RolloutGenerator, model_path=reference, generator_id=-1, **make)
    judge = cluster.spawn(PreferenceJudge, kind=cfg.judge.kind, task=task, target=cfg.judge.target,
                          settings=cfg.judge.settings(), retries=cfg.judge.retries, requeue=cfg.judge.requeue)
    states = task.heldout_states(conversations, seed)
    out = evaluate(cluster, current, ref, [judge], task, states, samples=samples, seed=seed)
    out["win_rate_vs_reference"] = out.pop("win_rate_vs_init")
    return {**out, "policy": str(policy), "reference": str(reference), "task": cfg.task.name,
            "states": len(states), "samples_per_state": samples, "seed": seed}


def run(target: str, *, reference: str | None, config: str | None, conversations: int, samples: int, seed: int,
        out: str | None, overrides: list[str]) -> Path:
    """``alignplay eval``: ``target`` is a run directory (its final policy against its warm start,
    with its config), a checkpoint or a policy directory; writes and returns ``eval.json`` and adds
    it to the run's report."""
    for flag, value in (("--conversations", conversations), ("--samples", samples)):
        if value < 1:
            raise InputError(f"eval: {flag} must be ≥ 1, got {value}")
    target_dir = Path(target)
    run_dir = target_dir if (target_dir / "config.yaml").exists() else None
    if run_dir is not None:
        summary = json.loads((run_dir / "summary.json").read_text()) if (run_dir / "summary.json").exists() else {}
        policy = summary.get("final_policy") or str(run_dir / "checkpoints" / "final" / "policy")
        reference = reference or summary.get("init_policy")
        config = config or run_dir / "config.yaml"
    else:
        policy = str(target_dir)
    if not reference:
        raise InputError("eval: no reference policy known for this target; pass --reference PATH")
    # a checkpoint (or cached warm start) directory holds its policy under policy/
    policy, reference = (str(Path(p) / "policy") if (Path(p) / "policy" / "config.json").exists() else str(p)
                         for p in (policy, reference))
    check_model_path(policy, "eval target")
    check_model_path(reference, "--reference")
    if out:
        check_writable(Path(out).parent, "--out")
    cfg = load_config(config, overrides)
    report = evaluate_policy(cfg, policy, reference, conversations=conversations, samples=samples, seed=seed)
    path = Path(out) if out else (run_dir or target_dir) / "eval.json"
    path.write_text(strict_json(report, indent=1))
    if run_dir is not None and (run_dir / "metrics.jsonl").exists():
        selfplay_report(run_dir)
    line = f"win rate vs reference {report['win_rate_vs_reference']:.3f} ± {report['win_rate_ci95']:.3f}"
    if "exploitability" in report:
        line += f", exploitability {report['exploitability']:.3f}"
    print(f"{line} ({report['states']} held-out states × {report['samples_per_state']} samples)")
    return path
