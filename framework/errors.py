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
