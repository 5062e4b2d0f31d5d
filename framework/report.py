"""``alignplay report RUN_DIR``: plots and a Markdown report from a run's metrics."""

from __future__ import annotations

import json
from pathlib import Path

from framework.errors import InputError

STAGES = ("generate", "judge", "build_batch", "update", "sync_weights", "checkpoint", "evaluate", "log")


def read_metrics(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        raise InputError(f"{run_dir}: no metrics.jsonl (is this a self-play run directory?)")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _plot(path: Path, series: list[tuple[str, list, list, list | None]], ylabel: str, title: str, *,
          xlabel: str = "iteration", yscale: str = "linear") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for label, x, y, err in series:
        if err is None:
            ax.plot(x, y, marker="o" if len(x) < 40 else None, ms=3, label=label)
        else:
            ax.errorbar(x, y, yerr=err, marker="o", ms=3, capsize=2, label=label)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title, yscale=yscale)
    ax.grid(alpha=0.3)
    if len(series) > 1:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(run_dir: Path) -> Path:
    """report.md + win_rate.png, exploitability.png, throughput.png, staleness.png."""
    run_dir = Path(run_dir)
    rows = read_metrics(run_dir)
    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    it = [r["iteration"] for r in rows]
    ev = [r for r in rows if r.get("win_rate_vs_init") is not None]
    _plot(run_dir / "win_rate.png", [("vs warm start", [r["iteration"] for r in ev],
                                      [r["win_rate_vs_init"] for r in ev], [r.get("win_rate_ci95", 0) for r in ev])],
          "win rate (judge)", "win rate against the warm start (95% CI)")
    ex = [r for r in rows if r.get("exploitability") is not None]
    if ex:
        _plot(run_dir / "exploitability.png", [("policy", [r["iteration"] for r in ex],
                                                [r["exploitability"] for r in ex], None)],
              "exploitability", "exploitability on held-out states")
    _plot(run_dir / "throughput.png", [("samples/s", it, [r["samples_per_s"] for r in rows], None)],
          "trained samples per second", "throughput")
    _plot(run_dir / "staleness.png", [("mean staleness", it, [r["staleness_mean"] for r in rows], None),
                                      ("dropped (stale)", it, [r["dropped_stale"] for r in rows], None)],
          "policy versions / samples", "staleness")
    lines = ["# Self-play run report", "", f"Run directory: `{run_dir}` — {len(rows)} iterations.", ""]
    if summary.get("start") and summary.get("final"):
        lines += ["| policy | win rate vs warm start | exploitability | correct |", "|---|---|---|---|"]
        for name in ("start", "final"):
            s = summary[name]
            lines.append(f"| {name} | {s['win_rate_vs_init']:.3f} ± {s['win_rate_ci95']:.3f} | "
                         f"{s.get('exploitability', float('nan')):.3f} | {s.get('correct', float('nan')):.3f} |")
        lines += ["", f"Final policy (loads with `AutoModelForCausalLM.from_pretrained`): "
                      f"`{summary.get('final_policy', '')}`", ""]
    eval_path = run_dir / "eval.json"
    if eval_path.exists():  # written by `alignplay eval`
        e = json.loads(eval_path.read_text())
        lines += ["## Evaluation (`alignplay eval`)", "",
                  f"`{e['policy']}` against `{e['reference']}` on {e['states']} held-out states × "
                  f"{e['samples_per_state']} samples: win rate {e['win_rate_vs_reference']:.3f} ± "
                  f"{e['win_rate_ci95']:.3f} (95%)"
                  + (f", exploitability {e['exploitability']:.3f}" if "exploitability" in e else "") + ".", ""]
    total = sum(r.get("iteration_s", 0.0) for r in rows)
    lines += ["## Where the time goes", "", "| stage | seconds | share |", "|---|---|---|"]
    for stage in STAGES:
        sec = sum(r.get(f"{stage}_s", 0.0) for r in rows)
        lines.append(f"| {stage} | {sec:.1f} | {sec / total:.0%} |" if total else f"| {stage} | {sec:.1f} | |")
    lines += ["", f"Mean throughput {sum(r['samples'] for r in rows) / max(total, 1e-9):.1f} trained samples/s; "
                  f"{sum(r['dropped_stale'] for r in rows)} stale samples dropped.", ""]
    for png in ("win_rate", "exploitability", "throughput", "staleness"):
        if (run_dir / f"{png}.png").exists():
            lines.append(f"![{png}]({png}.png)")
    out = run_dir / "report.md"
    out.write_text("\n".join(lines) + "\n")
    return out


def print_summary(summary: dict, run_dir: Path) -> None:
    print(f"\n{'policy':<12}{'win rate vs warm start':>26}{'exploitability':>16}{'correct':>9}")
    for name, label in (("start", "warm start"), ("final", "final")):
        s = summary[name]
        print(f"{label:<12}{s['win_rate_vs_init']:>18.3f} ± {s['win_rate_ci95']:.3f}"
              f"{s.get('exploitability', float('nan')):>16.3f}{s.get('correct', float('nan')):>9.3f}")
    print(f"\nreport: {Path(run_dir) / 'report.md'}")
