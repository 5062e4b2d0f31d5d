"""What every job does with its run directory: the preflight before anything is written, stage
timers, the summary, checkpoints (written atomically, the periodic ones rotated), truncation of
what was logged after the checkpoint a resumed run continues from, and reuse of finished runs."""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

from framework import checkpoint as ckpt
from framework.config import Config, load_config, to_yaml
from framework.errors import InputError
from framework.models import check_model_path


def experiment_changes(saved: Config, new: Config, keys: tuple[str, ...]) -> list[str]:
    """Dotted keys under ``keys`` whose values differ between two configs."""

    def flat(obj, prefix=""):
        if dataclasses.is_dataclass(obj):
            out = {}
            for f in dataclasses.fields(obj):
                out.update(flat(getattr(obj, f.name), f"{prefix}{f.name}."))
            return out
        return {prefix[:-1]: obj}

    a, b = flat(saved), flat(new)
    return [k for k in a if any(k == e or k.startswith(e + ".") for e in keys) and a[k] != b[k]]


def preflight(cfg: Config, run_dir: Path, *, experiment_keys: tuple[str, ...] = ()) -> None:
    """Checks every job makes before anything is written: a resume has a checkpoint (and, with
    ``experiment_keys``, the same experiment), a new run has a directory of its own, a model path
    exists."""
    if cfg.resume and ckpt.latest_checkpoint(run_dir) is None:
        raise InputError(f"resume=true but {run_dir} has no checkpoint to resume from")
    if cfg.resume and experiment_keys and (run_dir / "config.yaml").exists():
        changed = experiment_changes(load_config(run_dir / "config.yaml"), cfg, experiment_keys)
        if changed:
            raise InputError(f"resume=true with a different experiment: {', '.join(changed)} differ from "
                             f"{run_dir / 'config.yaml'} (only iterations, evaluation, checkpoints, the "
                             f"judge and the pipeline layout may change on resume)")
    if not cfg.resume and (run_dir / "metrics.jsonl").exists():
        raise InputError(f"{run_dir} already holds a run; pass resume=true or choose another --run-dir")
    if cfg.model.path:
        check_model_path(cfg.model.path)


@contextmanager
def timed(metrics: dict, stage: str):
    """Adds the seconds spent inside to ``metrics[f"{stage}_s"]``."""
    start = time.perf_counter()
    yield
    metrics[f"{stage}_s"] = metrics.get(f"{stage}_s", 0.0) + time.perf_counter() - start


def append_metrics(run_dir: Path, metrics: dict) -> None:
    with (Path(run_dir) / "metrics.jsonl").open("a") as f:
        f.write(json.dumps(metrics) + "\n")


def read_summary(run_dir: Path) -> dict:
    path = Path(run_dir) / "summary.json"
    return json.loads(path.read_text()) if path.exists() else {}


def write_summary(run_dir: Path, summary: dict) -> None:
    (Path(run_dir) / "summary.json").write_text(json.dumps(summary, indent=1))


def write_checkpoint(run_dir: Path, name: str, state: dict, save: Callable[[Path], None], keep: int) -> Path:
    """``checkpoints/<name>``: ``save(directory)`` writes the roles' part, then ``state.json``;
    the directory appears whole (written aside and renamed). Of the periodic checkpoints (all but
    ``final``) the ``keep`` latest stay (0: all)."""
    folder = Path(run_dir) / "checkpoints"
    tmp = folder / f".{name}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    save(tmp)
    ckpt.write_state(tmp, state)
    out = folder / name
    ckpt.finalize(tmp, out)
    periodic = sorted((p for p in folder.iterdir() if p.name != "final" and (p / "state.json").exists()),
                      key=lambda p: ckpt.read_state(p)["iteration"])
    for old in periodic[:-keep] if keep > 0 else []:
        shutil.rmtree(old)
    return out


def truncate(run_dir: Path, iteration: int) -> None:
    """Forget what was logged after ``iteration`` (metrics lines, record shards): a resumed run
    continuing from that checkpoint writes it again."""
    run_dir = Path(run_dir)
    metrics = run_dir / "metrics.jsonl"
    if metrics.exists():
        lines = [line for line in metrics.read_text().splitlines() if line.strip()]
        metrics.write_text("".join(line + "\n" for line in lines if json.loads(line)["iteration"] <= iteration))
    for folder in ("rollouts", "comparisons"):
        for shard in (run_dir / folder).glob("iter_*.parquet"):
            if int(shard.stem.split("_")[1]) > iteration:
                shard.unlink()


def finished_summary(run_dir: Path) -> dict | None:
    """The summary of a finished run in ``run_dir``, or None."""
    summary = read_summary(run_dir)
    return summary if "final" in summary else None


def run_or_reuse(cfg: Config, run_dir: Path, label: str, run: Callable[[Config, Path], dict]) -> dict:
    """The summary of the finished run in ``run_dir``, or of ``run(cfg, run_dir)`` done now (an
    interrupted run starts again from scratch). Comparisons run each of their runs this way."""
    summary = finished_summary(run_dir)
    if summary is not None:
        return summary
    print(f"[{label}] → {run_dir}", flush=True)
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(to_yaml(cfg))
    return run(cfg, run_dir)
