"""``PreferenceJudge``: hosts any ``Judge`` and makes its answers safe to train on (a plain class;
``actors.remote`` makes it a Ray actor, ``pipeline.judges`` of them share an iteration's pairs).

The host validates each answer, asks both orders unless the judge is antisymmetric and combines
them, asks again the pairs a judge could not judge (None: an HTTP call that kept failing, a verdict
that did not parse) and drops and counts those that still fail — a failure is never scored — and
measures how the judging went (``Verdicts``: failures, position flips, ties).
"""

from __future__ import annotations

import math
import os
import time

from framework.errors import AlignplayError
from framework.records import Verdicts
from games.judges import build_judge


class JudgeError(AlignplayError):
    """The judge failed or answered out of contract; the message names the judge."""


class RemoteLimiter:
    """The run's one rate limit (a ``games.judges.llm.RateLimiter`` held by a Ray actor), seen from a
    judge actor: ``reserve`` and ``hold`` wait for the shared actor's answer."""

    def __init__(self, actor):
        self.actor = actor

    def reserve(self, tokens: int) -> float:
        import ray

        return ray.get(self.actor.reserve.remote(tokens))

    def hold(self, seconds: float) -> None:
        import ray

        ray.get(self.actor.hold.remote(seconds))


def _limiter(limiter):
    """A shared limiter as the judge calls it: a Ray actor handle is wrapped, an object used as it is."""
    return RemoteLimiter(limiter) if hasattr(getattr(limiter, "reserve", None), "remote") else limiter


class PreferenceJudge:
    """Validates, symmetrises, retries and re-asks a judge.

    Args:
        kind, target, settings: which judge (see ``games.judges``; ``JudgeConfig.settings()``).
        task: the built-in task (for ``kind=rule``).
        retries: extra attempts when ``compare`` raises (then JudgeError).
        retry_wait: seconds between attempts.
        requeue: times the pairs a judge answered None for are asked again before they are dropped.
        limiter: the run's shared rate limit (``kind=llm``): a RateLimiter or a Ray actor holding one.
        environment: variables the judge reads that this process may lack (the API key named by
            ``judge.api_key_env``, from the driver's environment: handed over in memory, never in
            a file); a variable already set here is kept.
    """

    def __init__(self, *, kind: str, task=None, target: str | None = None, settings: dict | None = None,
                 retries: int = 2, retry_wait: float = 0.5, requeue: int = 1, limiter=None,
                 environment: dict[str, str] | None = None):
        for name, value in (environment or {}).items():
            os.environ.setdefault(name, value)
        self.judge = build_judge(kind, task=task, target=target, settings=settings, limiter=_limiter(limiter))
        self.name = target if kind == "custom" else kind
        self.retries, self.retry_wait, self.requeue = retries, retry_wait, requeue
        self.antisymmetric = bool(getattr(self.judge, "antisymmetric", False))
        self.calls = 0

    def _ask(self, conversations, a, b) -> list[float | None]:
        last = None
        for attempt in range(self.retries + 1):
            try:
                out = self.judge.compare(conversations, a, b)
                break
            except AlignplayError:  # a judge's own one-line error (a rejected API key): as it is
                raise
            except Exception as e:  # a user's judge may raise anything; we retry, then report it
                last = e
                if attempt < self.retries:
                    time.sleep(self.retry_wait)
        else:
            raise JudgeError(f"judge {self.name}: compare failed {self.retries + 1} times: "
                             f"{type(last).__name__}: {last}")
        try:
            out = [None if p is None else float(p) for p in out]
        except (TypeError, ValueError):
            raise JudgeError(f"judge {self.name}: compare must return a list of probabilities (or None)") from None
        if len(out) != len(a):
            raise JudgeError(f"judge {self.name}: returned {len(out)} probabilities for {len(a)} pairs")
        for i, p in enumerate(out):
            if p is not None and (not (0.0 <= p <= 1.0) or math.isnan(p)):
                raise JudgeError(f"judge {self.name}: P(a ≻ b) = {p} for pair {i} is outside [0, 1]")
        return out

    def _ask_all(self, conversations, a, b) -> tuple[list[float | None], int]:
        """One order of every pair, the pairs answered None asked again ``requeue`` times; and how
        many single-order judgments that took."""
        out, asked = self._ask(conversations, a, b), len(a)
        for _ in range(self.requeue):
            missing = [i for i, p in enumerate(out) if p is None]
            if not missing:
                break
            again = self._ask([conversations[i] for i in missing], [a[i] for i in missing], [b[i] for i in missing])
            asked += len(missing)
            for i, p in zip(missing, again):
                out[i] = p
        return out, asked

    def judge_pairs(self, conversations: list[list[dict]], a: list[str], b: list[str]) -> Verdicts:
        """P(a ≻ b) per pair — ½(P(a ≻ b) + 1 − P(b ≻ a)) unless the judge is antisymmetric; None for
        a pair dropped — and how the judging went."""
        if not (len(conversations) == len(a) == len(b)):
            raise JudgeError(f"judge {self.name}: {len(conversations)} conversations, {len(a)} a, {len(b)} b")
        start = time.perf_counter()
        self.calls += 1
        forward, asked = self._ask_all(conversations, a, b)
        if self.antisymmetric:
            backward = [None if p is None else 1.0 - p for p in forward]
        else:
            backward, more = self._ask_all(conversations, b, a)
            asked += more
        probabilities, flips, ties, disagreement = [], 0, 0, 0.0
        for p, q in zip(forward, backward):
            if p is None or q is None:
                probabilities.append(None)
                continue
            probabilities.append(0.5 * (p + 1.0 - q))
            flips += (p > 0.5) - (p < 0.5) != (q < 0.5) - (q > 0.5)  # the order changed the verdict
            ties += (p == 0.5) + (not self.antisymmetric and q == 0.5)
            disagreement += abs(p - (1.0 - q))
        return Verdicts(probabilities, pairs=len(a), asked=asked, failures=probabilities.count(None), flips=flips,
                        ties=ties, verdicts=(len(a) - probabilities.count(None)) * (1 if self.antisymmetric else 2),
                        disagreement=disagreement, seconds=time.perf_counter() - start)

    def compare(self, conversations: list[list[dict]], a: list[str], b: list[str]) -> list[float | None]:
        """P(a ≻ b) per pair as ``judge_pairs`` gives it (None: dropped)."""
        return self.judge_pairs(conversations, a, b).probabilities


def judge_all(cluster, judges: list, conversations: list[list[dict]], a: list[str], b: list[str]) -> Verdicts:
    """Every pair judged by a pool of judge roles (``Handle[PreferenceJudge]``): split into one
    contiguous share per judge, sent at once, the answers merged in order. A judge that dies or
    misses its deadline is re-created by the cluster and its share sent again."""
    if not a:
        return Verdicts([])
    size = -(-len(a) // len(judges))  # ceil: the first judges take one more
    futures = [judge.call(PreferenceJudge.judge_pairs, conversations[i:i + size], a[i:i + size], b[i:i + size])
               for judge, i in zip(judges, range(0, len(a), size))]
    return Verdicts.merge(cluster.get(futures))
