"""Built-in multi-turn tasks: synthetic, generated offline from a seed, with programmatic judges."""

from games.tasks.running_sum import RunningSumTask

TASKS = {"running_sum": RunningSumTask}


def get_task(name: str, **kwargs):
    """A built-in task by name; the error lists the valid names."""
    from framework.errors import InputError

    if name not in TASKS:
        raise InputError(f"unknown task {name!r}; choose from {sorted(TASKS)}")
    return TASKS[name](**kwargs)
