"""``job: dp``: the controller of a (DP) continual pre-training run.

The DP learner (``privacy.learner.DPLearner``) is a role like the self-play learners, spawned on
the same kind of cluster (a Ray actor by default) and driven by the same kind of loop of named,
timed stages: sample → update → account → evaluate → checkpoint → log. It owns the private data;
this module only sees what it reports (no private content). Writes ``metrics.jsonl``,
checkpoints, ``summary.json`` and the report.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Callable

from tqdm.auto import tqdm

from actors.remote import Ask, Handle, ask, check_local_fit, cluster_for
from framework import checkpoint as ckpt
from framework.config import DP_METHODS, Config
from framework.errors import InputError, NonFiniteError
from framework.jobs.rundir import (append_metrics, preflight as check_run_dir, read_summary, timed, truncate,
                                   write_checkpoint, write_summary)
from framework.models import build_tiny_model, check_model_path
from privacy import corpus
from privacy.accounting import plan_noise
from privacy.learner import DPLearner


def preflight(cfg: Config, run_dir: Path) -> None:
    """Checks that fail before anything is written: the run directory, a resume's checkpoint and
    length, the resources (on a cluster it joins, when it has joined, before any worker starts) and
    that the budget admits the schedule — the private split counted with the run's tokenizer, as
    the learner counts it (building the tiny model into the cache, where the run finds it)."""
    check_run_dir(cfg, run_dir, length_key=None)
    method = DP_METHODS[cfg.dp.method]
    if cfg.resume:
        latest = ckpt.latest_checkpoint(run_dir)
        if not (latest / "learner.json").is_file():
            raise InputError(f"resume: {latest} has no learner.json (not a checkpoint of a job: dp run)")
        taken = json.loads((latest / "learner.json").read_text())  # (check_run_dir found it valid JSON)
        private = taken.get("private_taken") if isinstance(taken, dict) else None
        steps = ckpt.read_state(latest)["iteration"]
        if not isinstance(private, int):
            raise InputError(f"resume: {latest / 'learner.json'} has no integer 'private_taken' (a corrupt checkpoint)")
        if steps > method.steps(cfg.dp.public_steps, cfg.dp.private_steps) or private > cfg.dp.private_steps:
            raise InputError(f"resume=true with dp.public_steps={cfg.dp.public_steps}, dp.private_steps="
                             f"{cfg.dp.private_steps}, but {run_dir} already has {steps} steps ({private} private) "
                             f"(a resume may extend a run, not shorten it)")
    check_local_fit(cfg.pipeline, lambda gpus: worker_asks(cfg, gpus))
    from transformers import AutoTokenizer

    c, d = cfg.dp.corpus, cfg.dp
    n = corpus.private_sequences(AutoTokenizer.from_pretrained(prepare_model(cfg)), public_fraction=c.public_fraction,
                                 eval_fraction=c.eval_fraction, max_chars=c.max_chars, seq_len=c.seq_len,
                                 canaries=d.canaries, seed=cfg.seed)
    if d.batch_size > n:
        raise InputError(f"dp.batch_size={d.batch_size} exceeds the {n} private sequences")
    if cfg.dp.start_from:
        check_public_checkpoint(Path(cfg.dp.start_from))
    if method.budgeted:
        plan_noise(private_sequences=n, batch_size=d.batch_size, private_steps=d.private_steps,
                   target_epsilon=d.target_epsilon, delta=d.delta, noise_multiplier=d.noise_multiplier,
                   stop_at_budget=d.stop_at_budget, accountant=d.accountant)


def check_public_checkpoint(d: Path) -> None:
    """``dp.start_from`` is a checkpoint of a public_only run (its learner.json and weights)."""
    state = d / "learner.json"
    if not state.is_file() or not (d / "policy" / "model.safetensors").is_file():
        raise InputError(f"dp.start_from: {d} is not a checkpoint of a job: dp run (expected learner.json and "
                         f"policy/model.safetensors; a public_only run's checkpoints/final)")
    try:
        taken = json.loads(state.read_text())
    except json.JSONDecodeError as e:
        raise InputError(f"dp.start_from: {state} is not valid JSON ({e.msg}, line {e.lineno})") from None
    if not isinstance(taken, dict) or taken.get("method") != "public_only":
        method = taken.get("method") if isinstance(taken, dict) else None
        raise InputError(f"dp.start_from: {d} is a checkpoint of {method!r}, not of a public_only run")


def prepare_model(cfg: Config) -> str:
    """``model.path``, or the tiny Llama with a tokenizer trained on the *public* split only."""
    if cfg.model.path:
        check_model_path(cfg.model.path)
        return cfg.model.path
    c = cfg.dp.corpus
    public = corpus.split_documents(corpus.stdlib_documents(), public_fraction=c.public_fraction,
                                    eval_fraction=c.eval_fraction, max_chars=c.max_chars).public
    if cfg.model.tiny.max_positions < c.seq_len:
        raise InputError(f"model.tiny.max_positions={cfg.model.tiny.max_positions} < dp.corpus.seq_len={c.seq_len}")
    cache = Path(cfg.cache_dir) if cfg.cache_dir else None
    return str(build_tiny_model(cfg.model.tiny, public, seed=cfg.seed, cache_dir=cache))


def learner_kwargs(cfg: Config, model_path: str) -> dict:
    d = dataclasses.asdict(cfg.dp)
    corpus_settings = d.pop("corpus")
    for key in ("eval_every", "diagnostics"):
        d.pop(key)
    return dict(model_path=model_path, seed=cfg.seed, **d, **corpus_settings)


def worker_asks(cfg: Config, gpus: float) -> list[list[Ask]]:
    """Each DP worker in a bundle of its own: dp.threads / dp.workers CPUs (at most pipeline.num_cpus
    in all) and, on a cluster with GPUs, a GPU, unless ``pipeline.resources.dp_worker`` says otherwise."""
    n = cfg.dp.workers
    cpus = min(cfg.dp.threads, cfg.pipeline.num_cpus or cfg.dp.threads) / n
    return [[ask(cfg.pipeline.resources.dp_worker, f"DP worker {r}", "pipeline.resources.dp_worker", cpus=cpus,
                 gpus=1.0 if gpus else 0.0)] for r in range(n)]


def spawn_workers(cfg: Config, cluster, model_path: str) -> list[Handle[DPLearner]]:
    """``dp.workers`` DP learners in one group (each owns a shard of the private data), each in
    its own bundle of the run's placement group."""
    n = cfg.dp.workers
    slots = [group[0] for group in cluster.place(worker_asks(cfg, cluster.gpus()), cfg.pipeline.placement_strategy)]
    rendezvous = cluster.init_method(slots[0]) if n > 1 else None
    return [cluster.spawn(DPLearner, slot=slots[r], **learner_kwargs(cfg, model_path), rank=r, init_method=rendezvous)
            for r in range(n)]


def save_checkpoint(cluster, workers: list[Handle[DPLearner]], run_dir: Path, name: str, state: dict,
                    keep: int) -> Path:
    """Every worker's part (rank 0: weights, optimizer, accountant; each: its RNG states) and the
    controller's state."""
    return write_checkpoint(run_dir, name, state,
                            lambda d: cluster.get([w.call(DPLearner.save, str(d)) for w in workers]), keep)


def begin(cfg: Config, cluster, learner: Handle[DPLearner], every: Callable, run_dir: Path,
          model_path: str) -> tuple[dict, float, int | None]:
    """The run's summary so far (its setup and start evaluation written) and, on resume, the
    workers restored from the latest checkpoint: (summary, seconds already run, switch step)."""
    info = cluster.get(learner.call(DPLearner.describe))
    summary = read_summary(run_dir) if cfg.resume else {}
    elapsed, switch_step = 0.0, None
    if cfg.resume:
        latest = ckpt.latest_checkpoint(run_dir)
        every(DPLearner.load, str(latest))
        state = ckpt.read_state(latest)
        elapsed, switch_step = state.get("wall_s", 0.0), state.get("switch_step")
        truncate(run_dir, state["iteration"])
    summary.update(method=cfg.dp.method, model=model_path, **{k: info[k] for k in (
        "noise_multiplier", "delta", "sample_rate", "max_grad_norm", "grad_sample_mode", "clipping", "optimizer",
        "switch_state", "started_from", "public_sequences", "private_sequences", "eval_sequences", "canaries",
        "parameters")}, layers=info["layers"])
    if "start" not in summary:
        summary["start"] = cluster.get(learner.call(DPLearner.evaluate))
    write_summary(run_dir, summary)
    return summary, elapsed, switch_step


def run(cfg: Config, run_dir: Path, *, progress: bool = True) -> dict:
    """One DP (or baseline) pre-training run; returns its summary."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    model_path = prepare_model(cfg)
    method = DP_METHODS[cfg.dp.method]
    cluster = cluster_for(cfg.pipeline, concurrent_roles=False)
    started = time.perf_counter()
    summary: dict = {}
    try:
        workers = spawn_workers(cfg, cluster, model_path)
        learner = workers[0]  # rank 0 evaluates, audits and answers for all (the weights are the same)

        def every(method, *args, **kwargs):
            """Call ``method`` on every worker; rank 0's answer."""
            return cluster.get([w.call(method, *args, **kwargs) for w in workers])[0]

        summary, elapsed, switch_step = begin(cfg, cluster, learner, every, run_dir, model_path)
        status = cluster.get(learner.call(DPLearner.status))
        bar = tqdm(total=method.steps(cfg.dp.public_steps, cfg.dp.private_steps), initial=status["steps"],
                   desc=f"{cfg.dp.method}", disable=not progress, unit="step")
        stopped = summary.get("stopped")
        while not cluster.get(learner.call(DPLearner.done)) and stopped is None:
            m: dict = {}
            wall = time.perf_counter()
            with timed(m, "sample"):
                s = every(DPLearner.sample)
            if s["stop"]:
                stopped = s["stop"]
                print(stopped, flush=True)
                break
            with timed(m, "update"):
                u = every(DPLearner.update)
            with timed(m, "account"):
                a = every(DPLearner.account)
            step = a["steps"]
            if s["phase"] == "private" and switch_step is None and len(method.phases) > 1:
                switch_step = summary["switch_step"] = step - 1
                bar.total = switch_step + cfg.dp.private_steps  # the public phase ended early
                bar.refresh()
            m.update(iteration=step, **u, epsilon=a["epsilon"], private_steps=a["private_steps"])
            finishing = cluster.get(learner.call(DPLearner.done))
            if step % cfg.dp.eval_every == 0 or finishing:
                with timed(m, "evaluate"):
                    m.update(cluster.get(learner.call(DPLearner.evaluate, diagnostics=cfg.dp.diagnostics)))
            if step % cfg.checkpoint.every == 0 and not finishing:
                with timed(m, "checkpoint"):
                    save_checkpoint(cluster, workers, run_dir, f"step-{step:06d}",
                                    {"iteration": step, "wall_s": elapsed + time.perf_counter() - started,
                                     "switch_step": switch_step}, cfg.checkpoint.keep)
            with timed(m, "log"):
                m["steps_per_s"] = 1 / max(time.perf_counter() - wall, 1e-9)
                append_metrics(run_dir, m)
            bar.update(1)
            bar.set_postfix(eps=f"{a['epsilon']:.2f}" if a["epsilon"] is not None else "∞",
                            eval=f"{m['eval_loss']:.3f}" if "eval_loss" in m else None)
        bar.close()
        summary.update(stopped=stopped, switch_step=switch_step)
        return finish(cfg, cluster, workers, run_dir, summary, wall=lambda: elapsed + time.perf_counter() - started)
    except NonFiniteError as e:  # a run that diverged states no ε: its summary names the step instead
        summary.update(diverged={"step": e.step, "error": str(e)})
        write_summary(run_dir, summary)
        latest = ckpt.latest_checkpoint(run_dir)
        raise NonFiniteError(f"{e} (the last checkpoint is {latest.name if latest else 'none'})", step=e.step,
                             applied=e.applied) from None
    finally:
        cluster.shutdown()


def finish(cfg: Config, cluster, workers: list[Handle[DPLearner]], run_dir: Path, summary: dict, *,
           wall: Callable[[], float]) -> dict:
    """The final evaluation, the audit and the final checkpoint, in the summary (``wall()``: the
    run's seconds so far, over every invocation)."""
    learner = workers[0]
    status = cluster.get(learner.call(DPLearner.status))
    final = cluster.get(learner.call(DPLearner.evaluate))
    audit = cluster.get(learner.call(DPLearner.audit)) if cfg.dp.canaries else None
    final.update(epsilon=status["epsilon"], audit_eps_lower=audit["eps_lower"] if audit else None,
                 steps=status["steps"], private_steps=status["private_steps"])
    summary["wall_s"] = wall()
    save_checkpoint(cluster, workers, run_dir, "final", {"iteration": status["steps"], "wall_s": summary["wall_s"],
                                                         "switch_step": summary["switch_step"]}, cfg.checkpoint.keep)
    summary.update(final=final, audit=audit, final_policy=str((run_dir / "checkpoints" / "final" / "policy").resolve()))
    summary.pop("diverged", None)  # (resumed from a checkpoint before the step that diverged)
    write_summary(run_dir, summary)
    return summary

