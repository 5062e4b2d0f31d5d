"""Reports: ``report.md`` and PNG plots of a self-play run (``selfplay_report``) and of a DP
run (``dp_report``) — ``alignplay report RUN_DIR`` rewrites them — and what comparisons share:
the mean ± std table over seeds (``aggregate``) and curves per method (``plot_curves``)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from framework.errors import InputError

#: the DP report's one-step analysis columns (privacy/diagnostics.py): the clipped SGD terms, then Adam's
DIAGNOSTICS = ("clip_mean", "signal", "clipped_gthg", "minibatch_term", "noise_term", "noise_to_signal",
               "pre_signal", "pre_gthg", "pre_minibatch_term", "pre_noise_term", "pre_noise_to_signal", "pre_eta_star")
#: ``job: compare``'s metrics per method and seed
COMPARE_METRICS = ("win_rate_vs_sft", "exploitability", "samples", "wall_s", "correct")
STAGES = ("generate", "judge", "build_batch", "update", "sync_weights", "checkpoint", "evaluate", "log")


def fmt(x, spec: str = ".3f") -> str:
    """A number for a table; None (a non-finite value in strict JSON) and NaN as a dash."""
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def read_metrics(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        raise InputError(f"{run_dir}: no metrics.jsonl (is this a self-play run directory?)")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot(path: Path, series: list[tuple[str, list, list, list | None]], ylabel: str, title: str, *,
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


def selfplay_report(run_dir: Path) -> Path:
    """A self-play run's report.md + win_rate.png, exploitability.png, throughput.png, staleness.png."""
    run_dir = Path(run_dir)
    rows = read_metrics(run_dir)
    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    it = [r["iteration"] for r in rows]
    ev = [r for r in rows if r.get("win_rate_vs_init") is not None]
    plot(run_dir / "win_rate.png", [("vs warm start", [r["iteration"] for r in ev],
                                     [r["win_rate_vs_init"] for r in ev], [r.get("win_rate_ci95", 0) for r in ev])],
         "win rate (judge)", "win rate against the warm start (95% CI)")
    ex = [r for r in rows if r.get("exploitability") is not None]
    if ex:
        plot(run_dir / "exploitability.png", [("policy", [r["iteration"] for r in ex],
                                               [r["exploitability"] for r in ex], None)],
             "exploitability", "exploitability on held-out states")
    plot(run_dir / "throughput.png", [("samples/s", it, [r["samples_per_s"] for r in rows], None)],
         "trained samples per second", "throughput")
    plot(run_dir / "staleness.png", [("mean staleness", it, [r["staleness_mean"] for r in rows], None),
                                     ("dropped (stale)", it, [r["dropped_stale"] for r in rows], None)],
         "policy versions / samples", "staleness")
    lines = ["# Self-play run report", "", f"Run directory: `{run_dir}` — {len(rows)} iterations.", ""]
    if summary.get("start") and summary.get("final"):
        lines += ["| policy | win rate vs warm start | exploitability | correct |", "|---|---|---|---|"]
        for name in ("start", "final"):
            s = summary[name]
            lines.append(f"| {name} | {s['win_rate_vs_init']:.3f} ± {s['win_rate_ci95']:.3f} | "
                         f"{fmt(s.get('exploitability'))} | {fmt(s.get('correct'))} |")
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


def selfplay_summary(summary: dict, run_dir: Path) -> None:
    """What ``alignplay run`` ends a self-play run with: its report, and the start and final
    policies' figures printed."""
    selfplay_report(run_dir)
    print(f"\n{'policy':<12}{'win rate vs warm start':>26}{'exploitability':>16}{'correct':>9}")
    for name, label in (("start", "warm start"), ("final", "final")):
        s = summary[name]
        print(f"{label:<12}{s['win_rate_vs_init']:>18.3f} ± {s['win_rate_ci95']:.3f}"
              f"{fmt(s.get('exploitability')):>16}{fmt(s.get('correct')):>9}")
    print(f"\nreport: {Path(run_dir) / 'report.md'}")


def dp_report(run_dir: Path) -> Path:
    """A DP run's report.md + eval_loss.png, epsilon.png, diagnostics.png."""
    run_dir = Path(run_dir)
    rows = read_metrics(run_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    ev = [r for r in rows if r.get("eval_loss") is not None]
    plot(run_dir / "eval_loss.png", [("held-out", [r["iteration"] for r in ev], [r["eval_loss"] for r in ev], None)],
         "loss (nats/token)", f"{summary['method']}: held-out loss", xlabel="step")
    eps = [r for r in rows if r.get("epsilon") is not None] if not summary.get("diverged") else []
    if eps:
        plot(run_dir / "epsilon.png", [("ε spent", [r["iteration"] for r in eps], [r["epsilon"] for r in eps], None)],
             "ε", "privacy spent (accountant)", xlabel="step")
    diag = {k: [(r["iteration"], abs(r[k])) for r in ev if r.get(k) is not None and r[k] == r[k]]
            for k in ("pre_gthg", "pre_minibatch_term", "pre_noise_term")}
    plot(run_dir / "diagnostics.png", [(k, [x for x, _ in v], [y for _, y in v], None) for k, v in diag.items() if v],
         "value (abs, log scale)", "Adam-preconditioned second-order terms", xlabel="step", yscale="log")
    start, final = summary["start"], summary.get("final", {})
    audit = summary.get("audit") or {}
    lines = [f"# DP pre-training run: {summary['method']}", "",
             f"Private sequences {summary['private_sequences']}, public {summary['public_sequences']}, "
             f"held-out {summary['eval_sequences']}; sample rate q = {summary['sample_rate']:.4g}, "
             f"σ = {summary['noise_multiplier']:.4g}, R = {summary['max_grad_norm']}, δ = {summary['delta']:.3g}, "
             f"per-sample gradients: {summary['grad_sample_mode']}.", "",
             "| | held-out loss | perplexity | ε (accountant) | ε lower bound (audit, 95%) |", "|---|---|---|---|---|",
             f"| start | {fmt(start['eval_loss'])} | {fmt(start['eval_ppl'], '.2f')} | | |",
             f"| final | {fmt(final.get('eval_loss'))} | {fmt(final.get('eval_ppl'), '.2f')} | "
             f"{fmt(final.get('epsilon'))} | {fmt(final.get('audit_eps_lower'))} |", ""]
    if audit:
        lines += [f"Audit: {audit['correct']} of {audit['guesses']} membership guesses right over "
                  f"{audit['canaries']} canaries.", ""]
    if summary.get("switch_step") is not None:
        lines += [f"Switched from public to private training after step {summary['switch_step']}.", ""]
    if summary.get("stopped"):
        lines += [f"**Stopped early:** {summary['stopped']}", ""]
    if diverged := summary.get("diverged"):  # (it has no final figures, so no ε either)
        lines += [f"**The run diverged at step {diverged['step']}** and stopped there ({diverged['error']}); no ε "
                  f"is stated for a run that diverged.", ""]
    if layers := summary.get("layers"):
        lines += ["Per-sample gradients by layer: " + ", ".join(f"{k}: {len(v)}" for k, v in layers.items()) +
                  (f" (functorch fallback: {', '.join(layers['functorch_fallback'][:4])}…)"
                   if layers.get("functorch_fallback") else ""), ""]
    lines += ["![held-out loss](eval_loss.png)", ""]
    if eps:
        lines += ["![epsilon](epsilon.png)", ""]
    lines += ["The one-step analysis of the next update −ηP G̃ (G̃: the clipped mean gradient G_c plus mini-batch "
              "and Gaussian noise; P = diag(1/√v̂), Adam's preconditioner, or I): expected improvement "
              "η GᵀPG_c − η²/2 [(PG_c)ᵀH(PG_c) + tr(PHPΣ_c)/B + σ²R² tr(PHP)/B²]; the plain columns are P = I "
              "(DP-SGD), the pre_ columns Adam's. Clip factors, G, H and Σ_c are measured on held-out data "
              "(privacy/diagnostics.py).", "", "![diagnostics](diagnostics.png)", ""]
    diag = [r for r in ev if r.get("pre_gthg") is not None]
    if diag:
        lines += ["| step | " + " | ".join(DIAGNOSTICS) + " |", "|---" * (len(DIAGNOSTICS) + 1) + "|"]
        lines += [f"| {r['iteration']} | " + " | ".join(fmt(r[k], ".3g") for k in DIAGNOSTICS) + " |" for r in diag]
    path = run_dir / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def dp_summary(summary: dict, run_dir: Path) -> None:
    """What ``alignplay run`` ends a DP run with: its report and one line of figures."""
    dp_report(run_dir)
    start, final = summary["start"], summary["final"]
    print(f"{summary['method']}: held-out loss {start['eval_loss']:.3f} → {final['eval_loss']:.3f} "
          f"(ppl {final['eval_ppl']:.2f}), ε = {fmt(final['epsilon'])}, audit lower bound "
          f"{fmt(final['audit_eps_lower'])}; report: {Path(run_dir) / 'report.md'}")


# --- comparisons --------------------------------------------------------------------------
def aggregate(per_seed: dict, metrics: tuple[str, ...] = COMPARE_METRICS) -> dict:
    """Method → {metric: mean over seeds, metric_std: sample std (0 for one seed)}: the contract of
    every comparison's ``comparison.json``."""
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
                xlabel: str = "iteration", baseline: str | None = None) -> None:
    """Per method the mean over seeds of its (x, value) runs; the method ``baseline`` (a start
    measured once per seed) as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = {m: [[(i, v) for i, v in run if v is not None] for run in runs] for m, runs in curves.items()}
    curves = {m: [run for run in runs if run] for m, runs in curves.items()}
    fig, ax = plt.subplots(figsize=(6, 4))
    if not any(curves.values()):
        ax.text(0.5, 0.5, f"this task reports no {ylabel.removeprefix('held-out ')}", ha="center", va="center")
    for method, runs in curves.items():
        if method == baseline or not runs:
            continue
        iters = sorted({i for run in runs for i, _ in run})
        by_iter = [np.mean([dict(run)[i] for run in runs if i in dict(run)]) for i in iters]
        ax.plot(iters, by_iter, marker="o", ms=3, label=method)
    if baseline and curves.get(baseline):
        ax.axhline(np.mean([run[0][1] for run in curves[baseline]]), color="gray", ls="--", label=baseline)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
