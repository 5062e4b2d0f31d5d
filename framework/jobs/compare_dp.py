"""``job: compare_dp``: DP pre-training methods side by side (``examples/compare_dp.yaml``).

Each method of ``compare.methods`` runs as an ordinary ``job: dp`` run under
``RUN_DIR/runs/<key>-seed<seed>`` (finished runs are reused). The private methods (dp_scratch,
dp_continual) run once per privacy level of ``compare.variants`` (name → overrides, e.g.
``"8": [dp.target_epsilon=8]``) and are reported as ``<method>@<name>``; nondp and public_only
do not depend on ε and run once.

``comparison.json`` follows the comparison contract (method key → metric means and ``_std``
over seeds): ``eval_ppl`` and ``eval_loss`` (held out), ``epsilon`` (the accountant's; null for
nondp), ``audit_eps_lower`` (one-run audit, 95%) and ``wall_s``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from framework.config import DP_METHODS, Config, with_overrides
from framework.errors import InputError
from framework.jobs import dp
from framework.jobs.reports import aggregate, dp_report, fmt, plot_curves
from framework.jobs.rundir import strict_json, check_dirs, check_inputs, run_or_reuse

METRICS = ("eval_ppl", "eval_loss", "epsilon", "audit_eps_lower", "wall_s")


def runs(cfg: Config) -> list[tuple[str, list[str]]]:
    """(method key, overrides) of every run of one seed, in order."""
    out = []
    for method in cfg.compare.methods:
        if DP_METHODS[method].private and cfg.compare.variants:
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
    per_seed: dict = {key: [] for key, _ in runs(cfg)}
    curves: dict = {key: [] for key, _ in runs(cfg)}
    for seed in cfg.compare.seeds:
        for key, over in runs(cfg):
            sub = run_dir / "runs" / f"{key}-seed{seed}"
            summary = run_or_reuse(method_config(cfg, over, seed), sub, f"compare_dp {key}, seed {seed}", dp.run)
            dp_report(sub)
            final = summary["final"]
            per_seed[key].append({"eval_ppl": final["eval_ppl"], "eval_loss": final["eval_loss"],
                                  "epsilon": final["epsilon"], "audit_eps_lower": final["audit_eps_lower"],
                                  "wall_s": summary["wall_s"], "stopped": summary.get("stopped")})
            metrics = [json.loads(line) for line in (sub / "metrics.jsonl").read_text().splitlines()]
            curves[key].append([(0, summary["start"]["eval_loss"])] +
                               [(m["iteration"], m["eval_loss"]) for m in metrics if m.get("eval_loss") is not None])
    table = aggregate(per_seed, METRICS)
    for key, entry in table.items():
        entry.setdefault("epsilon", None)  # nondp: no bound
    (run_dir / "comparison.json").write_text(strict_json(table, indent=1))
    (run_dir / "comparison_seeds.json").write_text(strict_json(per_seed, indent=1))
    plot_curves(curves, run_dir / "eval_loss.png", ylabel="held-out loss (nats/token)", xlabel="step")
    wall = time.perf_counter() - started
    (run_dir / "comparison.md").write_text(markdown(cfg, table, wall))
    print((run_dir / "comparison.md").read_text())
    return table


def gap_closed(table: dict, key: str, low: str = "public_only", high: str = "nondp") -> float | None:
    """Share of the held-out-loss gap between ``low`` and ``high`` that ``key`` closes."""
    try:
        a, b, x = table[low]["eval_loss"], table[high]["eval_loss"], table[key]["eval_loss"]
    except KeyError:
        return None
    return (a - x) / (a - b) if a != b else None


def markdown(cfg: Config, table: dict, wall: float) -> str:
    d = cfg.dp
    lines = ["# DP continual pre-training with limited public data", "",
             f"Tiny Llama on the standard-library corpus (sequences of {d.corpus.seq_len} tokens; "
             f"{d.corpus.public_fraction:.0%} public). Public phase "
             f"{'until the held-out public loss plateaus, at most ' if d.switch == 'plateau' else ''}"
             f"{d.public_steps} steps (public_only stops there), then {d.private_steps} DP-AdamW steps at "
             f"expected batch {d.batch_size}, R = {d.max_grad_norm}; nondp takes {d.public_steps + d.private_steps} "
             f"steps on all the data. Seeds: {list(cfg.compare.seeds)}. Wall time {wall / 60:.1f} min "
             f"(finished runs are reused: see each run's wall s).", "",
             "| method | held-out ppl | held-out loss | ε (accountant) | ε lower bound (audit) | wall s |",
             "|---|---|---|---|---|---|"]
    for key, e in table.items():
        lines.append(f"| {key} | {fmt(e.get('eval_ppl'), '.2f')} | {fmt(e.get('eval_loss'))} | "
                     f"{fmt(e.get('epsilon'), '.2f') if e.get('epsilon') is not None else '∞ (no DP)'} | "
                     f"{fmt(e.get('audit_eps_lower'), '.2f')} | {fmt(e.get('wall_s'), '.0f')} |")
    lines.append("")
    for v in cfg.compare.variants or {}:
        key = f"dp_continual@{v}"
        g = gap_closed(table, key)
        g2 = gap_closed(table, key, low=f"dp_scratch@{v}")
        if g is not None:
            lines.append(f"- {key} closes **{g:.0%}** of the public-only → non-DP gap "
                         f"({g2:.0%} of the DP-from-scratch → non-DP gap)." if g2 is not None else "")
    lines += ["", "![held-out loss](eval_loss.png)", ""]
    return "\n".join(lines)
