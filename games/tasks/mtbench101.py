"""``mtbench101``: multi-turn dialogues in the MT-Bench-101 JSONL format, as a scripted-user task.

One dialogue per line::

    {"id": 7, "task": "CM", "history": [{"user": "…", "bot": "…"}, {"user": "…", "bot": "…"}]}

``history`` is required (a non-empty list of turns, each with a non-empty ``user`` string and
an optional ``bot`` string: the reference answer); ``id`` (int or string, default the line
number) and ``task`` (the MT-Bench-101 ability code) are optional; other keys are kept out of the
way. The user turns are the script of the conversation game (DESIGN §2.2); the ``bot`` answers
are demonstrations for the warm start and the earlier answers of held-out evaluation states (as
MT-Bench-101 evaluates: golden context, model answers the last turn).

This task has no built-in judge: run it with ``judge.kind=custom judge.target=module:Class``. Its
answers do not fall into finitely many classes, so no exploitability is reported.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from framework.errors import InputError, excerpt
from games.conversation import Conversation, Episode, ScriptedUser
from games.jsonl import read_jsonl


@dataclass(frozen=True)
class Dialogue:
    id: str
    task: str
    users: tuple[str, ...]
    bots: tuple[str | None, ...]


def _fail(path, line: int, where: str, expected: str, got) -> InputError:
    return InputError(f"{path}:{line}: {where}: expected {expected}, got {excerpt(got)}")


def load_mtbench101(path: str | Path) -> list[Dialogue]:
    """Every dialogue of an MT-Bench-101-format JSONL file; a malformed line raises an error that
    names the file, the line and the field (nothing is skipped silently)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise InputError(f"task.path: {path} does not exist")
    dialogues, ids = [], set()
    for n, row in read_jsonl(path):
        if not isinstance(row, dict):
            raise _fail(path, n, "line", "a JSON object", row)
        history = row.get("history")
        if not isinstance(history, list) or not history:
            raise _fail(path, n, "field 'history'", "a non-empty list of turns", history)
        users, bots = [], []
        for t, turn in enumerate(history):
            if not isinstance(turn, dict):
                raise _fail(path, n, f"field 'history[{t}]'", "an object with 'user' (and 'bot')", turn)
            user, bot = turn.get("user"), turn.get("bot")
            if not isinstance(user, str) or not user.strip():
                raise _fail(path, n, f"field 'history[{t}].user'", "a non-empty string", user)
            if bot is not None and not isinstance(bot, str):
                raise _fail(path, n, f"field 'history[{t}].bot'", "a string", bot)
            users.append(user)
            bots.append(bot)
        ident = row.get("id", n)
        if not isinstance(ident, (int, str)) or isinstance(ident, bool):
            raise _fail(path, n, "field 'id'", "an integer or a string", ident)
        if str(ident) in ids:
            raise _fail(path, n, "field 'id'", "an id not used by an earlier line", ident)
        ids.add(str(ident))
        task = row.get("task", "")
        if not isinstance(task, str):
            raise _fail(path, n, "field 'task'", "a string", task)
        dialogues.append(Dialogue(str(ident), task, tuple(users), tuple(bots)))
    if not dialogues:
        raise InputError(f"task.path: {path} holds no dialogue")
    return dialogues


@dataclass(frozen=True)
class MTBench101Task:
    """Scripted dialogues from an MT-Bench-101-format file (see the module docstring)."""

    path: str | None = None
    turns: int = 3  # at most this many user turns of each dialogue are played (horizon H)
    heldout_every: int = 5  # dialogues whose id hash is 0 mod heldout_every are held out
    dialogues: tuple = field(default=(), init=False, repr=False, compare=False)

    name = "mtbench101"
    rule_judge = False  # the Task protocol's capabilities: bring a judge (judge.kind=custom)
    response_classes = False
    heldout_answers = False

    def __post_init__(self):
        if not self.path:
            raise InputError("task.path: task mtbench101 needs the path of an MT-Bench-101-format JSONL file")
        if self.turns < 1:
            raise InputError(f"task.turns must be ≥ 1, got {self.turns}")
        object.__setattr__(self, "dialogues", tuple(load_mtbench101(self.path)))
        for split in ("train", "heldout"):
            if not self._split(split):
                raise InputError(f"task.path: {self.path} has no {split} dialogue "
                                 f"({len(self.dialogues)} in all, 1 in {self.heldout_every} held out by id hash)")

    def _heldout(self, d: Dialogue) -> bool:
        digest = hashlib.sha256(d.id.encode()).digest()
        return int.from_bytes(digest[:4], "little") % self.heldout_every == 0

    def _split(self, split: str) -> list[Dialogue]:
        if split not in ("train", "heldout"):
            raise InputError(f"split must be 'train' or 'heldout', got {split!r}")
        return [d for d in self.dialogues if self._heldout(d) == (split == "heldout")]

    def _draw(self, split: str, n: int, seed: int) -> list[Dialogue]:
        """n dialogues of a split: a seeded permutation, repeated when n exceeds the split."""
        pool = self._split(split)
        rng = np.random.default_rng([seed, 0 if split == "train" else 1])
        order = np.concatenate([rng.permutation(len(pool)) for _ in range(-(-n // len(pool)))])
        return [pool[i] for i in order[:n]]

    def episodes(self, split: str, n: int, seed: int) -> list[Episode]:
        return [Episode(f"{split}-{seed}-{i}-{d.id}", ScriptedUser(d.users[: self.turns]))
                for i, d in enumerate(self._draw(split, n, seed))]

    def demonstrations(self, n: int, seed: int, corruption: float = 0.0) -> list[Conversation]:
        """Training dialogues with every reference answer present (up to the first missing one)."""
        if corruption:
            raise InputError(f"demos.corruption: task {self.name!r} cannot corrupt its demonstrations")
        out = []
        for d in self._draw("train", n, seed + 2):
            messages = []
            for user, bot in zip(d.users[: self.turns], d.bots):
                if bot is None:
                    break
                messages += [{"role": "user", "content": user}, {"role": "assistant", "content": bot}]
            if messages:
                out.append(messages)
        if not out:
            raise InputError(f"task.path: {self.path} has no reference answers ('bot') to warm-start from; "
                             "set warm_start.steps=0 or add them")
        return out

    def heldout_states(self, n: int, seed: int) -> list[Conversation]:
        """Every turn's state of up to ``n`` held-out dialogues, earlier answers being the references."""
        pool = self._split("heldout")
        states = []
        for d in pool[:n]:
            messages: list = []
            for user, bot in zip(d.users[: self.turns], d.bots):
                messages = messages + [{"role": "user", "content": user}]
                states.append(messages)
                if bot is None:
                    break
                messages = messages + [{"role": "assistant", "content": bot}]
        return states

    def tokenizer_corpus(self, seed: int = 0) -> list[str]:
        return [" ".join([*d.users, *(b for b in d.bots if b)]) for d in self.dialogues]
