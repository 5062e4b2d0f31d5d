"""Preference judges: the ``Judge`` protocol and a registry (DESIGN §2.4).

A judge is any object with ``compare(conversations, a, b) -> list[float]``: ``conversations`` is
a list of chat-message lists (``{"role", "content"}``) each ending with the user turn, ``a`` and
``b`` lists of response strings, and the result is P(a ≻ b) per pair, in [0, 1]. A judge may set
``antisymmetric = True`` when P(a ≻ b) + P(b ≻ a) = 1 holds exactly; otherwise the host
symmetrises it as ½(P(a ≻ b) + 1 − P(b ≻ a)).

``judge.kind=custom`` with ``judge.target=module:Class`` loads a user's class from the Python
path (configs are trusted code, as with any plugin system).
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


def build_judge(kind: str, *, task=None, target: str | None = None, kwargs: dict | None = None) -> Judge:
    if kind not in JUDGES:
        raise InputError(f"judge.kind: unknown judge {kind!r}; choose from {sorted(JUDGES)}")
    extra = dict(kwargs or {})
    if kind == "custom":
        return JUDGES[kind](target=target, task=task, **extra)
    return JUDGES[kind](task=task, **extra)
