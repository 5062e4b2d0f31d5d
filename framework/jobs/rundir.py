"""What every job does with its run directory: the preflight before anything is written, stage
timers, the summary, checkpoints (written atomically, the periodic ones rotated), truncation of
what was logged after the checkpoint a resumed run continues from, and reuse of finished runs."""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

import numpy as np
import yaml

from framework import checkpoint as ckpt
from framework.config import REDACTED, Config, is_secret, load_config, to_yaml
from framework.errors import InputError
from framework.models import check_model_path, default_cache_dir
from games.demonstrations import load_demonstrations


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


def preflight(cfg: Config, run_dir: Path, *, experiment_keys: tuple[str, ...] = (),
              length_key: str | None = "train.iterations") -> None:
    """Checks every job makes before anything is written: the run and cache directories can be
    written; a resume continues a run of the same job (and, with ``experiment_keys``, the same
    experiment) from a whole checkpoint, and does not shorten it (``length_key``: the config's
    length in the checkpoints' iterations; None: the job checks that itself); a new run has a
    directory of its own; the model and the demonstrations the config names can be read."""
    check_dirs(cfg, run_dir)
    if cfg.resume:
        latest = ckpt.latest_checkpoint(run_dir)
        if latest is None:
            raise InputError(f"resume=true but {run_dir} has no checkpoint to resume from")
        saved = load_config(run_dir / "config.yaml") if (run_dir / "config.yaml").exists() else None
        if saved is not None and saved.job != cfg.job:
            raise InputError(f"resume=true with job={cfg.job}, but {run_dir} holds a job={saved.job} run "
                             f"({run_dir / 'config.yaml'})")
        if saved is not None and experiment_keys:
            changed = experiment_changes(saved, cfg, experiment_keys)
            if changed:
                raise InputError(f"resume=true with a different experiment: {', '.join(changed)} differ from "
                                 f"{run_dir / 'config.yaml'} (only iterations, evaluation, checkpoints, the "
                                 f"judge and the pipeline layout may change on resume)")
        done = ckpt.check_checkpoint(latest)["iteration"]
        length = functools.reduce(getattr, length_key.split("."), cfg) if length_key else None
        if length is not None and length < done:
            raise InputError(f"resume=true with {length_key}={length}, but {run_dir} already has {done} iterations "
                             f"(a resume may extend a run, not shorten it)")
    if not cfg.resume and (run_dir / "metrics.jsonl").exists():
        raise InputError(f"{run_dir} already holds a run; pass resume=true or choose another --run-dir")
    check_inputs(cfg)


def check_dirs(cfg: Config, run_dir: Path) -> None:
    """The run directory and the cache directory can be written (or created)."""
    check_writable(run_dir, "--run-dir")
    check_writable(Path(cfg.cache_dir) if cfg.cache_dir else default_cache_dir(), "cache_dir")


def check_inputs(cfg: Config) -> None:
    """The model and the demonstrations the config names can be read."""
    if cfg.model.path:
        check_model_path(cfg.model.path)
    if cfg.demos.path:
        load_demonstrations(cfg.demos.path)


def check_writable(path: Path, field: str) -> None:
    """``path`` is a directory this process can write in, or one it can create. Permission bits do
    not tell (root passes them, /proc refuses root): where ``path`` does not exist yet, a probe
    directory is made (and removed) in its nearest existing parent."""
    path = Path(path).expanduser().absolute()
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        raise InputError(f"{field}: cannot create {path}: {existing} is a file, not a directory")
    if existing == path:
        if not os.access(path, os.W_OK | os.X_OK):
            raise InputError(f"{field}: {path} is not writable (expected a directory this user can write in)")
        return
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".alignplay-probe-", dir=existing))
    except OSError as e:
        raise InputError(f"{field}: cannot create {path} in {existing} ({e.strerror}); expected a writable "
                         f"directory") from None


@contextmanager
def timed(metrics: dict, stage: str):
    """Adds the seconds spent inside to ``metrics[f"{stage}_s"]``."""
    start = time.perf_counter()
    yield
    metrics[f"{stage}_s"] = metrics.get(f"{stage}_s", 0.0) + time.perf_counter() - start


def strict_json(obj, **kwargs) -> str:
    """``json.dumps`` that strict parsers read back: a non-finite float (numpy's too) is null, and
    the value of a key named like a secret is redacted."""

    def clean(x, key=None):
        if key is not None and is_secret(key) and x not in (None, ""):
            return REDACTED
        if isinstance(x, dict):
            return {k: clean(v, k) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [clean(v) for v in x]
        if isinstance(x, np.generic):
            x = x.item()
        return None if isinstance(x, float) and not math.isfinite(x) else x

    return json.dumps(clean(obj), allow_nan=False, **kwargs)


def append_metrics(run_dir: Path, metrics: dict) -> None:
    with (Path(run_dir) / "metrics.jsonl").open("a") as f:
        f.write(strict_json(metrics) + "\n")


def read_summary(run_dir: Path) -> dict:
    path = Path(run_dir) / "summary.json"
    return json.loads(path.read_text()) if path.exists() else {}


def write_summary(run_dir: Path, summary: dict) -> None:
    (Path(run_dir) / "summary.json").write_text(strict_json(summary, indent=1))


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


def finished_summary(run_dir: Path, done_key: str = "final") -> dict | None:
    """The summary of a finished run in ``run_dir`` (one that has ``done_key``: ``final`` for
    training runs, ``judge_path`` for ``job: train_judge``), or None."""
    summary = read_summary(run_dir)
    return summary if done_key in summary else None


#: config keys (or sections) a finished run is reused across: the comparison's own bookkeeping and
#: how the run's roles were laid out on the cores, not what they computed
REUSE_IGNORED = ("compare", "lab", "resume", "quick", "cache_dir", "pipeline.generator_threads",
                 "pipeline.learner_threads", "pipeline.light_roles")


def reuse_changes(run_dir: Path, cfg: Config) -> list[str]:
    """``key: saved → now`` for each setting of the run in ``run_dir`` (its ``config.yaml``) that
    ``cfg`` changes, outside ``REUSE_IGNORED`` (a key only one side has, from another version, is
    not counted)."""
    path = Path(run_dir) / "config.yaml"
    if not path.exists():
        return []

    def flat(obj, prefix=""):
        if isinstance(obj, dict):
            return {k: v for key, value in obj.items() for k, v in flat(value, f"{prefix}{key}.").items()}
        return {prefix[:-1]: obj}

    saved, now = flat(yaml.safe_load(path.read_text())), flat(yaml.safe_load(to_yaml(cfg)))
    return [f"{k}: {saved[k]!r} → {now[k]!r}" for k in saved if k in now and saved[k] != now[k]
            and not any(k == i or k.startswith(i + ".") for i in REUSE_IGNORED)]


def run_or_reuse(cfg: Config, run_dir: Path, label: str, run: Callable[[Config, Path], dict], *,
                 done_key: str = "final") -> dict:
    """The summary of the finished run in ``run_dir``, or of ``run(cfg, run_dir)`` done now (an
    interrupted run starts again from scratch). Comparisons run each of their runs this way. A
    finished run of other settings is an error, not reused (nor overwritten)."""
    summary = finished_summary(run_dir, done_key)
    if summary is not None:
        changed = reuse_changes(run_dir, cfg)
        if changed:
            raise InputError(f"{run_dir} holds a finished run of other settings ({'; '.join(changed[:3])}"
                             f"{f'; {len(changed) - 3} more' if len(changed) > 3 else ''}): remove it or choose "
                             f"another --run-dir")
        return summary
    print(f"[{label}] → {run_dir}", flush=True)
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, mode=0o700)
    write_config(run_dir, cfg)
    return run(cfg, run_dir)


def write_config(run_dir: Path, cfg: Config) -> None:
    """``config.yaml`` (``to_yaml``: no secret in it), readable by the user alone."""
    path = Path(run_dir) / "config.yaml"
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
        os.fchmod(f.fileno(), 0o600)  # (a file that was there keeps its mode through O_CREAT)
        f.write(to_yaml(cfg))
