"""``job: compare``: methods side by side on one task, with the same sample budget and seeds.

Every method runs as an ordinary self-play run under ``RUN_DIR/runs/<method>-seed<seed>`` (a
finished one is reused, so an interrupted comparison continues where it stopped), all from the
same warm start. ``sft`` is that warm start itself, measured by the runs' start evaluation.

Writes ``comparison.json`` — top-level keys are method names, each mapping a metric to its mean
over seeds plus ``<metric>_std`` (the contract every alignplay comparison shares) —
``comparison.md`` and ``exploitability.png`` (held-out exploitability per iteration, mean over seeds).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from framework.config import Config, with_overrides

METRICS = ("win_rate_vs_sft", "exploitability", "samples", "wall_s")


def method_config(cfg: Config, method: str, seed: int, *extra: str) -> Config:
    """One run of a comparison: ``method`` with its ``compare.overrides``, then ``extra``."""
    return with_overrides(cfg, [f"seed={seed}", "job=selfplay", "resume=false", f"algo.name={method}",
                                *extra, *cfg.compare.overrides.get(method, ())])


def run_or_reuse(sub_cfg: Config, sub: Path, label: str, run=None) -> dict:
    """The summary of the finished run in ``sub``, or of the run done now by ``run`` (default:
    a self-play run; an interrupted one starts again from scratch)."""
    import shutil

    from framework.config import to_yaml
    from framework.driver import run_selfplay

    summary = _finished(sub)
    if summary is not None:
        return summary
    print(f"[{label}] → {sub}", flush=True)
    if sub.exists():
        shutil.rmtree(sub)
    sub.mkdir(parents=True)
    (sub / "config.yaml").write_text(to_yaml(sub_cfg))
    return (run or run_selfplay)(sub_cfg, sub)


def run_compare_job(cfg: Config, run_dir: Path) -> dict:
    run_dir = Path(run_dir)
    algos = [m for m in cfg.compare.methods if m != "sft"] or ["mpo"]  # sft alone still needs a start eval
    started = time.perf_counter()
    per_seed: dict = {m: [] for m in cfg.compare.methods}
    curves: dict = {m: [] for m in cfg.compare.methods}
    for seed in cfg.compare.seeds:
        for i, method in enumerate(algos):
            sub = run_dir / "runs" / f"{method}-seed{seed}"
            summary = run_or_reuse(method_config(cfg, method, seed), sub, f"compare {method}, seed {seed}")
            metrics = [json.loads(line) for line in (sub / "metrics.jsonl").read_text().splitlines()]
            if i == 0 and "sft" in per_seed:
                start = summary["start"]
                per_seed["sft"].append({"win_rate_vs_sft": start["win_rate_vs_init"],
                                        "win_rate_vs_sft_ci95": start["win_rate_ci95"],
                                        "exploitability": start.get("exploitability"),
                                        "correct": start.get("correct"), "samples": 0, "wall_s": 0.0})
                curves["sft"].append([(0, start.get("exploitability"))])
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
    (run_dir / "comparison.json").write_text(json.dumps(table, indent=1))
    (run_dir / "comparison_seeds.json").write_text(json.dumps(per_seed, indent=1))
    plot_curves(curves, run_dir / "exploitability.png")
    wall = time.perf_counter() - started
    (run_dir / "comparison.md").write_text(markdown(cfg, table, per_seed, wall))
    print((run_dir / "comparison.md").read_text())
    return table


def _finished(sub: Path) -> dict | None:
    path = sub / "summary.json"
    if not path.exists():
        return None
    summary = json.loads(path.read_text())
    return summary if "final" in summary else None


def aggregate(per_seed: dict, metrics: tuple[str, ...] = (*METRICS, "correct")) -> dict:
    """Method → {metric: mean over seeds, metric_std: sample std (0 for one seed)}."""
    out = {}
    for method, rows in per_seed.items():
        entry = {}
        for key in metrics:
            values = [r[key] for r in rows if r.get(key) is not None and r[key] == r[key]]  # not NaN
            if values:
                entry[key] = float(np.mean(values))
                entry[f"{key}_std"] = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
        # the judge's 95% interval of the mean win rate (independent evaluations per seed)
        cis = [r["win_rate_vs_sft_ci95"] for r in rows if "win_rate_vs_sft_ci95" in r]
        if cis:
            entry["win_rate_vs_sft_ci95"] = float(np.sqrt(np.sum(np.square(cis))) / len(cis))
        out[method] = entry
    return out


def plot_curves(curves: dict, path: Path, *, ylabel: str = "held-out exploitability",
                xlabel: str = "iteration") -> None:
    """Per method the mean over seeds of its (x, value) runs; ``sft`` as a dashed baseline."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = {m: [[(i, v) for i, v in run if v is not None] for run in runs] for m, runs in curves.items()}
    curves = {m: [run for run in runs if run] for m, runs in curves.items()}
    fig, ax = plt.subplots(figsize=(6, 4))
    if not any(curves.values()):
        ax.text(0.5, 0.5, f"this task reports no {ylabel.removeprefix('held-out ')}", ha="center", va="center")
    for method, runs in curves.items():
        if method == "sft" or not runs:
            continue
        iters = sorted({i for run in runs for i, _ in run})
        by_iter = [np.mean([dict(run)[i] for run in runs if i in dict(run)]) for i in iters]
        ax.plot(iters, by_iter, marker="o", ms=3, label=method)
    if curves.get("sft"):
        ax.axhline(np.mean([run[0][1] for run in curves["sft"]]), color="gray", ls="--", label="sft")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


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
