"""The ``alignplay`` command line: argparse → the jobs (``framework.jobs``). Bad input → one
line on stderr and exit code 2.

Each command imports its job when it runs, so ``--help`` and config errors answer at once,
without loading torch.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from framework.errors import AlignplayError, InputError


class _Parser(argparse.ArgumentParser):
    """argparse, but usage mistakes become one-line InputErrors (exit code 2)."""

    def error(self, message):
        raise InputError(f"{message} (see {self.prog} --help)")


def _matrix(args) -> None:
    from framework.jobs import lab
    from games.matrix import builtin_game, load_payoff

    if (args.payoff is None) == (args.builtin is None):
        raise InputError("lab matrix: give exactly one of --payoff FILE.npy or --builtin NAME")
    game = load_payoff(args.payoff) if args.payoff else builtin_game(args.builtin, seed=args.seed, size=args.size)
    report = lab.run_matrix(game, algo=args.algo, eta=args.eta, iters=args.iters,
                            init=args.init, seed=args.seed, staleness=args.staleness)
    out = Path(args.out)
    lab.write_json(report, out)
    lab.plot_matrix([report], out.with_suffix(".png"))
    print(f"{report['algo']} on {report['game']}: average-iterate exploitability "
          f"{report['exploitability']:.3e}, last iterate {report['last_exploitability']:.3e}, "
          f"L1(last, LP Nash) {report['last_l1_to_nash']:.3e}")
    print(f"wrote {out} and {out.with_suffix('.png')}")


def _markov(args) -> None:
    from framework.jobs import lab
    from games.markov import random_markov_game

    if args.games < 1:
        raise InputError(f"lab markov: --games must be ≥ 1, got {args.games}")
    algos = ["mpo", "ompo"] if args.algo == "both" else [args.algo]
    games = [random_markov_game(args.seed + i) for i in range(args.games)]
    report = lab.run_markov(games, algos=algos, eta=args.eta, iters=args.iters,
                            init=args.init, seed=args.seed, staleness=args.staleness)
    out = Path(args.out)
    lab.write_json(report, out)
    lab.plot_markov(report, out.with_suffix(".png"), title=f"{args.games} random Markov games")
    print(lab.format_table(report))
    print(f"wrote {out} and {out.with_suffix('.png')}")


def _run(args) -> None:
    from framework.config import load_config
    from framework.jobs import JOBS, run_job
    from framework.jobs.rundir import write_config

    cfg = load_config(args.config, args.overrides)
    run_dir = Path(args.run_dir or f"runs/{Path(args.config).stem}-{time.strftime('%Y%m%d-%H%M%S')}")
    JOBS[cfg.job].preflight(cfg, run_dir)  # bad input fails here, before the run directory is touched
    run_dir.mkdir(parents=True, exist_ok=True, mode=0o700)  # the user's alone (a new one)
    write_config(run_dir, cfg)
    run_job(cfg, run_dir)
    print(f"run directory: {run_dir}")


def _report(args) -> None:
    import json

    from framework.jobs.reports import dp_report, selfplay_report

    summary = Path(args.run_dir) / "summary.json"
    is_dp = summary.exists() and "sample_rate" in json.loads(summary.read_text())  # a job: dp run
    print(f"wrote {(dp_report if is_dp else selfplay_report)(Path(args.run_dir))}")


def _eval(args) -> None:
    from framework.jobs import evaluate

    out = evaluate.run(args.target, reference=args.reference, config=args.config, conversations=args.conversations,
                       samples=args.samples, seed=args.seed, out=args.out, overrides=args.overrides)
    print(f"wrote {out}")


def _add_lab_common(p, *, algo_help: str) -> None:
    from framework.algorithms.tabular import DEFAULT_ETA

    p.add_argument("--algo", required=True, help=algo_help)
    p.add_argument("--eta", type=float, default=DEFAULT_ETA,
                   help=f"step size η of the update (β = 1/η); default {DEFAULT_ETA} (bound 1/√2)")
    p.add_argument("--iters", type=int, default=10_000, help="policy updates (default 10000)")
    p.add_argument("--seed", type=int, default=0, help="seed of games and starting policies")
    p.add_argument("--init", choices=["random", "uniform"], default="random",
                   help="starting policy (default: random, from the seed)")
    p.add_argument("--staleness", type=int, default=0,
                   help="updates anchored this many versions back, as an async pipeline's (default 0)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="alignplay", description="Self-play alignment and private pre-training on Ray.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run a job from a YAML config", description=(
        "Run a job from a YAML config with dotted key=value overrides (e.g. lab.iters=500)."))
    run.add_argument("config", help="YAML config file (see examples/)")
    run.add_argument("--run-dir", help="output directory (default runs/<config>-<time>)")
    run.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    run.set_defaults(func=_run)

    rep = sub.add_parser("report", help="plots and report.md for a self-play run directory",
                         description="Write report.md and PNG plots from RUN_DIR/metrics.jsonl.")
    rep.add_argument("run_dir", help="a run directory written by `alignplay run`")
    rep.set_defaults(func=_report)

    ev = sub.add_parser("eval", help="win rate vs a reference policy and exploitability of a policy",
                        description="Judge the final policy of RUN_DIR (or a checkpoint / policy directory) "
                                    "against a reference policy (default: the run's warm start) on held-out "
                                    "states: win rate with its 95% interval and the task's exploitability "
                                    "estimate, written to eval.json (and the run's report).")
    ev.add_argument("target", help="a run directory, a checkpoint directory or a policy directory")
    ev.add_argument("--reference", help="reference policy directory (default: the run's warm start)")
    ev.add_argument("--config", help="config naming the task and judge (default: the run's config.yaml)")
    ev.add_argument("--conversations", type=int, default=200, help="held-out conversations (default 200)")
    ev.add_argument("--samples", type=int, default=4, help="samples per state (default 4)")
    ev.add_argument("--seed", type=int, default=1, help="seed of the held-out states and sampling (default 1)")
    ev.add_argument("--out", help="output JSON (default TARGET/eval.json)")
    ev.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides (e.g. judge.kind=...)")
    ev.set_defaults(func=_eval)

    labp = sub.add_parser("lab", help="exact game lab: tabular MPO/OMPO on known games")
    lab_sub = labp.add_subparsers(dest="game", required=True, metavar="GAME")
    m = lab_sub.add_parser("matrix", help="one algorithm on a matrix preference game",
                           description="Tabular MPO/OMPO on a matrix game P (P + Pᵀ = 1).")
    m.add_argument("--payoff", help="a .npy file holding the n×n preference matrix P")
    m.add_argument("--builtin", help="rock_paper_scissors | asymmetric_cycle | random | running_sum | "
                   "running_sum_style (the task's 8 answer classes; _style: correctness weight 0)")
    m.add_argument("--size", type=int, default=5, help="classes of the random built-in game (default 5)")
    _add_lab_common(m, algo_help="mpo | ompo | sppo")
    m.add_argument("--out", default="lab-matrix.json", help="report JSON (a PNG is written beside it)")
    m.set_defaults(func=_matrix)
    k = lab_sub.add_parser("markov", help="MPO/OMPO on random tabular Markov games",
                           description="Tabular MPO/OMPO on random two-player constant-sum Markov games.")
    k.add_argument("--games", type=int, default=10, help="number of random games (default 10)")
    _add_lab_common(k, algo_help="mpo | ompo | both")
    k.add_argument("--out", default="lab-markov.json", help="report JSON (a PNG is written beside it)")
    k.set_defaults(func=_markov)
    return parser


def main(argv: list[str] | None = None) -> int:
    # Plugins named in configs (judge.target=module:Class) may live in the working directory.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        parser = build_parser()
        # Overrides may follow options (`run CONFIG --run-dir D quick=true`): argparse hands them
        # back as extras, which are overrides only for `run`.
        args, extra = parser.parse_known_args(argv)
        if extra and (args.command not in ("run", "eval") or any(e.startswith("-") or "=" not in e for e in extra)):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        if extra:
            args.overrides = [*args.overrides, *extra]
        if getattr(args, "algo", None) not in (None, "both"):
            from framework.algorithms.tabular import get_tabular_algo

            get_tabular_algo(args.algo)
        args.func(args)
    except AlignplayError as e:
        print(f"alignplay: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("alignplay: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
