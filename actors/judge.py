"""``PreferenceJudge``: hosts any ``Judge`` and makes its answers safe to train on (a plain class;
``actors.remote`` makes it a Ray actor)."""

from __future__ import annotations

import math
import time

from framework.errors import AlignplayError
from games.judges import build_judge


class JudgeError(AlignplayError):
    """The judge failed or answered out of contract; the message names the judge."""


class PreferenceJudge:
    """Validates, symmetrises and retries a judge.

    Args:
        kind, target, kwargs: which judge (see ``games.judges``).
        task: the built-in task (for ``kind=rule``).
        retries: extra attempts when ``compare`` raises (then JudgeError).
        retry_wait: seconds between attempts.
    """

    def __init__(self, *, kind: str, task=None, target: str | None = None, kwargs: dict | None = None,
                 retries: int = 2, retry_wait: float = 0.5):
        self.judge = build_judge(kind, task=task, target=target, kwargs=kwargs)
        self.name = target if kind == "custom" else kind
        self.retries, self.retry_wait = retries, retry_wait
        self.antisymmetric = bool(getattr(self.judge, "antisymmetric", False))
        self.calls = 0

    def _ask(self, conversations, a, b) -> list[float]:
        last = None
        for attempt in range(self.retries + 1):
            try:
                out = self.judge.compare(conversations, a, b)
                break
            except Exception as e:  # a user's judge may raise anything; we retry, then report it
                last = e
                if attempt < self.retries:
                    time.sleep(self.retry_wait)
        else:
            raise JudgeError(f"judge {self.name}: compare failed {self.retries + 1} times: "
                             f"{type(last).__name__}: {last}")
        try:
            out = [float(p) for p in out]
        except (TypeError, ValueError):
            raise JudgeError(f"judge {self.name}: compare must return a list of probabilities") from None
        if len(out) != len(a):
            raise JudgeError(f"judge {self.name}: returned {len(out)} probabilities for {len(a)} pairs")
        for i, p in enumerate(out):
            if not (0.0 <= p <= 1.0) or math.isnan(p):
                raise JudgeError(f"judge {self.name}: P(a ≻ b) = {p} for pair {i} is outside [0, 1]")
        return out

    def compare(self, conversations: list[list[dict]], a: list[str], b: list[str]) -> list[float]:
        """P(a ≻ b) per pair, symmetrised unless the judge declares itself antisymmetric."""
        if not (len(conversations) == len(a) == len(b)):
            raise JudgeError(f"judge {self.name}: {len(conversations)} conversations, {len(a)} a, {len(b)} b")
        self.calls += 1
        forward = self._ask(conversations, a, b)
        if self.antisymmetric:
            return forward
        backward = self._ask(conversations, b, a)
        return [0.5 * (p + 1.0 - q) for p, q in zip(forward, backward)]
