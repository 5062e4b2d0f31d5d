"""``job: lab`` and ``alignplay lab``: tabular MPO/OMPO on exact games — runs, their JSON
reports, plots and tables.

Output contracts (other tools read them; add keys, never rename):

- ``run_matrix`` → ``{"algo", "eta", "iters", "policy" (average iterate), "last_policy",
  "exploitability" (average iterate)}`` plus extras (curve, LP equilibrium, ...).
- ``run_markov`` → one key per algorithm, each ``{"iters_to_eps": {"0.01", "0.001"},
  "slope", "mean_exploitability": [[iteration, value], ...]}`` plus extras.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from framework.algorithms.tabular import DEFAULT_ETA, TabularRun, get_tabular_algo, run_tabular
from framework.config import Config
from framework.errors import ConfigError
from framework.jobs.rundir import check_writable, strict_json
from games.markov import random_markov_game
from games.matrix import BUILTIN_GAMES, MatrixGame, builtin_game
from games.tasks import get_task

EPSILONS = (1e-2, 1e-3)
#: ``lab.matrix_games``' name for the class game of the config's task (``task.*``)
TASK_GAME = "task"


def curve_points(iters: int, n: int = 120) -> np.ndarray:
    """Log-spaced iterations 1..iters (always including the last) for compact curves."""
    return np.unique(np.concatenate([np.geomspace(1, iters, n).round().astype(int), [iters]]))


def loglog_slope(values: np.ndarray) -> float:
    """Least-squares slope of log(value) vs log(iteration) over the last decade of iterations."""
    iters = len(values)
    t = np.arange(1, iters + 1)
    keep = (t >= iters / 10) & (values > 0)
    if keep.sum() < 2:
        return float("nan")  # exactly zero exploitability: converged, no rate to fit
    return float(np.polyfit(np.log(t[keep]), np.log(values[keep]), 1)[0])


def iters_to_eps(values: np.ndarray, eps: float) -> int | None:
    """First iteration whose value is ≤ eps (None if never)."""
    hit = np.flatnonzero(values <= eps)
    return int(hit[0]) + 1 if len(hit) else None


def _init_policy(game, init: str, seed):
    return game.random_policy(seed) if init == "random" else game.uniform_policy()


def _progress(total: int, desc: str, enabled: bool):
    return tqdm(total=total, desc=desc, disable=not enabled, mininterval=0.5, unit="it")


def run_matrix(game, *, algo: str, eta: float = DEFAULT_ETA, iters: int, init: str = "random",
               seed: int = 0, staleness: int = 0, progress: bool = True) -> dict:
    """Run one algorithm on one ``MatrixGame``; return the ``lab matrix`` report."""
    get_tabular_algo(algo)
    markov = game.as_markov()
    with _progress(iters, f"{algo} on {game.name}", progress) as bar:
        run = run_tabular(markov, algo=algo, eta=eta, iters=iters, init_policy=_init_policy(markov, init, seed),
                          staleness=staleness, on_iteration=lambda t: bar.update(1))
    nash = game.nash()
    pts = curve_points(iters)
    return {
        "algo": algo,
        "eta": float(eta),
        "iters": int(iters),
        "policy": run.avg_policy[0][0].tolist(),
        "last_policy": run.last_policy[0][0].tolist(),
        "exploitability": float(run.avg_exploitability[-1]),
        "last_exploitability": float(run.last_exploitability[-1]),
        "game": game.name,
        "nash": nash.tolist(),
        "last_l1_to_nash": float(np.abs(run.last_policy[0][0] - nash).sum()),
        "iters_to_eps": {str(e): iters_to_eps(run.avg_exploitability, e) for e in EPSILONS},
        "last_iters_to_eps": {str(e): iters_to_eps(run.last_exploitability, e) for e in (2e-2, *EPSILONS)},
        "staleness": int(staleness),
        "slope": loglog_slope(run.avg_exploitability),
        "curve": [[int(t), float(run.avg_exploitability[t - 1]), float(run.last_exploitability[t - 1])]
                  for t in pts],
    }


def run_markov(games: list, *, algos: list[str], eta: float = DEFAULT_ETA, iters: int,
               init: str = "random", seed: int = 0, staleness: int = 0, progress: bool = True) -> dict:
    """Run each algorithm on each game; return the ``lab markov`` report (means over games)."""
    for algo in algos:
        get_tabular_algo(algo)
    out = {}
    with _progress(iters * len(games) * len(algos), "markov games", progress) as bar:
        for algo in algos:
            runs: list[TabularRun] = []
            for i, game in enumerate(games):
                bar.set_description(f"{algo} game {i + 1}/{len(games)}")
                runs.append(run_tabular(game, algo=algo, eta=eta, iters=iters, staleness=staleness,
                                        init_policy=_init_policy(game, init, [seed, i, 1]),
                                        on_iteration=lambda t: bar.update(1)))
            avg = np.stack([r.avg_exploitability for r in runs])  # (games, iters)
            last = np.stack([r.last_exploitability for r in runs])
            mean, std = avg.mean(axis=0), avg.std(axis=0)
            pts = curve_points(iters)
            out[algo] = {
                "iters_to_eps": {str(e): iters_to_eps(mean, e) for e in EPSILONS},
                "slope": loglog_slope(mean),
                "mean_exploitability": [[int(t), float(mean[t - 1])] for t in pts],
                "std_exploitability": [[int(t), float(std[t - 1])] for t in pts],
                "mean_last_exploitability": [[int(t), float(last[:, t - 1].mean())] for t in pts],
                "final_exploitability": float(mean[-1]),
                "eta": float(eta),
                "iters": int(iters),
                "seed": int(seed),
                "games": [
                    {"name": g.name, "horizon": g.horizon, "states": list(g.num_states),
                     "actions": g.num_actions, "final_exploitability": float(r.avg_exploitability[-1]),
                     "final_last_exploitability": float(r.last_exploitability[-1]),
                     "slope": loglog_slope(r.avg_exploitability)}
                    for g, r in zip(games, runs)
                ],
            }
    return out


def format_table(report: dict) -> str:
    """Iterations to reach ε, log–log slope and final exploitability per algorithm."""
    rows = [f"{'method':<8}{'iters→1e-2':>12}{'iters→1e-3':>12}{'slope':>9}{'final':>11}"]
    for algo, r in report.items():
        hit = [r["iters_to_eps"][str(e)] for e in EPSILONS]
        rows.append(f"{algo:<8}" + "".join(f"{('—' if h is None else h):>12}" for h in hit)
                    + f"{r['slope']:>9.3f}{r['final_exploitability']:>11.2e}")
    return "\n".join(rows)


def plot_markov(report: dict, path: Path, title: str = "Markov games") -> None:
    """Log–log exploitability of the average iterate, mean ± std over games."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4))
    for algo, r in report.items():
        t, mean = np.array(r["mean_exploitability"]).T
        std = np.array(r["std_exploitability"])[:, 1]
        ax.plot(t, mean, label=f"{algo} (slope {r['slope']:.2f})")
        ax.fill_between(t, np.maximum(mean - std, 1e-12), mean + std, alpha=0.2)
    ax.set(xscale="log", yscale="log", xlabel="iteration (policy updates)",
           ylabel="exploitability (average iterate)", title=title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_matrix(reports: list[dict], path: Path) -> None:
    """Average- and last-iterate exploitability of matrix-game runs on log–log axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4))
    for r in reports:
        t, avg, last = np.array(r["curve"]).T
        line, = ax.plot(t, np.maximum(avg, 1e-16), label=f"{r['algo']} average")
        ax.plot(t, np.maximum(last, 1e-16), ls="--", color=line.get_color(), label=f"{r['algo']} last")
    ax.set(xscale="log", yscale="log", xlabel="iteration (policy updates)", ylabel="exploitability",
           title=reports[0]["game"])
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_json(obj: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(strict_json(obj, indent=1) + "\n")


def task_game(cfg: Config) -> MatrixGame:
    """The class game of the config's task (``task.*``): its judge's exact payoffs between response
    classes — the tabular stand-in of a self-play run on that task."""
    task = get_task(**dataclasses.asdict(cfg.task))
    if not task.response_classes:
        raise ConfigError("task.name", f"task {task.name!r} has no response classes (no class game)")
    name = f"{task.name}_w{cfg.task.correctness_weight:g}" if task.name == "running_sum" else task.name
    return MatrixGame(task.class_matrix, name=name)


def matrix_game(cfg: Config, name: str) -> MatrixGame:
    return task_game(cfg) if name == TASK_GAME else builtin_game(name, seed=cfg.seed, size=cfg.lab.matrix_size)


def preflight(cfg: Config, run_dir: Path) -> None:
    """The games named in the config exist; the run directory can be written."""
    check_writable(run_dir, "--run-dir")
    for i, name in enumerate(cfg.lab.matrix_games):
        if name not in BUILTIN_GAMES and name != TASK_GAME:
            raise ConfigError(f"lab.matrix_games[{i}]", f"unknown game {name!r}; choose from "
                              f"{sorted([*BUILTIN_GAMES, TASK_GAME])}")
        if name == TASK_GAME:
            task_game(cfg)


def run(cfg: Config, run_dir: Path) -> None:
    """The exact game lab: every matrix game and the random Markov games, with a report."""
    c = cfg.lab
    lines = ["# Exact game lab", "",
             f"η = {c.eta}, {c.iters} iterations, start policy: {c.init}, seed {cfg.seed}"
             f"{f', staleness {c.staleness} (updates anchored {c.staleness} version(s) back)' if c.staleness else ''}.",
             "",
             "## Matrix games", "",
             "| game | method | avg-iterate exploitability | last-iterate exploitability | "
             "L1(last, Nash) | iters→1e-2 | iters→1e-3 | slope |", "|---" * 8 + "|"]
    for name in c.matrix_games:
        game = matrix_game(cfg, name)
        reports = []
        for algo in c.algos:
            r = run_matrix(game, algo=algo, eta=c.eta, iters=c.iters, init=c.init, seed=cfg.seed,
                           staleness=c.staleness)
            write_json(r, run_dir / "matrix" / f"{game.name}_{algo}.json")
            reports.append(r)
            hit = [r["iters_to_eps"][k] for k in ("0.01", "0.001")]
            lines.append(f"| {game.name} | {algo} | {r['exploitability']:.2e} | "
                         f"{r['last_exploitability']:.2e} | {r['last_l1_to_nash']:.2e} | "
                         f"{hit[0] or '—'} | {hit[1] or '—'} | {r['slope']:.2f} |")
        plot_matrix(reports, run_dir / "matrix" / f"{game.name}.png")
    games = [random_markov_game(cfg.seed + i) for i in range(c.markov_games)]
    algos = [a for a in c.algos if get_tabular_algo(a).max_horizon is None]  # e.g. SPPO: single-step games only
    report = run_markov(games, algos=algos, eta=c.eta, iters=c.iters, init=c.init, seed=cfg.seed,
                        staleness=c.staleness)
    write_json(report, run_dir / "markov.json")
    plot_markov(report, run_dir / "markov.png", title=f"{len(games)} random Markov games")
    table = format_table(report)
    lines += ["", f"## {len(games)} random Markov games (mean over games)", "", "```", table, "```",
              "", "![markov](markov.png)", ""]
    (run_dir / "report.md").write_text("\n".join(lines))
    print(table)
