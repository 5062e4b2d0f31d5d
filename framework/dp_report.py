"""The report of a ``job: dp`` run: held-out loss, ε, and the curvature diagnostics over steps."""

from __future__ import annotations

import json
from pathlib import Path

from framework.dp import fmt
from framework.report import _plot, read_metrics

DIAGNOSTICS = ("gtg", "gthg", "trace_h", "noise_term", "eta_star", "improvement_star")


def write_report(run_dir: Path) -> Path:
    """report.md + eval_loss.png, epsilon.png, diagnostics.png."""
    run_dir = Path(run_dir)
    rows = read_metrics(run_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    ev = [r for r in rows if r.get("eval_loss") is not None]
    _plot(run_dir / "eval_loss.png", [("held-out", [r["iteration"] for r in ev], [r["eval_loss"] for r in ev], None)],
          "loss (nats/token)", f"{summary['method']}: held-out loss", xlabel="step")
    eps = [r for r in rows if r.get("epsilon") is not None]
    if eps:
        _plot(run_dir / "epsilon.png", [("ε spent", [r["iteration"] for r in eps], [r["epsilon"] for r in eps], None)],
              "ε", "privacy spent (accountant)", xlabel="step")
    diag = {k: [(r["iteration"], abs(r[k])) for r in ev if r.get(k) is not None and r[k] == r[k]]
            for k in ("gtg", "gthg", "noise_term")}
    _plot(run_dir / "diagnostics.png", [(k, [x for x, _ in v], [y for _, y in v], None) for k, v in diag.items() if v],
          "value (abs, log scale)", "GᵀG, GᵀHG and σ²R²tr(H)/B²", xlabel="step", yscale="log")
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
    if layers := summary.get("layers"):
        lines += ["Per-sample gradients by layer: " + ", ".join(f"{k}: {len(v)}" for k, v in layers.items()) +
                  (f" (functorch fallback: {', '.join(layers['functorch_fallback'][:4])}…)"
                   if layers.get("functorch_fallback") else ""), ""]
    lines += ["![held-out loss](eval_loss.png)", ""]
    if eps:
        lines += ["![epsilon](epsilon.png)", ""]
    lines += ["The one-step analysis: with update −η(G + noise), the expected improvement is "
              "η GᵀG − η²/2 (GᵀHG + σ²R² tr(H)/B²), best at η* = GᵀG / (GᵀHG + σ²R² tr(H)/B²); all "
              "measured on held-out data.", "", "![diagnostics](diagnostics.png)", ""]
    diag = [r for r in ev if r.get("gtg") is not None]
    if diag:
        lines += ["| step | " + " | ".join(DIAGNOSTICS) + " |", "|---" * (len(DIAGNOSTICS) + 1) + "|"]
        lines += [f"| {r['iteration']} | " + " | ".join(f"{r[k]:.3g}" for k in DIAGNOSTICS) + " |" for r in diag]
    path = run_dir / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def print_summary(summary: dict, run_dir: Path) -> None:
    start, final = summary["start"], summary["final"]
    print(f"{summary['method']}: held-out loss {start['eval_loss']:.3f} → {final['eval_loss']:.3f} "
          f"(ppl {final['eval_ppl']:.2f}), ε = {fmt(final['epsilon'])}, audit lower bound "
          f"{fmt(final['audit_eps_lower'])}; report: {Path(run_dir) / 'report.md'}")
