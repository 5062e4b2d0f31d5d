"""Built-in multi-turn tasks: synthetic, generated offline from a seed, with programmatic judges,
and dialogues read from MT-Bench-101-format files."""

import dataclasses

from games.tasks.mtbench101 import MTBench101Task
from games.tasks.running_sum import RunningSumTask

TASKS = {"running_sum": RunningSumTask, "mtbench101": MTBench101Task}


def get_task(name: str, **kwargs):
    """A task by name; the error lists the valid names. Settings a task does not use must be unset."""
    from framework.errors import InputError

    if name not in TASKS:
        raise InputError(f"unknown task {name!r}; choose from {sorted(TASKS)}")
    accepted = {f.name for f in dataclasses.fields(TASKS[name]) if f.init}
    if kwargs.get("path") is not None and "path" not in accepted:
        raise InputError(f"task.path: task {name!r} reads no file")
    return TASKS[name](**{k: v for k, v in kwargs.items() if k in accepted})
