"""The warm start, the first stage of every self-play run: the policy it starts from is a given
checkpoint, or the tiny model warm-started by SFT on the task's demonstrations (a ``Learner`` in
this process). Both the tiny model and the warm start are cached on disk under a hash of
everything that determines them, so reruns and tests skip the work."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from actors.learner import Learner
from framework.batching import collate
from framework.config import Config, WarmStartConfig
from framework.models import answer_ids, build_tiny_model, default_cache_dir
from games.demonstrations import Demonstration, demonstrations
from games.tasks import Task


def sft_pairs(tokenizer, demos) -> tuple[list[list[int]], list[list[int]]]:
    """(prompt ids, response ids) of each demonstration, cut where the chat template puts the answer."""
    pairs = [answer_ids(tokenizer, d.messages, d.response) for d in demos]
    return [p for p, _ in pairs], [r for _, r in pairs]


def prepare_policy(cfg: Config, task: Task, *, progress: bool = True) -> str:
    """Directory of the starting policy (built and warm-started if needed)."""
    cache = Path(cfg.cache_dir) if cfg.cache_dir else default_cache_dir()
    w = cfg.warm_start
    seed = cfg.seed if w.seed is None else w.seed
    if cfg.model.path:
        base = cfg.model.path
    else:
        base = str(build_tiny_model(cfg.model.tiny, task.tokenizer_corpus(seed), seed=seed, cache_dir=cache))
    if w.steps == 0:
        return base
    what = [base, asdict(cfg.task), w.cache_key(), seed, "v1"]
    if cfg.demos.path or cfg.demos.corruption:  # (default demonstrations keep their old cache entries)
        what.append([cfg.demos.path, cfg.demos.corruption])
    key = hashlib.sha256(json.dumps(what).encode()).hexdigest()[:16]
    out = cache / "warm" / key
    if (out / "policy" / "config.json").exists():
        return str(out / "policy")
    # what the warm start learns from: demos.path if given, else the task's own (demos.corruption)
    demos = demonstrations(task, path=cfg.demos.path, count=w.demonstrations, corruption=cfg.demos.corruption,
                           seed=seed)
    _sft(base, demos, w, seed, out, progress)
    return str(out / "policy")


def warm_start_record(policy: str | Path) -> dict:
    """How a cached warm start was trained (``warm_start.json`` beside its policy): steps taken,
    why it stopped and, with ``until=plateau``, the held-out NLL at each check and the steps where
    the learning rate dropped (with the new rate); {} if unknown."""
    path = Path(policy).parent / "warm_start.json"
    return json.loads(path.read_text()) if path.exists() else {}


def heldout_nll(learner: Learner, prompts: list, responses: list, *, batch_size: int = 256) -> float:
    """Mean NLL per answer (summed over its tokens) of held-out demonstrations."""
    total = 0.0
    with torch.no_grad():
        for i in range(0, len(prompts), batch_size):
            batch = collate(prompts[i:i + batch_size], responses[i:i + batch_size], pad_id=learner.tokenizer.pad_token_id)
            total -= float(learner.logp(batch).sum())
    return total / len(prompts)


def _sft(base: str, demos: list[Demonstration], w: WarmStartConfig, seed: int, out: Path, progress: bool) -> None:
    learner = Learner(model_path=base, lr=w.lr, threads=os.cpu_count() or 1, seed=seed)
    prompts, responses = sft_pairs(learner.tokenizer, demos)
    plateau = w.until == "plateau"
    if plateau:  # the last tenth is held out: it decides when SFT has converged
        cut = len(prompts) - max(1, len(prompts) // 10)
        held = (prompts[cut:], responses[cut:])
        prompts, responses = prompts[:cut], responses[:cut]
    rng = np.random.default_rng([seed, 7])
    pad = learner.tokenizer.pad_token_id
    record: dict = {"until": w.until, "steps": 0, "stopped": "steps", "heldout_nll": [], "lr_drops": []}
    best, best_state, waited, lr, drops = float("inf"), None, 0, w.lr, w.lr_drops
    with tqdm(range(w.steps), desc="warm start (SFT)", disable=not progress, unit="step") as bar:
        for step in bar:
            idx = rng.choice(len(prompts), size=min(w.batch_size, len(prompts)), replace=False)
            loss = learner.sft_step(collate([prompts[i] for i in idx], [responses[i] for i in idx], pad_id=pad))
            record["steps"] = step + 1
            if step % 50 == 0:
                bar.set_postfix(loss=f"{loss:.3f}")
            if plateau and (step + 1) % w.eval_every == 0:
                nll = heldout_nll(learner, *held)
                record["heldout_nll"].append([step + 1, nll])
                bar.set_postfix(loss=f"{loss:.3f}", heldout_nll=f"{nll:.4f}")
                if nll < best - w.min_delta:
                    best, waited = nll, 0
                    best_state = {k: v.detach().clone() for k, v in learner.module.state_dict().items()}
                    record["best_step"] = step + 1
                else:
                    waited += 1
                    if waited >= w.patience and drops:  # anneal: back to the best, on at a lower rate
                        drops, waited, lr = drops - 1, 0, lr * w.lr_drop_factor
                        learner.module.load_state_dict(best_state)
                        for group in learner.optimizer.param_groups:
                            group["lr"] = lr
                        record["lr_drops"].append([step + 1, lr])
                    elif waited >= w.patience:
                        record["stopped"] = "plateau"
                        break
    if best_state is not None:  # the weights of the best check
        learner.module.load_state_dict(best_state)
        record["heldout_nll_best"] = best
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    learner.save(str(tmp))
    (tmp / "optimizer.json").unlink()  # the warm start is a policy, not a resumable run
    (tmp / "optimizer.safetensors").unlink()
    (tmp / "warm_start.json").write_text(json.dumps(record, indent=1))
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
