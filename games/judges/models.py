"""Model judges: a scalar reward model and a general pairwise preference model, both Hugging Face
sequence classifiers with one output (a local directory or a hub id: ``judge.path``).

``reward_model`` (Bradley–Terry): each answer is rendered after its conversation with the model's
chat template and scored alone, r = the head's output at the last real token; P(a ≻ b) =
σ((r_a − r_b)/T). It is antisymmetric by construction, so one order is enough. An RFT run's
checkpoints hold such a model (``checkpoints/<it>/reward_model``).

``pairwise_model`` (general, not Bradley–Terry: it can represent a cycle a ≻ b ≻ c ≻ a): reads the
conversation and both answers in one sequence (PairRM / RLHFlow pair-pm style) and outputs
P(a ≻ b) = σ(logit). The documented format, ``PAIR_FORMAT``, is

    [CONTEXT] user: 3+4 assistant: 7! user: +2 [RESPONSE A] 9. [RESPONSE B] 9!

(earlier turns as ``role: content`` joined by spaces). Such a model sees the order, so the host
asks both orders and keeps their disagreement as a metric. ``job: train_judge`` trains either
kind from preference data and saves it in this format (``judge.json`` names the kind).

Both score every distinct (conversation, answer) or (conversation, a, b) text once per call, in
batches of ``batch_size`` sorted by length, on the device this process was given (its first
visible GPU, else the CPU); sequences longer than ``max_length`` keep their end (the answers).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from framework.errors import InputError

PAIR_FORMAT = "[CONTEXT] {context} [RESPONSE A] {a} [RESPONSE B] {b}"


def render_context(conversation: list[dict]) -> str:
    """``role: content`` of every message, joined by spaces (the pairwise format's context)."""
    return " ".join(f"{m['role']}: {m['content']}" for m in conversation)


def render_pair(conversation: list[dict], a: str, b: str) -> str:
    """The text a pairwise model reads for P(a ≻ b)."""
    return PAIR_FORMAT.format(context=render_context(conversation), a=a, b=b)


def render_answer(tokenizer, conversation: list[dict], answer: str) -> str:
    """The text a reward model scores: the conversation and the answer, in the model's chat
    template (without one: the pairwise format's ``role: content`` lines)."""
    messages = [*conversation, {"role": "assistant", "content": answer}]
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False)
    return render_context(messages)


def load_classifier(path: str, *, kind: str):
    """(model, tokenizer) of the one-output sequence classifier at ``path``, for ``kind``'s errors."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    where = Path(path)
    if where.exists() and not (where / "config.json").exists():
        raise InputError(f"judge.path: {path} has no config.json (a Hugging Face checkpoint directory "
                         f"for judge.kind={kind})")
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForSequenceClassification.from_pretrained(path)
    except (OSError, ValueError) as e:
        raise InputError(f"judge.path: cannot load {path!r} as a sequence classifier for judge.kind={kind} "
                         f"({str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__})") from None
    if model.config.num_labels != 1:
        raise InputError(f"judge.path: {path} has {model.config.num_labels} outputs; judge.kind={kind} needs "
                         f"a classifier with one (num_labels=1)")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.config.pad_token_id = tokenizer.pad_token_id  # the head reads each row's last real token
    return model, tokenizer


class Classifier:
    """A one-output sequence classifier that scores texts in length-sorted batches."""

    def __init__(self, path: str, *, kind: str, batch_size: int = 64, max_length: int = 512, threads: int = 1):
        import torch

        torch.set_num_threads(threads)
        self.model, self.tokenizer = load_classifier(path, kind=kind)
        self.device = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
        self.model.to(self.device).eval().requires_grad_(False)
        positions = getattr(self.model.config, "max_position_embeddings", None) or max_length
        self.max_length, self.batch_size = min(max_length, positions), batch_size
        self.tokenizer.truncation_side = "left"  # keep the answers
        self.tokenizer.padding_side = "right"

    def scores(self, texts: list[str]) -> list[float]:
        """The head's output for each text (each distinct text computed once)."""
        import torch

        distinct = sorted(set(texts), key=len)
        out: dict[str, float] = {}
        for i in range(0, len(distinct), self.batch_size):
            chunk = distinct[i:i + self.batch_size]
            enc = self.tokenizer(chunk, return_tensors="pt", padding=True, truncation=True,
                                 max_length=self.max_length, add_special_tokens=False).to(self.device)
            with torch.no_grad():
                logits = self.model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits
            out.update(zip(chunk, logits[:, 0].float().tolist()))
        return [out[t] for t in texts]


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


class RewardModelJudge:
    """P(a ≻ b) = σ((r_a − r_b)/T) from a scalar reward model."""

    antisymmetric = True

    def __init__(self, path: str, *, temperature: float = 1.0, **sizes):
        self.classifier, self.temperature = Classifier(path, kind="reward_model", **sizes), temperature

    def rewards(self, conversations: list[list[dict]], answers: list[str]) -> list[float]:
        tok = self.classifier.tokenizer
        return self.classifier.scores([render_answer(tok, c, y) for c, y in zip(conversations, answers)])

    def compare(self, conversations, a, b) -> list[float]:
        r = self.rewards(conversations * 2, a + b)  # one pass over both sides' distinct answers
        n = len(a)
        return [_sigmoid((r[i] - r[n + i]) / self.temperature) for i in range(n)]


class PairwiseModelJudge:
    """P(a ≻ b) = σ(logit) of a model reading ``PAIR_FORMAT`` (one order per call)."""

    antisymmetric = False

    def __init__(self, path: str, **sizes):
        self.classifier = Classifier(path, kind="pairwise_model", **sizes)

    def compare(self, conversations, a, b) -> list[float]:
        logits = self.classifier.scores([render_pair(c, x, y) for c, x, y in zip(conversations, a, b)])
        return [_sigmoid(z) for z in logits]


def _kind_of(path: str) -> str | None:
    """The kind a ``job: train_judge`` output says it is (``judge.json``), if any."""
    marker = Path(path) / "judge.json"
    return json.loads(marker.read_text()).get("kind") if marker.exists() else None


def _check_kind(path: str, kind: str) -> None:
    saved = _kind_of(path)
    if saved is not None and saved != kind:
        raise InputError(f"judge.path: {path} was trained as judge.kind={saved}, not {kind}")


def reward_model_judge(*, path: str, task=None, temperature: float = 1.0, batch_size: int = 64,
                       max_length: int = 512, threads: int = 1) -> RewardModelJudge:
    _check_kind(path, "reward_model")
    return RewardModelJudge(path, temperature=temperature, batch_size=batch_size, max_length=max_length,
                            threads=threads)


def pairwise_model_judge(*, path: str, task=None, batch_size: int = 64, max_length: int = 512,
                         threads: int = 1) -> PairwiseModelJudge:
    _check_kind(path, "pairwise_model")
    return PairwiseModelJudge(path, batch_size=batch_size, max_length=max_length, threads=threads)
