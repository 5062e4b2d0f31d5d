"""``job: compare``: methods side by side on one task, with the same sample budget and seeds.

Every method runs as an ordinary self-play run under ``RUN_DIR/runs/<method>-seed<seed>`` (a
finished one is reused, so an interrupted comparison continues where it stopped), all from the
same warm start. The key ``sft`` is that SFT warm start itself, measured by the runs' start
evaluation (not ``algo.name=sft``, which ``compare_irl`` trains further).

Writes ``comparison.json`` — top-level keys are method names, each mapping a metric to its mean
over seeds plus ``<metric>_std`` (the contract every alignplay comparison shares) —
``comparison.md`` and ``exploitability.png`` (held-out exploitability per iteration, mean over seeds).
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

from framework.config import Config, with_overrides
from framework.jobs import selfplay
from framework.jobs.reports import aggregate, plot_curves
from framework.jobs.rundir import strict_json, check_dirs, check_inputs, run_or_reuse
from games.judges import build_judge
from games.tasks import get_task

#: ``compare.methods``'s name for the SFT warm start every run starts from (measured, not trained)
START = "sft"


def method_config(cfg: Config, method: str, seed: int, *extra: str) -> Config:
    """One run of a comparison: ``method`` with its ``compare.overrides``, then ``extra``."""
    return with_overrides(cfg, [f"seed={seed}", "job=selfplay", "resume=false", f"algo.name={method}",
                                *extra, *cfg.compare.overrides.get(method, ())])


def preflight(cfg: Config, run_dir: Path) -> None:
    """The directories can be written and every method's config loads (bad overrides fail here)
    with inputs, a task and a judge that do."""
    check_dirs(cfg, run_dir)
    for method in cfg.compare.methods:
        if method != START:
            check_run(method_config(cfg, method, cfg.compare.seeds[0]))


def check_run(sub: Config) -> None:
    """What a self-play run's preflight checks of its config, for a run of a comparison."""
    check_inputs(sub)
    build_judge(sub.judge.kind, task=get_task(**dataclasses.asdict(sub.task)), target=sub.judge.target,
                settings=sub.judge.settings())


def run(cfg: Config, run_dir: Path) -> dict:
    run_dir = Path(run_dir)
    algos = [m for m in cfg.compare.methods if m != START] or ["mpo"]  # the start alone still needs a run
    started = time.perf_counter()
    per_seed: dict = {m: [] for m in cfg.compare.methods}
    curves: dict = {m: [] for m in cfg.compare.methods}
    for seed in cfg.compare.seeds:
        for i, method in enumerate(algos):
            sub = run_dir / "runs" / f"{method}-seed{seed}"
            summary = run_or_reuse(method_config(cfg, method, seed), sub, f"compare {method}, seed {seed}",
                                   selfplay.run)
            metrics = [json.loads(line) for line in (sub / "metrics.jsonl").read_text().splitlines()]
            if i == 0 and START in per_seed:
                start = summary["start"]
                per_seed[START].append({"win_rate_vs_sft": start["win_rate_vs_init"],
                                        "win_rate_vs_sft_ci95": start["win_rate_ci95"],
                                        "exploitability": start.get("exploitability"),
                                        "correct": start.get("correct"), "samples": 0, "wall_s": 0.0})
                curves[START].append([(0, start.get("exploitability"))])
            if method in per_seed:
                final = summary["final"]
                per_seed[method].append({"win_rate_vs_sft": final["win_rate_vs_init"],
                                         "win_rate_vs_sft_ci95": final["win_rate_ci95"],
                                         "exploitability": final.get("exploitability"),
                                         "correct": final.get("correct"),
                                         "samples": summary["samples_generated"], "wall_s": summary["wall_s"]})
                curves[method].append([(0, summary["start"].get("exploitability"))] +
                                      [(m["iteration"], m["exploitability"]) for m in metrics
                                       if m.get("exploitability") is not None])
    table = aggregate(per_seed)
    (run_dir / "comparison.json").write_text(strict_json(table, indent=1))
    (run_dir / "comparison_seeds.json").write_text(strict_json(per_seed, indent=1))
    plot_curves(curves, run_dir / "exploitability.png", baseline=START)
    wall = time.perf_counter() - started
    (run_dir / "comparison.md").write_text(markdown(cfg, table, per_seed, wall))
    print((run_dir / "comparison.md").read_text())
    return table


def markdown(cfg: Config, table: dict, per_seed: dict, wall: float) -> str:
    def cell(entry, key, fmt):
        if key not in entry:
            return "—"
        return f"{entry[key]:{fmt}} ± {entry[f'{key}_std']:{fmt}}"

    lines = [f"# Comparison on `{cfg.task.name}`", "",
             f"{len(cfg.compare.seeds)} seed(s) {list(cfg.compare.seeds)}; per method and seed "
             f"{cfg.train.iterations} iterations × {cfg.train.conversations} conversations × K = {cfg.algo.k} "
             f"(fixed prompts: {cfg.train.fixed_prompts}), held-out evaluation on "
             f"{cfg.eval.final_conversations} conversations × {cfg.eval.samples} samples. "
             f"Wall time of this invocation: {wall:.0f} s.", "",
             "Mean ± std over seeds; the win rate's ± in brackets is the judge's 95% interval of the mean.", "",
             "| method | win rate vs SFT start | exploitability | correct | samples | wall s |",
             "|---|---|---|---|---|---|"]
    for method, entry in table.items():
        lines.append(f"| {method} | {cell(entry, 'win_rate_vs_sft', '.3f')} "
                     f"[±{entry['win_rate_vs_sft_ci95']:.3f}] | {cell(entry, 'exploitability', '.3f')} | "
                     f"{cell(entry, 'correct', '.3f')} | {entry.get('samples', 0):.0f} | {entry.get('wall_s', 0):.0f} |")
    lines += ["", "![exploitability](exploitability.png)", "", "## Targets", ""]
    if "ompo" in table and "dpo" in table:
        o, d = table["ompo"]["exploitability"], table["dpo"]["exploitability"]
        lines.append(f"- OMPO's final exploitability ≤ ½ of iterative DPO's: {o:.3f} vs ½·{d:.3f} = {d / 2:.3f} → "
                     f"{'met' if o <= d / 2 else 'missed'}")
    for method in ("mpo", "ompo"):
        if method in table:
            e = table[method]
            low = e["win_rate_vs_sft"] - e["win_rate_vs_sft_ci95"]
            lines.append(f"- {method.upper()} beats the SFT start (interval above ½): "
                         f"{e['win_rate_vs_sft']:.3f} − {e['win_rate_vs_sft_ci95']:.3f} = {low:.3f} → "
                         f"{'met' if low > 0.5 else 'missed'}")
    lines += ["", "Per-seed figures: `comparison_seeds.json`; each run's own report: `runs/<method>-seed<seed>/`.", ""]
    return "\n".join(lines)
