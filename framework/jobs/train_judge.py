"""``job: train_judge``: a reward model or a pairwise preference model trained on preference data,
then measured as the run will use it — loaded back from ``<run>/judge`` by ``judge.kind=...``
and asked the held-out pairs through the host (both orders for a pairwise model).

Data (``train_judge.data``): a self-play run directory — each comparison of two answers at a state
(``comparisons/``, the answers' texts from ``rollouts/``) with the judge's P(a ≻ b) as a soft
label, which is how an expensive judge is distilled into a cheap one — or a JSONL / Parquet file
of rows ``{"messages" | "prompt", "chosen", "rejected"}`` (P = 1) or ``{"messages" | "prompt",
"a", "b", "probability"}``. States (conversations), not pairs, are split into training and held
out, so no held-out state was seen in training.

Losses: the reward model r(s, y) takes soft Bradley–Terry steps −[p log σ(r_a − r_b) + (1 − p)
log σ(r_b − r_a)]; the pairwise model reads ``games.judges.models.PAIR_FORMAT`` and takes binary
cross-entropy steps on σ(logit) against p, each pair in both orders (a model of P(a ≻ b) that sees
the order must learn that swapping the answers swaps the label).

Reported (``summary.json``, per epoch in ``metrics.jsonl``): held-out pair accuracy (the side the
judge prefers is the label's side; pairs labelled ½ left out), expected calibration error over 10
bins and the Brier score against the soft labels, and the position-flip rate.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from actors.judge import PreferenceJudge
from framework.config import Config
from framework.errors import InputError
from framework.jobs.rundir import append_metrics, preflight as check_run_dir, write_summary
from framework.jobs.warmstart import prepare_policy
from framework.models import check_model_path
from games.jsonl import read_jsonl
from games.judges.models import render_answer, render_pair
from games.tasks import get_task


@dataclasses.dataclass(frozen=True)
class Preference:
    """One labelled pair: P(a ≻ b) = ``probability`` at ``state``."""

    state: str  # JSON chat messages ending with the user turn
    a: str
    b: str
    probability: float


# --- reading preference data -------------------------------------------------------------------
def _messages(where: str, row: dict) -> list[dict]:
    if "messages" in row:
        messages = row["messages"]
        if not (isinstance(messages, list) and messages and all(
                isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
                for m in messages)):
            raise InputError(f"{where}: 'messages' must be a non-empty list of {{'role', 'content'}} strings")
        if messages[-1]["role"] != "user":
            raise InputError(f"{where}: 'messages' must end with the user turn the answers reply to, "
                             f"not a {messages[-1]['role']!r} message")
        return [{"role": m["role"], "content": m["content"]} for m in messages]
    if isinstance(row.get("prompt"), str):
        return [{"role": "user", "content": row["prompt"]}]
    raise InputError(f"{where}: needs 'messages' (a chat ending with the user turn) or 'prompt' (a string)")


def _answer(where: str, row: dict, name: str) -> str:
    value = row.get(name)
    if isinstance(value, list) and value and isinstance(value[-1], dict):  # a chat: its last message
        value = value[-1].get("content")
    if not isinstance(value, str):
        raise InputError(f"{where}: {name!r} must be a string (the answer), got {type(value).__name__}")
    return value


def preference_row(where: str, row) -> Preference:
    """One row of a user's file, checked field by field (``where``: file and row)."""
    if not isinstance(row, dict):
        raise InputError(f"{where}: expected an object with 'messages' or 'prompt' and the answers")
    state = json.dumps(_messages(where, row))
    if "chosen" in row or "rejected" in row:
        return Preference(state, _answer(where, row, "chosen"), _answer(where, row, "rejected"), 1.0)
    if "a" in row and "b" in row:
        p = row.get("probability")
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p <= 1.0:
            raise InputError(f"{where}: 'probability' must be a number in [0, 1] (P(a ≻ b)), got {p!r}")
        return Preference(state, _answer(where, row, "a"), _answer(where, row, "b"), float(p))
    raise InputError(f"{where}: needs 'chosen' and 'rejected', or 'a', 'b' and 'probability'")


def _from_run(run_dir: Path) -> list[Preference]:
    """A self-play run's comparisons of two answers at one state, with the answers' texts."""
    import pyarrow.parquet as pq

    def rows(folder: str, columns: list[str]) -> list[dict]:
        return [r for path in sorted((run_dir / folder).glob("*.parquet"))
                for r in pq.read_table(path, columns=columns).to_pylist()]

    answers = {(r["iteration"], r["conversation_id"], r["turn"], r["sample"]): r
               for r in rows("rollouts", ["iteration", "conversation_id", "turn", "sample", "branch_of", "messages",
                                          "response"]) if r["branch_of"] == -1}
    out = []
    for c in rows("comparisons", ["iteration", "conversation_id", "turn", "a", "b", "probability", "opponent",
                                  "branch_of"]):
        a = answers.get((c["iteration"], c["conversation_id"], c["turn"], c["a"]))
        b = answers.get((c["iteration"], c["conversation_id"], c["turn"], c["b"]))
        if c["opponent"] == "self" and c["branch_of"] == -1 and a is not None and b is not None:
            out.append(Preference(a["messages"], a["response"], b["response"], float(c["probability"])))
    return out


def read_preferences(path: str) -> list[Preference]:
    """The labelled pairs of ``train_judge.data`` (module docstring); errors name the file and row."""
    where = Path(path).expanduser()
    if where.is_dir():
        if not (where / "comparisons").is_dir():
            raise InputError(f"train_judge.data: {path} is a directory without comparisons/ (expected a self-play "
                             f"run directory, or a JSONL / Parquet file)")
        prefs = _from_run(where)
    elif not where.is_file():
        raise InputError(f"train_judge.data: {path} does not exist")
    elif where.suffix == ".jsonl":
        prefs = [preference_row(f"{path}:{n}", row) for n, row in read_jsonl(where)]
    elif where.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(where).to_pylist()
        except (pa.ArrowException, OSError) as e:
            raise InputError(f"train_judge.data: {path} is not a readable Parquet file ({e})") from None
        prefs = [preference_row(f"{path} row {n}", row) for n, row in enumerate(table, start=1)]
    else:
        raise InputError(f"train_judge.data: {path} must be a run directory, a .jsonl or a .parquet file")
    if not prefs:
        raise InputError(f"train_judge.data: {path} holds no preference pairs")
    return prefs


def split(prefs: list[Preference], held_out: float, seed: int) -> tuple[list[Preference], list[Preference]]:
    """Training and held-out pairs, by state: a held-out state has none of its pairs in training."""
    states = sorted({p.state for p in prefs})
    if len(states) < 2:
        raise InputError(f"train_judge.data: the pairs come from {len(states)} state(s); held-out pairs need ≥ 2")
    order = np.random.default_rng([seed, 11]).permutation(len(states))
    held = {states[i] for i in order[:max(1, round(held_out * len(states)))]}
    return [p for p in prefs if p.state not in held], [p for p in prefs if p.state in held]


# --- training ------------------------------------------------------------------------------------
def _base(cfg: Config) -> str:
    if cfg.train_judge.base:
        return cfg.train_judge.base
    return prepare_policy(cfg, get_task(**dataclasses.asdict(cfg.task)), progress=False)


def preflight(cfg: Config, run_dir: Path) -> None:
    if cfg.resume:
        raise InputError("resume=true: job=train_judge keeps no checkpoints (it is short); start a new run")
    check_run_dir(cfg, run_dir, length_key=None)
    if cfg.train_judge.base:
        check_model_path(cfg.train_judge.base, "train_judge.base")
    train, held = split(read_preferences(cfg.train_judge.data), cfg.train_judge.held_out, cfg.seed)
    if not train:
        raise InputError("train_judge.data: no pair is left for training after holding out states")


def _inputs(kind: str, tokenizer, prefs: list[Preference]) -> tuple[list[str], list[str] | None, list[float]]:
    """What the model reads: (texts of a, texts of b, labels) for a reward model; (texts, None,
    labels) with each pair in both orders for a pairwise model."""
    states = [json.loads(p.state) for p in prefs]
    labels = [p.probability for p in prefs]
    if kind == "reward_model":
        return ([render_answer(tokenizer, s, p.a) for s, p in zip(states, prefs)],
                [render_answer(tokenizer, s, p.b) for s, p in zip(states, prefs)], labels)
    return ([render_pair(s, p.a, p.b) for s, p in zip(states, prefs)] +
            [render_pair(s, p.b, p.a) for s, p in zip(states, prefs)], None, labels + [1 - q for q in labels])


def _loss(model, tokenizer, kind, batch_a, batch_b, labels, max_length):
    import torch
    import torch.nn.functional as F

    def score(texts):
        enc = tokenizer(texts, return_tensors="pt", padding=True, truncation=True, max_length=max_length,
                        add_special_tokens=False)
        return model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits[:, 0]

    p = torch.tensor(labels)
    if kind == "reward_model":
        margin = score(batch_a) - score(batch_b)  # soft Bradley–Terry
        return -(p * F.logsigmoid(margin) + (1 - p) * F.logsigmoid(-margin)).mean()
    return F.binary_cross_entropy_with_logits(score(batch_a), p)


def fit(cfg: Config, train: list[Preference], base: str, run_dir: Path, progress: bool, measure) -> Path:
    """Train the judge from ``base`` and save it under ``run_dir/judge``; ``measure(path)`` after
    each epoch returns the held-out metrics logged with its loss."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    t = cfg.train_judge
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(t.threads or os.cpu_count() or 1)
    tokenizer = AutoTokenizer.from_pretrained(base)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side, tokenizer.truncation_side = "right", "left"
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the fresh head's "newly initialized weights" notice is expected
    model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=1)
    hf_logging.set_verbosity(verbosity)
    model.config.pad_token_id = tokenizer.pad_token_id
    texts_a, texts_b, labels = _inputs(t.kind, tokenizer, train)
    rows = len(labels)
    steps = t.epochs * math.ceil(rows / t.batch_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=t.lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 - step / steps)
    rng = np.random.default_rng([cfg.seed, 12])
    out = run_dir / "judge"
    with tqdm(total=steps, desc=f"train_judge ({t.kind})", disable=not progress, unit="step") as bar:
        for epoch in range(t.epochs):
            model.train()
            losses = []
            order = rng.permutation(rows)
            for i in range(0, rows, t.batch_size):
                idx = order[i:i + t.batch_size]
                loss = _loss(model, tokenizer, t.kind, [texts_a[j] for j in idx],
                             None if texts_b is None else [texts_b[j] for j in idx], [labels[j] for j in idx],
                             t.max_length)
                optimizer.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                schedule.step()
                losses.append(float(loss.detach()))
                bar.update(1)
            model.save_pretrained(out)
            tokenizer.save_pretrained(out)
            (out / "judge.json").write_text(json.dumps({"kind": t.kind, "base": str(base)}, indent=1))
            held = measure(out)
            append_metrics(run_dir, {"epoch": epoch + 1, "loss": float(np.mean(losses)), **held})
            bar.set_postfix(loss=f"{np.mean(losses):.3f}", held_out_accuracy=f"{held['held_out_accuracy']:.3f}")
    return out


# --- measuring -----------------------------------------------------------------------------------
def calibration(predicted: np.ndarray, labels: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error: Σ_bins (n_bin / n) |mean predicted − mean label| over equal-width
    bins of the predicted P(a ≻ b)."""
    which = np.minimum((predicted * bins).astype(int), bins - 1)
    return float(sum(np.sum(which == k) / len(predicted) * abs(predicted[which == k].mean() - labels[which == k].mean())
                     for k in range(bins) if np.any(which == k)))


def measure(cfg: Config, path: Path, held: list[Preference]) -> dict:
    """The saved judge at ``path``, loaded as ``judge.kind`` loads it, on the held-out pairs."""
    t = cfg.train_judge
    judge = PreferenceJudge(kind=t.kind, settings={"path": str(path), "max_length": t.max_length,
                                                   "threads": t.threads or os.cpu_count() or 1})
    verdicts = judge.judge_pairs([json.loads(p.state) for p in held], [p.a for p in held], [p.b for p in held])
    predicted = np.array(verdicts.probabilities, dtype=float)
    labels = np.array([p.probability for p in held])
    decided = labels != 0.5
    right = np.where(predicted == 0.5, 0.5, (predicted > 0.5) == (labels > 0.5))
    return {"held_out_accuracy": float(right[decided].mean()) if decided.any() else None,
            "held_out_ece": calibration(predicted, labels), "held_out_brier": float(np.mean((predicted - labels) ** 2)),
            "held_out_position_flip": verdicts.metrics()["judge_position_flip"]}


def run(cfg: Config, run_dir: Path, *, progress: bool = True) -> dict:
    run_dir = Path(run_dir)
    run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    start = time.perf_counter()
    train, held = split(read_preferences(cfg.train_judge.data), cfg.train_judge.held_out, cfg.seed)
    base = _base(cfg)
    path = fit(cfg, train, base, run_dir, progress, lambda out: measure(cfg, out, held))
    final = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])
    summary = {"kind": cfg.train_judge.kind, "judge_path": str(path.resolve()), "base": str(base),
               "train_pairs": len(train), "held_out_pairs": len(held),
               "held_out_states": len({p.state for p in held}), **{k: v for k, v in final.items() if k != "epoch"},
               "epochs": cfg.train_judge.epochs, "wall_s": time.perf_counter() - start}
    write_summary(run_dir, summary)
    return summary


def finish(summary: dict, run_dir: Path) -> None:
    accuracy = summary["held_out_accuracy"]
    print(f"{summary['kind']} saved to {summary['judge_path']}: held-out accuracy "
          f"{'n/a' if accuracy is None else f'{accuracy:.3f}'} on {summary['held_out_pairs']} pairs, ECE "
          f"{summary['held_out_ece']:.3f}; use it with judge.kind={summary['kind']} judge.path={summary['judge_path']}")
