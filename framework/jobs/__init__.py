"""The roof: one file per ``job:`` value, each holding that job's loop, and the registry that
``alignplay run`` dispatches on.

    selfplay.py     the Ray self-play pipeline (roles + the loop)       job: selfplay
    compare.py      self-play methods side by side                      job: compare
    compare_irl.py  learning from demonstrations side by side           job: compare_irl
    dp.py           (DP) continual pre-training                         job: dp
    compare_dp.py   DP pre-training methods side by side                job: compare_dp
    lab.py          tabular MPO/OMPO on exact games                     job: lab, alignplay lab
    train_judge.py  a reward / pairwise preference model from preferences job: train_judge
    evaluate.py     held-out evaluation                                 alignplay eval
    warmstart.py    the cached SFT warm start every self-play run begins with
    rundir.py       preflight, checkpoints, resume truncation, summaries (every job's run directory)
    reports.py      report.md and plots of runs, tables of comparisons
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from framework.config import Config
from framework.jobs import compare, compare_dp, compare_irl, dp, lab, selfplay, train_judge
from framework.jobs.reports import dp_summary, selfplay_summary


def _nothing(out, run_dir: Path) -> None:
    pass


@dataclass(frozen=True)
class Job:
    """One ``job:`` value: its checks before anything is written, its run, and what ``alignplay
    run`` does with the run's result (a report, a few printed lines)."""

    preflight: Callable[[Config, Path], None]
    run: Callable[[Config, Path], object]
    finish: Callable[[object, Path], None] = _nothing


JOBS: dict[str, Job] = {
    "selfplay": Job(selfplay.preflight, selfplay.run, selfplay_summary),
    "compare": Job(compare.preflight, compare.run),
    "compare_irl": Job(compare_irl.preflight, compare_irl.run),
    "dp": Job(dp.preflight, dp.run, dp_summary),
    "compare_dp": Job(compare_dp.preflight, compare_dp.run),
    "lab": Job(lab.preflight, lab.run),
    "train_judge": Job(train_judge.preflight, train_judge.run, train_judge.finish),
}


def run_job(cfg: Config, run_dir: Path) -> None:
    """What ``alignplay run`` does after the preflight and writing the resolved config."""
    job = JOBS[cfg.job]
    job.finish(job.run(cfg, run_dir), run_dir)
