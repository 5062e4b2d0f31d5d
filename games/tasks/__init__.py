"""Built-in multi-turn tasks: synthetic, generated offline from a seed, with programmatic judges,
and dialogues read from MT-Bench-101-format files. Every task follows the ``Task`` protocol."""

from __future__ import annotations

import dataclasses
from typing import ClassVar, Protocol

from framework.errors import InputError
from games.conversation import Conversation, Episode
from games.tasks.mtbench101 import MTBench101Task
from games.tasks.running_sum import RunningSumTask


class Task(Protocol):
    """What the jobs need from a task. Optional capabilities are declared, never probed:

    - ``rule_judge``: ``judge()`` returns the task's programmatic judge (``judge.kind=rule``);
    - ``response_classes``: answers fall into ``class_names`` that the judge distinguishes,
      ``classify(state, answer)`` names one and ``exploitability(counts)`` is exact per state,
      ``exploitability_parts(counts)`` its split into named parts that sum to it, and
      ``class_matrix`` the (C, C) P(class i ≻ class j) of the judge;
      ``correct_classes`` and ``malformed_classes`` index the right and the unreadable answers;
    - ``heldout_answers``: ``heldout_demonstrations(n, seed)`` gives right answers at held-out states.

    ``demonstrations(n, seed, corruption)`` raises an ``InputError`` for a share of wrong answers
    the task cannot make.
    """

    name: ClassVar[str]
    rule_judge: ClassVar[bool]
    response_classes: ClassVar[bool]
    heldout_answers: ClassVar[bool]

    def episodes(self, split: str, n: int, seed: int) -> list[Episode]:
        """``n`` conversations of a split ("train" or "heldout") to play, reproducible from seed."""

    def heldout_states(self, n: int, seed: int) -> list[Conversation]:
        """Every turn's state of ``n`` held-out conversations."""

    def demonstrations(self, n: int, seed: int, corruption: float = 0.0) -> list[Conversation]:
        """Training conversations with demonstrated assistant turns."""

    def tokenizer_corpus(self, seed: int = 0) -> list[str]:
        """Text to train a tokenizer on."""


TASKS: dict[str, type] = {"running_sum": RunningSumTask, "mtbench101": MTBench101Task}


def get_task(name: str, **kwargs) -> Task:
    """A task by name; the error lists the valid names. Settings a task does not use must be unset."""
    if name not in TASKS:
        raise InputError(f"task.name: unknown task {name!r}; choose from {sorted(TASKS)}")
    accepted = {f.name for f in dataclasses.fields(TASKS[name]) if f.init}
    if kwargs.get("path") is not None and "path" not in accepted:
        raise InputError(f"task.path: task {name!r} reads no file")
    return TASKS[name](**{k: v for k, v in kwargs.items() if k in accepted})
