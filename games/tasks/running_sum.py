"""``running_sum``: multi-turn arithmetic with a cyclic (non-transitive) style preference.

The user opens with ``a+b`` (two digits) and each later turn adds or subtracts a digit
(``+c`` / ``-c``). The right answer at turn h is the running total of *all* user turns so far,
so it needs the earlier turns (context). An answer is the number followed by one style mark,
``STYLES = ("!", ".", "~")``, e.g. ``12!``.

The rule judge mixes a transitive and a non-transitive part (w = ``correctness_weight``):

    P(a ≻ b) = w · (½ + ½ (c_a − c_b)) + (1 − w) · P_style(s_a, s_b)

with c = 1 when the number is the running total, and P_style = ½ + A on the three styles, A the
asymmetric 3-cycle ("!" beats "." by m₀, "." beats "~" by m₁, "~" beats "!" by m₂). An answer
that does not parse has style "none", which loses to every styled answer for sure. So P + Pᵀ = 1
and no Bradley–Terry reward can represent P.

Responses fall into 8 classes, (correct?) × (style or none), and the judge depends only on them:
the exploitability of a policy at a state is max_c Σ_c' d(c') P(c, c') − ½ over its class
distribution d, a best response being any correct answer with the best style. It splits exactly
into a correctness part w·(1 − p)/2 (p the share of right answers) and a style part, the cycle's
(``exploitability_parts``).

Equilibrium: always correct, styles in proportion (m₁, m₂, m₀); for the default margins
(0.1, 0.2, 0.4) that is (2/7, 4/7, 1/7) — not uniform. Demonstrations use uniform styles, which
a best response exploits by (1 − w)·(m₂ − m₁)/3.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

import numpy as np

from framework.errors import InputError
from games.conversation import Conversation, Episode, ScriptedUser

STYLES = ("!", ".", "~")
_ANSWER = re.compile(r"^\s*(-?\d+)\s*([!.~])\s*$")
_FIRST = re.compile(r"^\s*(\d+)\s*\+\s*(\d+)\s*$")
_LATER = re.compile(r"^\s*([+-])\s*(\d+)\s*$")


def running_total(messages: Conversation) -> int:
    """The correct answer to the last user turn: the total over every user turn so far."""
    users = [m["content"] for m in messages if m["role"] == "user"]
    if not users:
        raise InputError("running_sum: the conversation has no user turn")
    first = _FIRST.match(users[0])
    if not first:
        raise InputError(f"running_sum: first user turn {users[0]!r} is not 'a+b'")
    total = int(first[1]) + int(first[2])
    for turn in users[1:]:
        m = _LATER.match(turn)
        if not m:
            raise InputError(f"running_sum: user turn {turn!r} is not '+c' or '-c'")
        total += int(m[2]) if m[1] == "+" else -int(m[2])
    return total


@dataclass(frozen=True)
class RunningSumTask:
    """Scripted multi-turn running sums with a rule judge (see the module docstring)."""

    turns: int = 3
    margins: tuple[float, float, float] = (0.1, 0.2, 0.4)
    correctness_weight: float = 0.7
    heldout_every: int = 5  # scripts whose hash is 0 mod heldout_every are held out

    name = "running_sum"
    rule_judge = True  # the Task protocol's capabilities (games/tasks/__init__.py)
    response_classes = True
    heldout_answers = True

    def __post_init__(self):
        if not 1 <= self.turns <= 8:
            raise InputError(f"task.turns must be in 1..8, got {self.turns}")
        if not 0 <= self.correctness_weight <= 1:
            raise InputError(f"task.correctness_weight must be in [0, 1], got {self.correctness_weight}")
        if len(self.margins) != 3 or not all(0 < m <= 0.5 for m in self.margins):
            raise InputError(f"task.margins must be three numbers in (0, 0.5], got {self.margins}")

    # --- data -----------------------------------------------------------------------------
    def is_heldout(self, turns: tuple[str, ...]) -> bool:
        """Held-out conversations never appear in training (a stable hash of the user turns)."""
        digest = hashlib.sha256("|".join(turns).encode()).digest()
        return int.from_bytes(digest[:4], "little") % self.heldout_every == 0

    def _script(self, rng: np.random.Generator, heldout: bool) -> tuple[tuple[str, ...], tuple[int, ...]]:
        while True:
            a, b = (int(x) for x in rng.integers(0, 10, size=2))
            turns, totals = [f"{a}+{b}"], [a + b]
            for _ in range(self.turns - 1):
                c = int(rng.integers(1, 10))
                sign = "+" if totals[-1] - c < 0 or rng.random() < 0.5 else "-"
                turns.append(f"{sign}{c}")
                totals.append(totals[-1] + (c if sign == "+" else -c))
            if self.is_heldout(tuple(turns)) == heldout:
                return tuple(turns), tuple(totals)

    def episodes(self, split: str, n: int, seed: int) -> list[Episode]:
        """``n`` scripted conversations of a split ("train" or "heldout"), reproducible from seed."""
        if split not in ("train", "heldout"):
            raise InputError(f"split must be 'train' or 'heldout', got {split!r}")
        rng = np.random.default_rng([seed, 0 if split == "train" else 1])
        return [Episode(f"{split}-{seed}-{i}", ScriptedUser(self._script(rng, split == "heldout")[0]))
                for i in range(n)]

    def demonstrations(self, n: int, seed: int, corruption: float = 0.0) -> list[Conversation]:
        """Conversations of the train split with right totals and uniformly random styles; with
        ``corruption`` c, each answer is independently a wrong total (off by 1–3) with probability c
        (low-quality demonstrations)."""
        if not 0 <= corruption <= 1:
            raise InputError(f"corruption must be in [0, 1], got {corruption}")
        rng = np.random.default_rng([seed, 2])
        bad = np.random.default_rng([seed, 3])  # its own stream: clean data is the same for every c
        out = []
        for _ in range(n):
            turns, totals = self._script(rng, heldout=False)
            messages = []
            for user, total in zip(turns, totals):
                style = STYLES[int(rng.integers(0, 3))]
                if bad.random() < corruption:
                    total += int(bad.choice([-3, -2, -1, 1, 2, 3]))
                messages += [{"role": "user", "content": user}, {"role": "assistant", "content": f"{total}{style}"}]
            out.append(messages)
        return out

    def heldout_states(self, n: int, seed: int) -> list[Conversation]:
        """Every turn's state of ``n`` held-out conversations, earlier answers being gold."""
        states = []
        for episode in self.episodes("heldout", n, seed):
            messages = []
            for turn in episode.user.turns:
                messages = messages + [{"role": "user", "content": turn}]
                states.append(messages)
                messages = messages + [{"role": "assistant", "content": f"{running_total(messages)}!"}]
        return states

    def heldout_demonstrations(self, n: int, seed: int) -> list[tuple[Conversation, str]]:
        """(state, right answer with a random style) at every turn of ``n`` held-out conversations."""
        rng = np.random.default_rng([seed, 4])
        return [(s, f"{running_total(s)}{STYLES[int(rng.integers(0, 3))]}") for s in self.heldout_states(n, seed)]

    def tokenizer_corpus(self, seed: int = 0) -> list[str]:
        """Text to train a tokenizer on: every digit, operator and style mark in context."""
        return [" ".join(m["content"] for m in conv) for conv in self.demonstrations(2000, seed)]

    # --- classes and the judge ------------------------------------------------------------
    @property
    def class_names(self) -> list[str]:
        return [f"{'correct' if c else 'wrong'}{s}" for c in (0, 1) for s in (*STYLES, "none")]

    @property
    def correct_classes(self) -> list[int]:
        """Right totals, in any style (an unreadable answer is never right)."""
        return [4, 5, 6]

    @property
    def malformed_classes(self) -> list[int]:
        """No total and style mark to read (``classify`` puts every such answer in wrong/none)."""
        return [3, 7]

    @property
    def style_matrix(self) -> np.ndarray:
        """(4, 4) P_style over ("!", ".", "~", none)."""
        m0, m1, m2 = self.margins
        P = np.full((4, 4), 0.5)
        P[:3, :3] += np.array([[0.0, m0, -m2], [-m0, 0.0, m1], [m2, -m1, 0.0]])
        P[:3, 3], P[3, :3] = 1.0, 0.0
        return P

    @property
    def class_matrix(self) -> np.ndarray:
        """(8, 8) P(class i ≻ class j); class = 4·correct + style index."""
        w = self.correctness_weight
        corr = np.repeat([0, 1], 4)
        P_corr = 0.5 + 0.5 * (corr[:, None] - corr[None, :])
        return w * P_corr + (1 - w) * np.tile(self.style_matrix, (2, 2))

    def classify(self, messages: Conversation, response: str) -> int:
        m = _ANSWER.match(response)
        if not m:
            return 3  # wrong, none
        correct = int(m[1]) == running_total(messages)
        return 4 * int(correct) + STYLES.index(m[2])

    def equilibrium_styles(self) -> np.ndarray:
        m0, m1, m2 = self.margins
        return np.array([m1, m2, m0]) / sum(self.margins)

    def exploitability(self, class_counts: np.ndarray) -> np.ndarray:
        """Per state: max_c Σ_c' d(c') P(c, c') − ½ for rows of class counts (S, 8)."""
        d = class_counts / class_counts.sum(axis=1, keepdims=True)
        return (d @ self.class_matrix.T).max(axis=1) - 0.5

    def exploitability_parts(self, class_counts: np.ndarray) -> dict[str, np.ndarray]:
        """Per state, the exploitability split exactly into its transitive and cyclic parts
        (they sum to ``exploitability``). The best response is a right answer in the style that
        best beats the policy's style mix q (its marginal over right and wrong answers, with
        "none"), so for rows of class counts (S, 8) with p the share of right answers:

            correctness = w · (1 − p) / 2,   style = (1 − w) · (max_s (P_style q)_s − ½).

        Optimism acts on the style part (a cycle); the correctness part is what a transitive
        judge would see.
        """
        d = class_counts / class_counts.sum(axis=1, keepdims=True)
        w = self.correctness_weight
        right = d[:, 4:].sum(axis=1)  # (class 7, right but unreadable, never occurs: it counts as right here)
        styles = d[:, :4] + d[:, 4:]  # (S, 4) over ("!", ".", "~", none)
        return {"correctness": w * (1 - right) / 2,
                "style": (1 - w) * ((styles @ self.style_matrix.T).max(axis=1) - 0.5)}

    def judge(self) -> "RunningSumJudge":
        return RunningSumJudge(margins=self.margins, correctness_weight=self.correctness_weight)


class RunningSumJudge:
    """The rule judge of ``running_sum``: exact, constant-sum by construction."""

    antisymmetric = True  # P(a ≻ b) + P(b ≻ a) = 1 exactly: no symmetrisation needed

    def __init__(self, margins=(0.1, 0.2, 0.4), correctness_weight=0.7):
        # classify() reads the running total from the conversation; the horizon does not matter
        self.task = RunningSumTask(margins=tuple(margins), correctness_weight=correctness_weight)
        self.P = self.task.class_matrix

    def compare(self, conversations: list[Conversation], a: list[str], b: list[str]) -> list[float]:
        return [float(self.P[self.task.classify(c, x), self.task.classify(c, y)])
                for c, x, y in zip(conversations, a, b)]
