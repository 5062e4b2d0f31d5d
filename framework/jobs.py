"""What ``alignplay run`` does for each ``job`` of the config."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from framework.config import Config


def run_lab_job(cfg: "Config", run_dir: Path) -> None:
    """The exact game lab: every matrix game and the random Markov games, with a report."""
    from framework import lab
    from games.markov import random_markov_game
    from games.matrix import builtin_game

    c = cfg.lab
    lines = ["# Exact game lab", "",
             f"η = {c.eta}, {c.iters} iterations, start policy: {c.init}, seed {cfg.seed}.", "",
             "## Matrix games", "",
             "| game | method | avg-iterate exploitability | last-iterate exploitability | "
             "L1(last, Nash) | iters→1e-2 | iters→1e-3 | slope |", "|---" * 8 + "|"]
    for name in c.matrix_games:
        game = builtin_game(name, seed=cfg.seed, size=c.matrix_size)
        reports = []
        for algo in c.algos:
            r = lab.run_matrix(game, algo=algo, eta=c.eta, iters=c.iters, init=c.init, seed=cfg.seed)
            lab.write_json(r, run_dir / "matrix" / f"{game.name}_{algo}.json")
            reports.append(r)
            hit = [r["iters_to_eps"][k] for k in ("0.01", "0.001")]
            lines.append(f"| {game.name} | {algo} | {r['exploitability']:.2e} | "
                         f"{r['last_exploitability']:.2e} | {r['last_l1_to_nash']:.2e} | "
                         f"{hit[0] or '—'} | {hit[1] or '—'} | {r['slope']:.2f} |")
        lab.plot_matrix(reports, run_dir / "matrix" / f"{game.name}.png")
    games = [random_markov_game(cfg.seed + i) for i in range(c.markov_games)]
    algos = [a for a in c.algos if a != "sppo"]  # SPPO is defined on single-step games only
    report = lab.run_markov(games, algos=algos, eta=c.eta, iters=c.iters, init=c.init, seed=cfg.seed)
    lab.write_json(report, run_dir / "markov.json")
    lab.plot_markov(report, run_dir / "markov.png", title=f"{len(games)} random Markov games")
    table = lab.format_table(report)
    lines += ["", f"## {len(games)} random Markov games (mean over games)", "", "```", table, "```",
              "", "![markov](markov.png)", ""]
    (run_dir / "report.md").write_text("\n".join(lines))
    print(table)


def run_selfplay_job(cfg: "Config", run_dir: Path) -> None:
    """The Ray self-play pipeline, then its report."""
    from framework.driver import run_selfplay
    from framework.report import print_summary, write_report

    summary = run_selfplay(cfg, run_dir)
    write_report(run_dir)
    print_summary(summary, run_dir)


#: What defines a self-play experiment: a resumed run must keep these as they were.
EXPERIMENT_KEYS = ("seed", "model", "task", "warm_start", "algo", "train.conversations", "train.fixed_prompts")


def experiment_changes(saved: "Config", new: "Config") -> list[str]:
    """Dotted keys among EXPERIMENT_KEYS whose values differ between two configs."""
    import dataclasses

    def flat(obj, prefix=""):
        if dataclasses.is_dataclass(obj):
            out = {}
            for f in dataclasses.fields(obj):
                out.update(flat(getattr(obj, f.name), f"{prefix}{f.name}."))
            return out
        return {prefix[:-1]: obj}

    a, b = flat(saved), flat(new)
    return [k for k in a if any(k == e or k.startswith(e + ".") for e in EXPERIMENT_KEYS) and a[k] != b[k]]


def preflight_selfplay(cfg: "Config", run_dir: Path) -> None:
    """Checks that fail fast, before anything is written to the run directory."""
    import dataclasses

    from framework.checkpoint import latest_checkpoint
    from framework.config import load_config
    from framework.errors import InputError
    from framework.models import check_model_path
    from games.judges import build_judge
    from games.tasks import get_task

    if cfg.resume and latest_checkpoint(run_dir) is None:
        raise InputError(f"resume=true but {run_dir} has no checkpoint to resume from")
    if cfg.resume and (run_dir / "config.yaml").exists():
        changed = experiment_changes(load_config(run_dir / "config.yaml"), cfg)
        if changed:
            raise InputError(f"resume=true with a different experiment: {', '.join(changed)} differ from "
                             f"{run_dir / 'config.yaml'} (only iterations, evaluation, checkpoints, the "
                             f"judge and the pipeline layout may change on resume)")
    if not cfg.resume and (run_dir / "metrics.jsonl").exists():
        raise InputError(f"{run_dir} already holds a run; pass resume=true or choose another --run-dir")
    if cfg.model.path:
        check_model_path(cfg.model.path)
    task = get_task(**dataclasses.asdict(cfg.task))
    build_judge(cfg.judge.kind, task=task, target=cfg.judge.target, kwargs=dict(cfg.judge.kwargs))


def run_compare_job(cfg: "Config", run_dir: Path) -> None:
    """Every method of ``compare.methods`` on the same budget and seeds (``framework.compare``)."""
    from framework.compare import run_compare_job as run

    run(cfg, run_dir)


def preflight_compare(cfg: "Config", run_dir: Path) -> None:
    from framework.compare import method_config

    for method in cfg.compare.methods:
        if method != "sft":
            sub = method_config(cfg, method, cfg.compare.seeds[0])
            if sub.model.path:
                from framework.models import check_model_path

                check_model_path(sub.model.path)


def run_compare_irl_job(cfg: "Config", run_dir: Path) -> None:
    """SFT, SPIN, IRFT, … on the same demonstrations, per data variant (``framework.compare_irl``)."""
    from framework.compare_irl import run_compare_irl_job as run

    run(cfg, run_dir)


def preflight_compare_irl(cfg: "Config", run_dir: Path) -> None:
    from framework.compare_irl import check

    check(cfg)


def run_dp_job(cfg: "Config", run_dir: Path) -> None:
    """DP (or baseline) continual pre-training on the stdlib corpus, then its report."""
    from framework.dp import run_dp
    from framework.dp_report import print_summary, write_report

    summary = run_dp(cfg, run_dir)
    write_report(run_dir)
    print_summary(summary, run_dir)


def preflight_dp(cfg: "Config", run_dir: Path) -> None:
    from framework.dp import preflight

    preflight(cfg, run_dir)


def run_compare_dp_job(cfg: "Config", run_dir: Path) -> None:
    """Every DP pre-training method of ``compare.methods`` per ε (``framework.compare_dp``)."""
    from framework.compare_dp import run_compare_dp_job as run

    run(cfg, run_dir)


def preflight_compare_dp(cfg: "Config", run_dir: Path) -> None:
    from framework.compare_dp import check

    check(cfg)


JOBS = {"lab": run_lab_job, "selfplay": run_selfplay_job, "compare": run_compare_job,
        "compare_irl": run_compare_irl_job, "dp": run_dp_job, "compare_dp": run_compare_dp_job}
PREFLIGHT = {"selfplay": preflight_selfplay, "compare": preflight_compare, "compare_irl": preflight_compare_irl,
             "dp": preflight_dp, "compare_dp": preflight_compare_dp}


def run_job(cfg: "Config", run_dir: Path) -> None:
    JOBS[cfg.job](cfg, run_dir)
