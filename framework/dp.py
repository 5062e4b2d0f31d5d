"""``job: dp``: the controller of a (DP) continual pre-training run.

The DP learner (``privacy.learner.DPLearner``) is a role like the self-play learners, spawned on
the same ``Cluster`` (a Ray actor by default) and driven by the same kind of loop of named, timed
stages: sample → update → account → evaluate → checkpoint → log. It owns the private data; this
module only sees what it reports (no private content). Writes ``metrics.jsonl``, checkpoints,
``summary.json`` and the report.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import time
from pathlib import Path

from framework import checkpoint as ckpt
from framework.config import Config
from framework.driver import timed
from framework.errors import InputError


def _learner_cls():
    from privacy.learner import DPLearner

    return DPLearner


def prepare_model(cfg: Config) -> str:
    """``model.path``, or the tiny Llama with a tokenizer trained on the *public* split only."""
    if cfg.model.path:
        from framework.models import check_model_path

        check_model_path(cfg.model.path)
        return cfg.model.path
    from framework.models import build_tiny_model
    from privacy import corpus

    c = cfg.dp.corpus
    public = corpus.split_documents(corpus.stdlib_documents(), public_fraction=c.public_fraction,
                                    eval_fraction=c.eval_fraction, max_chars=c.max_chars).public
    if cfg.model.tiny.max_positions < c.seq_len:
        raise InputError(f"model.tiny.max_positions={cfg.model.tiny.max_positions} < dp.corpus.seq_len={c.seq_len}")
    cache = Path(cfg.cache_dir) if cfg.cache_dir else None
    return str(build_tiny_model(cfg.model.tiny, public, seed=cfg.seed, cache_dir=cache))


def learner_kwargs(cfg: Config, model_path: str) -> dict:
    d = dataclasses.asdict(cfg.dp)
    corpus = d.pop("corpus")
    for key in ("eval_every", "diagnostics"):
        d.pop(key)
    return dict(model_path=model_path, seed=cfg.seed, **d, **corpus)


def _save(cluster, workers: list, run_dir: Path, name: str, state: dict, keep: int | None) -> None:
    final = run_dir / "checkpoints" / name
    tmp = final.with_name(name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    cluster.get([cluster.call(w, "save", str(tmp)) for w in workers])
    ckpt.write_state(tmp, state)
    ckpt.finalize(tmp, final)
    if keep is not None:
        periodic = sorted((p for p in (run_dir / "checkpoints").glob("step-*") if (p / "state.json").exists()),
                          key=lambda p: ckpt.read_state(p)["iteration"])
        for old in periodic[:-keep]:
            shutil.rmtree(old)


def run_dp(cfg: Config, run_dir: Path, *, progress: bool = True) -> dict:
    """One DP (or baseline) pre-training run; returns its summary."""
    from tqdm.auto import tqdm

    from actors.remote import make_cluster

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    model_path = prepare_model(cfg)
    cluster = make_cluster(use_ray=cfg.pipeline.ray, num_cpus=cfg.pipeline.num_cpus)
    started = time.perf_counter()
    try:
        n = cfg.dp.workers
        rendezvous = cluster.init_method() if n > 1 else None
        cpus = min(cfg.dp.threads, cfg.pipeline.num_cpus or cfg.dp.threads) / n
        workers = [cluster.spawn(_learner_cls(), cpus=cpus, **learner_kwargs(cfg, model_path), rank=r,
                                 init_method=rendezvous) for r in range(n)]
        learner = workers[0]  # rank 0 evaluates, audits and answers for all (the weights are the same)

        def every(method: str, *args, **kwargs):
            """Call ``method`` on every worker; rank 0's answer."""
            return cluster.get([cluster.call(w, method, *args, **kwargs) for w in workers])[0]

        info = cluster.get(cluster.call(learner, "describe"))
        summary_path, metrics_path = run_dir / "summary.json", run_dir / "metrics.jsonl"
        summary = json.loads(summary_path.read_text()) if cfg.resume and summary_path.exists() else {}
        elapsed, switch_step = 0.0, None
        if cfg.resume:
            latest = ckpt.latest_checkpoint(run_dir)
            every("load", str(latest))
            state = ckpt.read_state(latest)
            elapsed, switch_step = state.get("wall_s", 0.0), state.get("switch_step")
            _truncate(metrics_path, state["iteration"])
        summary.update(method=cfg.dp.method, model=model_path, **{k: info[k] for k in (
            "noise_multiplier", "delta", "sample_rate", "max_grad_norm", "grad_sample_mode", "public_sequences",
            "private_sequences", "eval_sequences", "canaries", "parameters")}, layers=info["layers"])
        if "start" not in summary:
            summary["start"] = cluster.get(cluster.call(learner, "evaluate"))
        summary_path.write_text(json.dumps(summary, indent=1))
        total = {"nondp": cfg.dp.public_steps + cfg.dp.private_steps, "public_only": cfg.dp.public_steps,
                 "dp_continual": cfg.dp.public_steps + cfg.dp.private_steps}.get(cfg.dp.method, cfg.dp.private_steps)
        status = cluster.get(cluster.call(learner, "status"))
        bar = tqdm(total=total, initial=status["steps"],
                   desc=f"{cfg.dp.method}", disable=not progress, unit="step")
        stopped = summary.get("stopped")
        while not cluster.get(cluster.call(learner, "done")) and stopped is None:
            m: dict = {}
            wall = time.perf_counter()
            with timed(m, "sample"):
                s = every("sample")
            if s["stop"]:
                stopped = s["stop"]
                print(stopped, flush=True)
                break
            with timed(m, "update"):
                u = every("update")
            with timed(m, "account"):
                a = every("account")
            step = a["steps"]
            if s["phase"] == "private" and switch_step is None and cfg.dp.method == "dp_continual":
                switch_step = summary["switch_step"] = step - 1
                bar.total = switch_step + cfg.dp.private_steps  # the public phase ended early
                bar.refresh()
            m.update(iteration=step, **u, epsilon=a["epsilon"], private_steps=a["private_steps"])
            finishing = cluster.get(cluster.call(learner, "done"))
            if step % cfg.dp.eval_every == 0 or finishing:
                with timed(m, "evaluate"):
                    m.update(cluster.get(cluster.call(learner, "evaluate", diagnostics=cfg.dp.diagnostics)))
            if step % cfg.checkpoint.every == 0 and not finishing:
                with timed(m, "checkpoint"):
                    _save(cluster, workers, run_dir, f"step-{step:06d}",
                          {"iteration": step, "wall_s": elapsed + time.perf_counter() - started,
                           "switch_step": switch_step}, cfg.checkpoint.keep)
            with timed(m, "log"):
                m["steps_per_s"] = 1 / max(time.perf_counter() - wall, 1e-9)
                with metrics_path.open("a") as f:
                    f.write(json.dumps(m) + "\n")
            bar.update(1)
            bar.set_postfix(eps=f"{a['epsilon']:.2f}" if a["epsilon"] is not None else "∞",
                            eval=f"{m['eval_loss']:.3f}" if "eval_loss" in m else None)
        bar.close()
        status = cluster.get(cluster.call(learner, "status"))
        final = cluster.get(cluster.call(learner, "evaluate"))
        audit = cluster.get(cluster.call(learner, "audit")) if cfg.dp.canaries else None
        final.update(epsilon=status["epsilon"], audit_eps_lower=audit["eps_lower"] if audit else None,
                     steps=status["steps"], private_steps=status["private_steps"])
        wall = elapsed + time.perf_counter() - started
        _save(cluster, workers, run_dir, "final", {"iteration": status["steps"], "wall_s": wall,
                                                    "switch_step": switch_step}, None)
        summary.update(final=final, audit=audit, stopped=stopped, switch_step=switch_step, wall_s=wall,
                       final_policy=str((run_dir / "checkpoints" / "final" / "policy").resolve()))
        summary_path.write_text(json.dumps(summary, indent=1))
        return summary
    finally:
        cluster.shutdown()


def _truncate(metrics_path: Path, step: int) -> None:
    """Drop metric lines written after the checkpoint a resumed run continues from."""
    if metrics_path.exists():
        lines = [line for line in metrics_path.read_text().splitlines() if line.strip()]
        metrics_path.write_text("".join(line + "\n" for line in lines if json.loads(line)["iteration"] <= step))


def preflight(cfg: Config, run_dir: Path) -> None:
    """Checks that fail before anything is written (the budget fit is checked by the learner)."""
    if cfg.resume and ckpt.latest_checkpoint(run_dir) is None:
        raise InputError(f"resume=true but {run_dir} has no checkpoint to resume from")
    if not cfg.resume and (run_dir / "metrics.jsonl").exists():
        raise InputError(f"{run_dir} already holds a run; pass resume=true or choose another --run-dir")
    if cfg.model.path:
        from framework.models import check_model_path

        check_model_path(cfg.model.path)


def fmt(x, spec: str = ".3f") -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)
