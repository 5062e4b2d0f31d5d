"""The policy a self-play run starts from: a given checkpoint, or the tiny model warm-started
by SFT on the task's demonstrations. Both the tiny model and the warm start are cached on disk
under a hash of everything that determines them, so reruns and tests skip the work."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np

from framework.config import Config
from framework.models import answer_ids, build_tiny_model, default_cache_dir


def sft_pairs(tokenizer, demos) -> tuple[list[list[int]], list[list[int]]]:
    """(prompt ids, response ids) of each demonstration, cut where the chat template puts the answer."""
    pairs = [answer_ids(tokenizer, d.messages, d.response) for d in demos]
    return [p for p, _ in pairs], [r for _, r in pairs]


def warm_start_demonstrations(cfg: Config, task):
    """What the warm start learns from: ``demos.path`` if given, else the task's own
    demonstrations (with ``demos.corruption``)."""
    from framework.demos import demonstrations_for

    return demonstrations_for(dataclasses.replace(cfg, demos=dataclasses.replace(
        cfg.demos, count=cfg.warm_start.demonstrations)), task)


def prepare_policy(cfg: Config, task, *, progress: bool = True) -> str:
    """Directory of the starting policy (built and warm-started if needed)."""
    cache = Path(cfg.cache_dir) if cfg.cache_dir else default_cache_dir()
    if cfg.model.path:
        base = cfg.model.path
    else:
        base = str(build_tiny_model(cfg.model.tiny, task.tokenizer_corpus(cfg.seed), seed=cfg.seed, cache_dir=cache))
    w = cfg.warm_start
    if w.steps == 0:
        return base
    what = [base, asdict(cfg.task), asdict(w), cfg.seed, "v1"]
    if cfg.demos.path or cfg.demos.corruption:  # (default demonstrations keep their old cache entries)
        what.append([cfg.demos.path, cfg.demos.corruption])
    key = hashlib.sha256(json.dumps(what).encode()).hexdigest()[:16]
    out = cache / "warm" / key
    if (out / "policy" / "config.json").exists():
        return str(out / "policy")
    _sft(base, warm_start_demonstrations(cfg, task), w, cfg.seed, out, progress)
    return str(out / "policy")


def _sft(base: str, demos, w, seed: int, out: Path, progress: bool) -> None:
    import os

    from tqdm.auto import tqdm

    from actors.learner import Learner
    from framework.algorithms import collate

    learner = Learner(model_path=base, lr=w.lr, threads=os.cpu_count() or 1, seed=seed)
    prompts, responses = sft_pairs(learner.tokenizer, demos)
    rng = np.random.default_rng([seed, 7])
    pad = learner.tokenizer.pad_token_id
    with tqdm(range(w.steps), desc="warm start (SFT)", disable=not progress, unit="step") as bar:
        for step in bar:
            idx = rng.choice(len(prompts), size=min(w.batch_size, len(prompts)), replace=False)
            loss = learner.sft_step(collate([prompts[i] for i in idx], [responses[i] for i in idx], pad_id=pad))
            if step % 50 == 0:
                bar.set_postfix(loss=f"{loss:.3f}")
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    learner.save(str(tmp))
    (tmp / "optimizer.json").unlink()  # the warm start is a policy, not a resumable run
    (tmp / "optimizer.safetensors").unlink()
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
