"""``job: compare_dp``: DP pre-training methods side by side (``examples/compare_dp.yaml``).

Each method of ``compare.methods`` runs as an ordinary ``job: dp`` run under
``RUN_DIR/runs/<key>-seed<seed>`` (finished runs are reused). The DP methods (dp_scratch,
dp_continual, mix, dpmd) run once per privacy level of ``compare.variants`` (name → overrides,
e.g. ``"8": [dp.target_epsilon=8]``) and are reported as ``<method>@<name>``; the others do not
depend on ε and run once.

**One switch point per seed.** public_only runs first, and every continual method
(dp_continual, and its ablations nondp_continual and clip_only) starts from its final checkpoint
(``dp.start_from``): the same weights, AdamW state and step count, then the same private steps and
schedule. So nondp_continual is the like-for-like denominator of the gap, and the differences
clip_only − nondp_continual and dp_continual − clip_only price clipping and noise separately.

Seeds may run as separate processes into the same run directory (``compare.seeds=[k]`` each);
``compare.finished_only=true`` then reports every finished run and starts none.

``comparison.json`` follows the comparison contract (method key → metric means and ``_std``
over seeds): ``eval_ppl`` and ``eval_loss`` (held out), ``public_val_loss`` (the public split's
held-out tenth: what settings are chosen on), ``epsilon`` (the accountant's; null without a
bound), ``audit_eps_lower`` (one-run audit, 95%) and ``wall_s``. ``targets.json`` holds the
paired-over-seeds differences: ``retained@<v>`` = (L_public_only − L_dp_continual@v) /
(L_public_only − L_nondp_continual), ``clip_cost`` = L_clip_only − L_nondp_continual and
``noise_cost@<v>`` = L_dp_continual@v − L_clip_only (held-out losses).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from framework.config import DP_METHODS, Config, with_overrides
from framework.errors import InputError
from framework.jobs import dp
from framework.jobs.reports import aggregate, dp_report, fmt, plot_curves
from framework.jobs.rundir import strict_json, check_dirs, check_inputs, finished_summary, run_or_reuse

METRICS = ("eval_ppl", "eval_loss", "public_val_loss", "epsilon", "audit_eps_lower", "wall_s")
CONTINUAL = ("public", "private")


def runs(cfg: Config) -> list[tuple[str, list[str]]]:
    """(method key, overrides) of every run of one seed, in order."""
    out = []
    for method in cfg.compare.methods:
        if DP_METHODS[method].budgeted and cfg.compare.variants:
            out += [(f"{method}@{v}", [f"dp.method={method}", *over, *cfg.compare.overrides.get(method, ())])
                    for v, over in cfg.compare.variants.items()]
        else:
            out.append((method, [f"dp.method={method}", *cfg.compare.overrides.get(method, ())]))
    return out


def method_config(cfg: Config, overrides: list[str], seed: int) -> Config:
    return with_overrides(cfg, [f"seed={seed}", "job=dp", "resume=false", *overrides])


def preflight(cfg: Config, run_dir: Path) -> None:
    for m in cfg.compare.methods:
        if m not in DP_METHODS:
            raise InputError(f"compare.methods: {m!r} is not a DP pre-training method; choose from "
                             f"{tuple(DP_METHODS)}")
    check_dirs(cfg, run_dir)
    for _, over in runs(cfg):
        check_inputs(method_config(cfg, over, cfg.compare.seeds[0]))  # bad overrides fail here


def run(cfg: Config, run_dir: Path) -> dict:
    run_dir = Path(run_dir)
    started = time.perf_counter()
    plan = runs(cfg)
    per_seed: dict = {key: [] for key, _ in plan}
    curves: dict = {key: [] for key, _ in plan}
    diagnostics: dict = {}
    missing: list[str] = []

    def run_or_skip(config: Config, sub: Path, label: str) -> dict | None:
        if not cfg.compare.finished_only:
            return run_or_reuse(config, sub, label, dp.run)
        if (summary := finished_summary(sub)) is None:
            missing.append(sub.name)
        return summary

    for seed in cfg.compare.seeds:
        public = run_dir / "runs" / f"public_only-seed{seed}"
        if any(DP_METHODS[m].phases == CONTINUAL for m in cfg.compare.methods):  # the seed's one switch point
            over = dict(plan).get("public_only", ["dp.method=public_only"])
            run_or_skip(method_config(cfg, over, seed), public, f"compare_dp public_only, seed {seed}")
        for key, over in plan:
            if DP_METHODS[key.split("@")[0]].phases == CONTINUAL:
                over = [*over, f"dp.start_from={public / 'checkpoints' / 'final'}"]
            sub = run_dir / "runs" / f"{key}-seed{seed}"
            summary = run_or_skip(method_config(cfg, over, seed), sub, f"compare_dp {key}, seed {seed}")
            if summary is None:
                continue
            dp_report(sub)
            final = summary["final"]
            per_seed[key].append({**{k: final.get(k) for k in ("eval_ppl", "eval_loss", "public_val_loss", "epsilon",
                                                               "audit_eps_lower")},
                                  "seed": seed, "wall_s": summary["wall_s"], "stopped": summary.get("stopped"),
                                  "switch_step": summary.get("switch_step")})
            metrics = [json.loads(line) for line in (sub / "metrics.jsonl").read_text().splitlines()]
            first = summary["switch_step"] if summary.get("started_from") else 0  # (a continual run starts there)
            curves[key].append([(first, summary["start"]["eval_loss"])] +
                               [(m["iteration"], m["eval_loss"]) for m in metrics if m.get("eval_loss") is not None])
            diagnostics.setdefault(key, []).append([m for m in metrics if "pre_noise_term" in m and m["phase"] == "private"])
    per_seed = {key: rows for key, rows in per_seed.items() if rows}
    curves = {key: c for key, c in curves.items() if c}
    table = aggregate(per_seed, METRICS)
    for key, entry in table.items():
        entry.setdefault("epsilon", None)  # trained on private data without DP: no bound
    targets = ablation_targets(per_seed, list(cfg.compare.variants or {}))
    (run_dir / "comparison.json").write_text(strict_json(table, indent=1))
    (run_dir / "comparison_seeds.json").write_text(strict_json(per_seed, indent=1))
    (run_dir / "targets.json").write_text(strict_json(targets, indent=1))
    plot_curves(curves, run_dir / "eval_loss.png", ylabel="held-out loss (nats/token)", xlabel="step")
    plot_diagnostics(diagnostics, run_dir / "diagnostics.png")
    wall = time.perf_counter() - started
    (run_dir / "comparison.md").write_text(markdown(cfg, table, targets, diag_summary(diagnostics), wall, missing))
    print((run_dir / "comparison.md").read_text())
    return table


def ablation_targets(per_seed: dict, variants: list[str]) -> dict:
    """Paired over the seeds every key involved has (mean, sample std, the per-seed values under
    ``seeds`` and which seeds under ``paired_seeds``): the share of nondp_continual's
    post-switch loss reduction each DP level retains, and the costs of clipping and of noise."""
    loss = {key: {r["seed"]: r["eval_loss"] for r in rows} for key, rows in per_seed.items()}

    def paired(f, *keys):
        if not all(k in loss for k in keys):
            return None
        seeds = sorted(set.intersection(*(set(loss[k]) for k in keys)))
        if not seeds:
            return None
        v = np.asarray([f(*(loss[k][s] for k in keys)) for s in seeds], dtype=float)
        return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
                "seeds": [float(x) for x in v], "paired_seeds": seeds}

    out = {"clip_cost": paired(lambda clip, free: clip - free, "clip_only", "nondp_continual")}
    for v in variants:
        dp_key = f"dp_continual@{v}"
        out[f"retained@{v}"] = paired(lambda pub, dp_, free: (pub - dp_) / (pub - free),
                                      "public_only", dp_key, "nondp_continual")
        out[f"noise_cost@{v}"] = paired(lambda dp_, clip: dp_ - clip, dp_key, "clip_only")
    return {k: t for k, t in out.items() if t is not None}


DIAG_KEYS = ("clip_mean", "signal", "clipped_gthg", "minibatch_term", "noise_term", "noise_to_signal",
             "pre_signal", "pre_gthg", "pre_minibatch_term", "pre_noise_term", "pre_noise_to_signal")


def diag_summary(diagnostics: dict) -> dict:
    """Per DP key, each diagnostic's mean over seeds at the first and the last private evaluation."""
    out = {}
    for key, per_run in diagnostics.items():
        runs_ = [r for r in per_run if r]
        if runs_:
            out[key] = {f"{k}@{at}": float(np.mean([r[i][k] for r in runs_ if k in r[i]]))
                        for k in DIAG_KEYS for at, i in (("first", 0), ("last", -1)) if k in runs_[0][i]}
    return out


def plot_diagnostics(diagnostics: dict, path: Path) -> None:
    """The one-step analysis over the private phase, per DP key (mean over seeds): the noise term
    against the curvature of the signal, plain (SGD) and preconditioned (Adam)."""
    curves = {}
    for key, per_run in diagnostics.items():
        for name, num, den in (("noise / curvature", "noise_term", "clipped_gthg"),
                               ("Adam: noise / curvature", "pre_noise_term", "pre_gthg")):
            runs_ = [[(m["iteration"], m[num] / m[den]) for m in r if m.get(den)] for r in per_run]
            if any(runs_):
                curves[f"{key} {name}"] = runs_
    if curves:
        plot_curves(curves, path, ylabel="noise term / signal curvature term", xlabel="step")


def gap_closed(table: dict, key: str, low: str = "public_only", high: str = "nondp") -> float | None:
    """Share of the held-out-loss gap between ``low`` and ``high`` that ``key`` closes."""
    try:
        a, b, x = table[low]["eval_loss"], table[high]["eval_loss"], table[key]["eval_loss"]
    except KeyError:
        return None
    return (a - x) / (a - b) if a != b else None


def markdown(cfg: Config, table: dict, targets: dict, diag: dict, wall: float, missing: list[str] = ()) -> str:
    d = cfg.dp
    lines = ["# DP continual pre-training with limited public data", "",
             f"Tiny Llama on the standard-library corpus (sequences of {d.corpus.seq_len} tokens; "
             f"{d.corpus.public_fraction:.0%} public). Public phase "
             f"{'until the held-out public loss plateaus, at most ' if d.switch == 'plateau' else ''}"
             f"{d.public_steps} steps at batch {d.public_batch} (public_only stops there; every "
             f"continual run starts from its checkpoint), "
             f"then {d.private_steps} private steps at expected batch {d.batch_size}, R = {d.max_grad_norm} "
             f"({d.clipping} clipping, {d.optimizer}, switch state {d.switch_state}, warm-up {d.private_warmup}); "
             f"nondp takes {d.public_steps + d.private_steps} steps at batch {d.public_batch} on all the data. "
             f"Seeds: {list(cfg.compare.seeds)}. "
             f"Wall time {wall / 60:.1f} min (finished runs are reused: see each run's wall s).", "",
             "| method | held-out ppl | held-out loss | public val loss | ε (accountant) | ε lower bound (audit) | wall s |",
             "|---|---|---|---|---|---|---|"]
    for key, e in table.items():
        lines.append(f"| {key} | {fmt(e.get('eval_ppl'), '.2f')} | {fmt(e.get('eval_loss'))} ± "
                     f"{fmt(e.get('eval_loss_std'))} | {fmt(e.get('public_val_loss'))} | "
                     f"{fmt(e.get('epsilon'), '.2f') if e.get('epsilon') is not None else '∞ (no DP)'} | "
                     f"{fmt(e.get('audit_eps_lower'), '.2f')} | {fmt(e.get('wall_s'), '.0f')} |")
    if targets:
        lines += ["", "## The switch-point ablation (held-out loss, paired over seeds: mean ± std)", ""]
        for name, t in targets.items():
            what = ("share of nondp_continual's post-switch loss reduction kept (target ≥ 0.5)"
                    if name.startswith("retained") else "cost of clipping: clip_only − nondp_continual"
                    if name == "clip_cost" else "cost of noise: dp_continual − clip_only")
            lines.append(f"- **{name}** = {t['mean']:.3f} ± {t['std']:.3f} over seeds {t['paired_seeds']} ({what})")
    lines.append("")
    for v in cfg.compare.variants or {}:
        key = f"dp_continual@{v}"
        g = gap_closed(table, key)
        g2 = gap_closed(table, key, low=f"dp_scratch@{v}")
        if g is not None and g2 is not None:
            lines.append(f"- {key} closes {g:.0%} of the public-only → non-DP (all data) gap "
                         f"({g2:.0%} of the DP-from-scratch → non-DP gap).")
    if diag:
        lines += ["", "## One-step analysis over the private phase (held-out data; first → last evaluation)", "",
                  "| key | mean c | noise/‖G_c‖ | SGD: noise term / G_cᵀHG_c | tr(HΣ)/B / G_cᵀHG_c | "
                  "Adam: noise term / (PG_c)ᵀH(PG_c) |", "|---|---|---|---|---|---|"]
        for key, e in diag.items():
            def ratio(num, den, at):
                a, b = e.get(f"{num}@{at}"), e.get(f"{den}@{at}")
                return f"{a / b:.3g}" if a is not None and b else "–"
            lines.append(f"| {key} | {fmt(e.get('clip_mean@first'), '.3f')} → {fmt(e.get('clip_mean@last'), '.3f')} | "
                         f"{fmt(e.get('noise_to_signal@first'), '.3g')} → {fmt(e.get('noise_to_signal@last'), '.3g')} | "
                         f"{ratio('noise_term', 'clipped_gthg', 'first')} → {ratio('noise_term', 'clipped_gthg', 'last')} | "
                         f"{ratio('minibatch_term', 'clipped_gthg', 'first')} → "
                         f"{ratio('minibatch_term', 'clipped_gthg', 'last')} | "
                         f"{ratio('pre_noise_term', 'pre_gthg', 'first')} → {ratio('pre_noise_term', 'pre_gthg', 'last')} |")
        lines += ["", "![one-step analysis](diagnostics.png)"]
    if missing:
        lines += ["", f"Not finished, left out (`compare.finished_only=true`): {', '.join(missing)}."]
    lines += ["", "![held-out loss](eval_loss.png)", ""]
    return "\n".join(lines)
