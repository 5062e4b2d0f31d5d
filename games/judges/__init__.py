"""Preference judges: the ``Judge`` protocol and a registry (DESIGN §2.4).

A judge is any object with ``compare(conversations, a, b) -> list[float | None]``:
``conversations`` is a list of chat-message lists (``{"role", "content"}``) each ending with the
user turn, ``a`` and ``b`` lists of response strings, and the result is P(a ≻ b) per pair, in
[0, 1], or None for a pair it could not judge (the host asks it again, then drops and counts it:
never a made-up score). A judge may set ``antisymmetric = True`` when P(a ≻ b) + P(b ≻ a) = 1
holds exactly; otherwise the host asks both orders and combines ½(P(a ≻ b) + 1 − P(b ≻ a)).

    rule            the task's programmatic judge                  (here)
    reward_model    a scalar reward model: σ((r_a − r_b)/T)         models.py
    pairwise_model  a model reading both answers                    models.py
    llm             an LLM over an OpenAI-compatible HTTP endpoint  llm.py
    custom          ``judge.target=module:Class`` from the Python path (configs are trusted code,
                    as with any plugin system)
"""

from __future__ import annotations

import importlib
import inspect
import traceback
from typing import Callable, Protocol

from framework.errors import InputError


class Judge(Protocol):
    def compare(self, conversations: list[list[dict]], a: list[str], b: list[str]) -> list[float]: ...


JUDGES: dict[str, Callable[..., Judge]] = {}


def register_judge(name: str):
    def wrap(factory):
        JUDGES[name] = factory
        return factory
    return wrap


@register_judge("rule")
def rule_judge(*, task, **kwargs) -> Judge:
    """The built-in task's own programmatic judge."""
    if task is None or not task.rule_judge:
        raise InputError(f"judge.kind=rule: task {getattr(task, 'name', task)!r} has no rule judge")
    try:
        inspect.signature(task.judge).bind(**kwargs)
    except TypeError as e:
        raise InputError(f"judge.kwargs: the rule judge of task {task.name!r} {e} (it takes "
                         f"{list(inspect.signature(task.judge).parameters) or 'none'})") from None
    return task.judge(**kwargs)


def _raised(e: BaseException) -> str:
    """A user's exception on one line: its type, message and where it was raised."""
    where = traceback.extract_tb(e.__traceback__)[-1]
    message = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}{': ' + message if message else ''} at {where.filename}:{where.lineno}"


def load_target(target: str):
    """``module:Attr`` → the attribute, with errors that say which part failed (a user's module
    that does not compile or raises while imported is named with the file and line)."""
    if not target or ":" not in target:
        raise InputError(f"judge.target must look like 'module:Class', got {target!r}")
    module_name, attr = target.split(":", 1)
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise InputError(f"judge.target: cannot import {module_name!r} ({e})") from None
    except SyntaxError as e:
        raise InputError(f"judge.target: {module_name!r} does not compile ({e.msg} at {e.filename}:{e.lineno})") \
            from None
    except Exception as e:  # the module's own code raised while it was imported
        raise InputError(f"judge.target: importing {module_name!r} raised {_raised(e)}") from None
    if not hasattr(module, attr):
        raise InputError(f"judge.target: module {module_name!r} has no attribute {attr!r}")
    return getattr(module, attr)


@register_judge("custom")
def custom_judge(*, target: str, task=None, **kwargs) -> Judge:
    cls = load_target(target)
    try:
        inspect.signature(cls).bind(**kwargs)
    except TypeError as e:
        raise InputError(f"judge.target {target}: cannot construct with judge.kwargs ({e})") from None
    try:
        judge = cls(**kwargs)
    except Exception as e:  # the user's constructor raised
        raise InputError(f"judge.target {target}: the constructor raised {_raised(e)}") from None
    if not callable(getattr(judge, "compare", None)):
        raise InputError(f"judge.target {target}: has no compare(conversations, a, b) method")
    return judge


def judge_modules(kind: str, target: str | None) -> tuple[str, ...]:
    """The user modules a judge needs importable where it runs (``custom``: its target's)."""
    return (target.split(":", 1)[0],) if kind == "custom" and target else ()


def build_judge(kind: str, *, task=None, target: str | None = None, settings: dict | None = None,
                limiter=None) -> Judge:
    """The judge of ``kind`` from its settings (``JudgeConfig.settings()``: its ``judge.`` keys and
    ``kwargs``); ``limiter``: the run's shared rate limit (the ``llm`` kind)."""
    if kind not in JUDGES:
        raise InputError(f"judge.kind: unknown judge {kind!r}; choose from {sorted(JUDGES)}")
    extra = dict(settings or {})
    if kind == "custom":
        return JUDGES[kind](target=target, task=task, **extra)
    if kind == "llm":
        extra["limiter"] = limiter
    factory = JUDGES[kind]
    try:
        inspect.signature(factory).bind(task=task, **extra)
    except TypeError as e:
        raise InputError(f"judge.kwargs: judge.kind={kind} {e}") from None
    return factory(task=task, **extra)


from games.judges import llm, models  # noqa: E402  (the kinds of their own files)

register_judge("reward_model")(models.reward_model_judge)
register_judge("pairwise_model")(models.pairwise_model_judge)
register_judge("llm")(llm.llm_judge)
