"""``job: compare``: methods side by side on one task, with the same sample budget and seeds.

Every method runs as an ordinary self-play run under ``RUN_DIR/runs/<method>-seed<seed>`` (a
finished one is reused, so an interrupted comparison continues where it stopped), all from the
same warm start. The key ``sft`` is that SFT warm start itself, measured by the runs' start
evaluation (not ``algo.name=sft``, which ``compare_irl`` trains further), made once per seed and
shared by the runs of that seed (``Starts``).

Writes ``comparison.json`` — top-level keys are method names, each mapping a metric to its mean
over seeds plus ``<metric>_std`` (the contract every alignplay comparison shares) —
``comparison.md``, ``targets.json``, ``exploitability.png`` and ``exploitability_style.png``
(held-out exploitability and its cross-validated style part per iteration, mean over seeds).

Besides the shared metrics each method has the split exploitability (``exploitability_style``,
``exploitability_correctness``, their sum being ``exploitability``; ``exploitability_cv`` and
``exploitability_style_cv`` cross-validated), ``effective_step`` (the mean step the updates took,
for mirror-descent methods), ``optimistic_hit_rate`` (OMPO: the share of states that met the
previous iterate's answers, after the first iteration), ``iters_to_style`` (the first evaluation
whose cross-validated style part is ≤ ``STYLE_EPS``; iterations + 1 if none) and, for MPO and OMPO,
``lab_*``: the exact lab's run of the same method on the task's class game from the same start,
at the measured step (``lab_exploitability_nominal``: at η).
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import time
from pathlib import Path

import numpy as np

from framework.algorithms.tabular import run_tabular
from framework.config import Config, with_overrides
from framework.jobs import selfplay
from framework.jobs.lab import task_game
from framework.jobs.reports import COMPARE_METRICS, aggregate, plot_curves, read_metrics
from framework.jobs.rundir import strict_json, check_dirs, check_inputs, run_or_reuse
from games.judges import build_judge
from games.tasks import get_task

#: ``compare.methods``'s name for the SFT warm start every run starts from (measured, not trained)
START = "sft"


def method_config(cfg: Config, method: str, seed: int, *extra: str, point: tuple[str, ...] = ()) -> Config:
    """One run of a comparison: ``method`` with ``extra``, its ``compare.overrides``, then a grid ``point``."""
    return with_overrides(cfg, [f"seed={seed}", "job=selfplay", "resume=false", f"algo.name={method}",
                                *extra, *cfg.compare.overrides.get(method, ()), *point])


def grid_points(cfg: Config) -> list[tuple[str, ...]]:
    """The product of ``compare.grid`` as override lists (one empty point without a grid)."""
    keys = list(cfg.compare.grid)
    return [tuple(f"{k}={v}" for k, v in zip(keys, values))
            for values in itertools.product(*(cfg.compare.grid[k] for k in keys))]


def point_name(method: str, point: tuple[str, ...]) -> str:
    """A grid run's directory name: the method and the point's values, ``mpo-lr0.0005-eta5.0``
    (named by value, so a grid extended later keeps its finished runs)."""
    return "-".join([method, *(f"{k.rsplit('.', 1)[-1]}{v}" for k, v in (p.split("=", 1) for p in point))])


def preflight(cfg: Config, run_dir: Path) -> None:
    """The directories can be written and every method's config loads at every grid point (bad
    overrides fail here) with inputs, a task and a judge that do."""
    check_dirs(cfg, run_dir)
    for method in cfg.compare.methods:
        if method != START:
            for point in grid_points(cfg):
                check_run(method_config(cfg, method, cfg.compare.seeds[0], point=point))


class Starts:
    """The SFT start's held-out evaluation, made once per seed and shared by every run that would
    make the same one (the same seed, starting policy, task, judge, evaluation and backend)."""

    def __init__(self):
        self.known: dict = {}

    @staticmethod
    def key(sub: Config) -> str:
        return strict_json({"seed": sub.seed, "cache_dir": sub.cache_dir, "backend": sub.pipeline.backend,
                            **{k: dataclasses.asdict(getattr(sub, k)) for k in ("model", "task", "warm_start",
                                                                                 "judge", "eval")}})

    def run(self, sub: Config, run_dir: Path, label: str) -> dict:
        """``run_or_reuse`` of a self-play run, starting from a start evaluation already made."""
        summary = run_or_reuse(sub, run_dir, label, lambda c, d: selfplay.run(c, d, start=self.known.get(self.key(c))))
        self.known.setdefault(self.key(sub), summary["start"])
        return summary


def tune(cfg: Config, run_dir: Path, method: str, starts: Starts) -> tuple[tuple[str, ...], dict]:
    """The grid point ``method`` runs with: each point on the first seed (``runs/grid/<point_name>``),
    the best by the last periodic evaluation's win rate against the SFT start; that run is also
    the first seed's (``runs/<method>-seed<seed>`` links to it). Returns the point and the record."""
    points = grid_points(cfg)
    if not cfg.compare.grid:
        return points[0], {}
    seed, record = cfg.compare.seeds[0], {}
    for point in points:
        sub = run_dir / "runs" / "grid" / point_name(method, point)
        starts.run(method_config(cfg, method, seed, point=point), sub, f"compare {method}, grid {' '.join(point)}")
        metrics = read_metrics(sub)
        record[" ".join(point)] = [m["win_rate_vs_init"] for m in metrics if m.get("win_rate_vs_init") is not None][-1]
    best = max(range(len(points)), key=lambda i: record[" ".join(points[i])])
    headline = run_dir / "runs" / f"{method}-seed{seed}"
    if headline.is_symlink() or not headline.exists():  # (a link of an earlier, smaller grid is replaced)
        link = headline.with_name(f".{headline.name}.{os.getpid()}")
        link.unlink(missing_ok=True)
        link.symlink_to(Path("grid") / point_name(method, points[best]), target_is_directory=True)
        os.replace(link, headline)  # (atomic: another invocation may be reading it)
    return points[best], {"validation_win_rate": record, "chosen": " ".join(points[best])}


def check_run(sub: Config) -> None:
    """What a self-play run's preflight checks of its config, for a run of a comparison."""
    check_inputs(sub)
    build_judge(sub.judge.kind, task=get_task(**dataclasses.asdict(sub.task)), target=sub.judge.target,
                settings=sub.judge.settings())


#: the preference-pair methods MPO and OMPO are compared against
PAIR_METHODS = ("dpo", "ipo", "step_dpo")
#: the style-exploitability level the style-cycle target counts iterations to
STYLE_EPS = 0.02
#: comparison.json's metrics (each with ``_std``): the shared contract plus this comparison's own
METRICS = (*COMPARE_METRICS, "exploitability_style", "exploitability_correctness", "exploitability_cv",
           "exploitability_style_cv", "effective_step", "optimistic_hit_rate", "iters_to_style",
           "lab_exploitability", "lab_exploitability_style", "lab_exploitability_nominal", "lab_iters_to_style")


def evaluation(entry: dict) -> dict:
    """The figures of a start or final evaluation that a comparison keeps."""
    keys = ("exploitability", "correct", "exploitability_style", "exploitability_correctness", "exploitability_cv",
            "exploitability_style_cv")
    return {"win_rate_vs_sft": entry["win_rate_vs_init"], "win_rate_vs_sft_ci95": entry["win_rate_ci95"],
            **{k: entry.get(k) for k in keys}}


def first_reach(points: list, eps: float, never: int) -> int:
    """The first iteration whose value is ≤ eps (``never`` if none is)."""
    return next((i for i, v in points if v is not None and v <= eps), never)


def mean_of(metrics: list[dict], key: str, *, skip_first: bool = False) -> float | None:
    values = [m[key] for m in metrics[1 if skip_first else 0:] if m.get(key) is not None]
    return float(np.mean(values)) if values else None


def stand_in(cfg: Config, task, start: dict, method: str, eta: float) -> dict:
    """The exact lab's run of ``method`` on the task's class game from the start's class mix, at
    step ``eta``, for the run's iterations and staleness: last-iterate exploitability and its parts."""
    mix = np.asarray(start["class_mix"]) + 1e-3  # (a class the start never sampled can still grow)
    run = run_tabular(task_game(cfg).as_markov(), algo=method, eta=eta, iters=cfg.train.iterations,
                      init_policy=((mix / mix.sum())[None],), staleness=cfg.pipeline.ahead)
    last = run.last_policy[0][0][None]
    return {"exploitability": float(run.last_exploitability[-1]),
            "exploitability_style": float(task.exploitability_parts(last).get("style", [np.nan])[0]),
            "curve": run.last_exploitability}


def result(cfg: Config, task, method: str, seed: int, point: tuple[str, ...], summary: dict,
           metrics: list[dict]) -> tuple[dict, list, list]:
    """One run's row of ``comparison_seeds.json`` and its exploitability and (cross-validated)
    style-exploitability curves, (iteration, value) from the start."""
    start = summary["start"]
    curve = [(0, start.get("exploitability"))] + [(m["iteration"], m["exploitability"]) for m in metrics
                                                  if m.get("exploitability") is not None]
    style = [(0, start.get("exploitability_style_cv"))] + [(m["iteration"], m.get("exploitability_style_cv"))
                                                          for m in metrics if m.get("exploitability") is not None]
    never = cfg.train.iterations + 1
    row = {**evaluation(summary["final"]), "samples": summary["samples_generated"], "wall_s": summary["wall_s"],
           "effective_step": mean_of(metrics, "effective_step"),
           "optimistic_hit_rate": mean_of(metrics, "optimistic_hit_rate", skip_first=True),
           "iters_to_style": first_reach(style, STYLE_EPS, never) if style[0][1] is not None else None}
    if method in ("mpo", "ompo") and "class_mix" in start:
        eta = method_config(cfg, method, seed, point=point).algo.eta
        measured = stand_in(cfg, task, start, method, row["effective_step"] or eta)
        row.update(lab_exploitability=measured["exploitability"],
                   lab_exploitability_style=measured["exploitability_style"],
                   lab_iters_to_style=first_reach(list(enumerate(measured["curve"], 1)), STYLE_EPS, never),
                   lab_exploitability_nominal=stand_in(cfg, task, start, method, eta)["exploitability"])
    return row, curve, style


def run(cfg: Config, run_dir: Path) -> dict:
    run_dir = Path(run_dir)
    task = get_task(**dataclasses.asdict(cfg.task))
    algos = [m for m in cfg.compare.methods if m != START] or ["mpo"]  # the start alone still needs a run
    started = time.perf_counter()
    per_seed: dict = {m: [] for m in cfg.compare.methods}
    curves: dict = {m: [] for m in cfg.compare.methods}
    style_curves: dict = {m: [] for m in cfg.compare.methods}
    starts = Starts()
    tuned = {method: tune(cfg, run_dir, method, starts) for method in algos}
    if cfg.compare.grid:
        (run_dir / "selection.json").write_text(strict_json({m: r for m, (_, r) in tuned.items()}, indent=1))
    for seed in cfg.compare.seeds:
        for i, method in enumerate(algos):
            sub = run_dir / "runs" / f"{method}-seed{seed}"
            summary = starts.run(method_config(cfg, method, seed, point=tuned[method][0]), sub,
                                 f"compare {method}, seed {seed}")
            metrics = read_metrics(sub)
            start = summary["start"]
            if i == 0 and START in per_seed:
                per_seed[START].append({**evaluation(start), "samples": 0, "wall_s": 0.0})
                curves[START].append([(0, start.get("exploitability"))])
                style_curves[START].append([(0, start.get("exploitability_style_cv"))])
            if method in per_seed:
                row, curve, style = result(cfg, task, method, seed, tuned[method][0], summary, metrics)
                per_seed[method].append(row)
                curves[method].append(curve)
                style_curves[method].append(style)
    table = aggregate(per_seed, METRICS)
    targets = target_checks(cfg, table, per_seed)
    (run_dir / "comparison.json").write_text(strict_json(table, indent=1))
    (run_dir / "comparison_seeds.json").write_text(strict_json(per_seed, indent=1))
    (run_dir / "targets.json").write_text(strict_json(targets, indent=1))
    plot_curves(curves, run_dir / "exploitability.png", baseline=START)
    plot_curves(style_curves, run_dir / "exploitability_style.png", baseline=START,
                ylabel="held-out style exploitability (cross-validated)")
    wall = time.perf_counter() - started
    (run_dir / "comparison.md").write_text(markdown(cfg, table, per_seed, targets, wall,
                                                    {m: r for m, (_, r) in tuned.items() if r}))
    print((run_dir / "comparison.md").read_text())
    return table


def target_checks(cfg: Config, table: dict, per_seed: dict) -> dict:
    """The comparison's targets, each with its figures and whether it is met (those whose methods
    ran): on the pure style cycle (``task.correctness_weight=0``), OMPO against MPO on style
    exploitability in a regime where MPO's step × iterations ≥ 200; on any other task, MPO's and
    OMPO's win rates against the SFT start and the pair methods."""
    out: dict = {}
    pure_cycle = cfg.task.name == "running_sum" and cfg.task.correctness_weight == 0
    if pure_cycle and "mpo" in table and "ompo" in table:
        m, o = table["mpo"], table["ompo"]
        if "exploitability_style" in m:
            out["ompo_style_le_half_mpo"] = {"ompo": o["exploitability_style"], "mpo": m["exploitability_style"],
                                             "met": o["exploitability_style"] <= m["exploitability_style"] / 2}
            out["ompo_style_cv_le_half_mpo"] = {
                "ompo": o["exploitability_style_cv"], "mpo": m["exploitability_style_cv"],
                "met": o["exploitability_style_cv"] <= m["exploitability_style_cv"] / 2}
            reach = {k: [r["iters_to_style"] for r in per_seed[k]] for k in ("mpo", "ompo")}
            out["ompo_reaches_style_eps_first"] = {
                "eps": STYLE_EPS, "mpo": reach["mpo"], "ompo": reach["ompo"],
                "never": cfg.train.iterations + 1,
                "met": all(a < b for a, b in zip(reach["ompo"], reach["mpo"]))}
        if m.get("effective_step") is not None:
            regime = m["effective_step"] * cfg.train.iterations
            out["mpo_cycles_regime"] = {"effective_step": m["effective_step"], "iterations": cfg.train.iterations,
                                        "product": regime, "met": regime >= 200}
    for method in ("mpo", "ompo"):
        if method not in table or pure_cycle:  # (at a pure cycle the equilibrium wins ½ against any start)
            continue
        e = table[method]
        low = e["win_rate_vs_sft"] - e["win_rate_vs_sft_ci95"]
        out[f"{method}_beats_sft"] = {"win_rate_vs_sft": e["win_rate_vs_sft"], "ci95": e["win_rate_vs_sft_ci95"],
                                      "met": low > 0.5}
        pairs = [p for p in PAIR_METHODS if p in table]
        if pairs:
            out[f"{method}_beats_pair_methods"] = {
                p: {"margin": e["win_rate_vs_sft"] - table[p]["win_rate_vs_sft"],
                    "intervals_apart": low > table[p]["win_rate_vs_sft"] + table[p]["win_rate_vs_sft_ci95"]}
                for p in pairs}
            out[f"{method}_beats_pair_methods"]["met"] = all(
                v["intervals_apart"] for v in out[f"{method}_beats_pair_methods"].values())
    return out


def describe(name: str, t: dict) -> str:
    """A target of ``target_checks`` in words, with its figures."""
    if name.startswith("ompo_style"):
        kind = "cross-validated" if "_cv_" in name else "plug-in"
        return (f"OMPO's last-iterate style exploitability ≤ ½ MPO's ({kind}): {t['ompo']:.3f} vs "
                f"½·{t['mpo']:.3f} = {t['mpo'] / 2:.3f}")
    if name == "ompo_reaches_style_eps_first":
        def its(values):
            return ", ".join("never" if v == t["never"] else str(v) for v in values)
        return (f"OMPO reaches cross-validated style exploitability ≤ {t['eps']} in fewer iterations than MPO on "
                f"every seed: OMPO {its(t['ompo'])}; MPO {its(t['mpo'])}")
    if name == "mpo_cycles_regime":
        return (f"MPO in the cycling regime, effective step × iterations ≥ 200: {t['effective_step']:.2f} × "
                f"{t['iterations']} = {t['product']:.0f}")
    method = name.split("_")[0].upper()
    if name.endswith("beats_sft"):
        return (f"{method} beats the SFT start (interval above ½): {t['win_rate_vs_sft']:.3f} − {t['ci95']:.3f} = "
                f"{t['win_rate_vs_sft'] - t['ci95']:.3f}")
    pairs = {k: v for k, v in t.items() if k != "met"}
    return (f"{method}'s win rate against the SFT start above every pair method's, 95% intervals apart: " +
            ", ".join(f"{p} {v['margin']:+.3f}{'' if v['intervals_apart'] else ' (overlapping)'}" for p, v in pairs.items()))


def markdown(cfg: Config, table: dict, per_seed: dict, targets: dict, wall: float, selection: dict) -> str:
    def cell(entry, key, fmt):
        if key not in entry:
            return "—"
        return f"{entry[key]:{fmt}} ± {entry[f'{key}_std']:{fmt}}"

    staleness = cfg.pipeline.ahead
    lines = [f"# Comparison on `{cfg.task.name}`", "",
             f"{len(cfg.compare.seeds)} seed(s) {list(cfg.compare.seeds)}; per method and seed "
             f"{cfg.train.iterations} iterations × {cfg.train.conversations} conversations × K = {cfg.algo.k} "
             f"(fixed prompts: {cfg.train.fixed_prompts}; {cfg.pipeline.mode}, staleness {staleness}; "
             f"{cfg.algo.epochs} epoch(s) × {cfg.algo.minibatches} minibatch(es) per iteration"
             f"{', a fresh optimizer each iteration' if cfg.algo.round_reset else ''}), held-out evaluation on "
             f"{cfg.eval.final_conversations} conversations × {cfg.eval.headline_samples} samples per state. "
             f"Wall time of this invocation: {wall:.0f} s.", "",
             "Mean ± std over seeds; the win rate's ± in brackets is the judge's 95% interval of the mean. "
             "Exploitability is the plug-in estimate per held-out state (it overstates with few samples) "
             "split into its correctness and style parts; *cv* is the cross-validated estimate (each answer "
             "against the best response to the state's other answers: unbiased at an equilibrium).", "",
             "| method | win rate vs SFT start | exploitability | correctness part | style part | style (cv) | "
             "correct | effective step | hit rate | samples | wall s |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for method, entry in table.items():
        lines.append(f"| {method} | {cell(entry, 'win_rate_vs_sft', '.3f')} "
                     f"[±{entry['win_rate_vs_sft_ci95']:.3f}] | {cell(entry, 'exploitability', '.3f')} | "
                     f"{cell(entry, 'exploitability_correctness', '.3f')} | {cell(entry, 'exploitability_style', '.3f')} | "
                     f"{cell(entry, 'exploitability_style_cv', '.3f')} | {cell(entry, 'correct', '.3f')} | "
                     f"{cell(entry, 'effective_step', '.2f')} | {cell(entry, 'optimistic_hit_rate', '.2f')} | "
                     f"{entry.get('samples', 0):.0f} | {entry.get('wall_s', 0):.0f} |")
    lines += ["", "![exploitability](exploitability.png) ![style](exploitability_style.png)", ""]
    lab = [m for m in ("mpo", "ompo") if "lab_exploitability" in table.get(m, {})]
    if lab:
        lines += ["## The exact lab on the same class game", "",
                  f"Tabular {', '.join(m.upper() for m in lab)} on the task's class game (exact payoffs) from each "
                  f"seed's SFT-start class mix, {cfg.train.iterations} iterations, staleness {staleness}: "
                  "last-iterate exploitability at the step the run measured and at the nominal η.", "",
                  "| method | LM run (plug-in) | lab at the measured step | its style part | lab at nominal η |",
                  "|---|---|---|---|---|"]
        for m in lab:
            e = table[m]
            lines.append(f"| {m} | {cell(e, 'exploitability', '.3f')} | {cell(e, 'lab_exploitability', '.3f')} | "
                         f"{cell(e, 'lab_exploitability_style', '.3f')} | {cell(e, 'lab_exploitability_nominal', '.3f')} |")
        lines.append("")
    if selection:
        points = list(next(iter(selection.values()))["validation_win_rate"])
        lines += ["## Tuning", "",
                  f"One shared grid (`compare.grid`), each point on seed {cfg.compare.seeds[0]}; the chosen point "
                  "(**bold**) has the best win rate against the SFT start on the periodic evaluation's held-out "
                  "states (not the final evaluation's) and runs on every seed.", "",
                  "| method | " + " | ".join(f"`{p}`" for p in points) + " |", "|---" * (len(points) + 1) + "|"]
        for m, r in selection.items():
            lines.append(f"| {m} | " + " | ".join(
                (f"**{r['validation_win_rate'][p]:.3f}**" if p == r["chosen"] else f"{r['validation_win_rate'][p]:.3f}")
                for p in points) + " |")
        lines.append("")
    lines += ["## Targets", ""]
    lines += [f"- {describe(name, t)} → {'met' if t['met'] else 'missed'} (`{name}`)" for name, t in targets.items()]
    lines += ["", "Per-seed figures: `comparison_seeds.json`; targets: `targets.json`; each run's own report: "
              "`runs/<method>-seed<seed>/`.", ""]
    return "\n".join(lines)
