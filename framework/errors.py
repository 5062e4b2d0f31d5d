"""Errors that reach users as one line (the CLI prints them and exits with code 2)."""


def excerpt(value, width: int = 60) -> str:
    """``repr(value)``, cut to ``width`` characters, for an error message about bad input."""
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


class AlignplayError(Exception):
    """Base class of every error alignplay raises on purpose."""


class InputError(AlignplayError, ValueError):
    """Bad input from a user: a file, an array, a flag. The message names what and where."""


class ConfigError(InputError):
    """A config value is unknown, mistyped or out of range; ``key`` is its dotted path."""

    def __init__(self, key: str, message: str):
        self.key = key
        self.message = message
        super().__init__(f"{key}: {message}" if key else message)


class NonFiniteError(AlignplayError):
    """Training met a non-finite loss, gradient or weight and stopped before using it.

    ``step``: the iteration (self-play) or step (DP) it happened in; ``applied``: optimizer steps
    of that update already taken (0: the weights are still the last good ones)."""

    def __init__(self, message: str, *, step: int | None = None, applied: int = 0):
        super().__init__(message)
        self.step, self.applied = step, applied
