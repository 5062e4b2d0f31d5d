"""Demonstrations for reward learning and the warm start: (state, response) pairs from a file or a task.

A file is JSONL (read with ``games.jsonl``) or Parquet (read with ``datasets``), one demonstration per
row, in either form:

- ``messages``: a chat conversation (``[{"role", "content"}, ...]``) ending with the demonstrated
  assistant turn, earlier turns being the context;
- ``prompt`` (a string, the user turn) and ``response`` (a string).

A malformed row raises an error naming the file, the row and the field; nothing is skipped.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from framework.errors import InputError, excerpt
from games.jsonl import read_jsonl

ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class Demonstration:
    state: tuple  # chat messages ending with the user turn
    response: str

    @property
    def messages(self) -> list[dict]:
        return [dict(m) for m in self.state]


def from_conversations(conversations: list[list[dict]]) -> list[Demonstration]:
    """One demonstration per assistant turn, the gold earlier turns as its context."""
    out = []
    for messages in conversations:
        for i, m in enumerate(messages):
            if m["role"] == "assistant":
                out.append(Demonstration(tuple(_freeze(x) for x in messages[:i]), m["content"]))
    return out


def _freeze(message: dict):
    return tuple(sorted(message.items()))


def _fail(path, row: int, field: str, expected: str, got) -> InputError:
    return InputError(f"{path}: row {row}: field '{field}': expected {expected}, got {excerpt(got)}")


def _check_messages(path, row: int, messages) -> list[dict]:
    if not isinstance(messages, list) or len(messages) < 2:
        raise _fail(path, row, "messages", "a list of at least a user and an assistant message", messages)
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise _fail(path, row, f"messages[{i}]", "an object with 'role' and 'content'", m)
        if m.get("role") not in ROLES:
            raise _fail(path, row, f"messages[{i}].role", f"one of {list(ROLES)}", m.get("role"))
        if not isinstance(m.get("content"), str):
            raise _fail(path, row, f"messages[{i}].content", "a string", m.get("content"))
    if messages[-1]["role"] != "assistant":
        raise _fail(path, row, f"messages[{len(messages) - 1}].role", "'assistant' (the demonstrated turn)",
                    messages[-1]["role"])
    if messages[-2]["role"] != "user":
        raise _fail(path, row, f"messages[{len(messages) - 2}].role", "'user' before the demonstrated turn",
                    messages[-2]["role"])
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def load_demonstrations(path: str | Path) -> list[Demonstration]:
    """Every demonstration of a JSONL or Parquet file (see the module docstring)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise InputError(f"demos.path: {path} does not exist" if not path.exists() else
                         f"demos.path: {path} is not a file")
    kind = {".jsonl": "json", ".json": "json", ".parquet": "parquet"}.get(path.suffix)
    if kind is None:
        raise InputError(f"demos.path: {path} must be .jsonl or .parquet")
    if kind == "json":
        rows = [row for _, row in read_jsonl(path)]
        for i, row in enumerate(rows):
            if not isinstance(row, dict):
                raise InputError(f"{path}: row {i}: expected a JSON object, got {excerpt(row)}")
        columns = set().union(*rows)
    else:
        from datasets import load_dataset

        try:
            rows = load_dataset(kind, data_files=str(path), split="train")
        except Exception as e:  # a file datasets cannot parse at all
            raise InputError(f"demos.path: {path} is not readable as {kind} ({str(e).splitlines()[0]})") from None
        columns = set(rows.column_names)
    if not len(rows):
        raise InputError(f"demos.path: {path} holds no row (expected one demonstration per row)")
    if "messages" not in columns and not {"prompt", "response"} <= columns:
        raise InputError(f"demos.path: {path} needs a 'messages' column or 'prompt' and 'response' "
                         f"columns; it has {sorted(columns)}")
    out = []
    for i, row in enumerate(rows):
        if "messages" in columns and row.get("messages") is not None:
            messages = _check_messages(path, i, row["messages"])
        else:
            prompt, response = row.get("prompt"), row.get("response")
            if not isinstance(prompt, str) or not prompt.strip():
                raise _fail(path, i, "prompt", "a non-empty string", prompt)
            if not isinstance(response, str):
                raise _fail(path, i, "response", "a string", response)
            messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
        out.append(Demonstration(tuple(_freeze(m) for m in messages[:-1]), messages[-1]["content"]))
    return out


def demonstrations(task, *, path: str | None, count: int, corruption: float, seed: int) -> list[Demonstration]:
    """A run's demonstrations: the file ``path`` if given, else ``count`` of the task's own
    conversations (a share ``corruption`` of their answers wrong), one demonstration per
    assistant turn."""
    if path:
        return load_demonstrations(path)
    return from_conversations(task.demonstrations(count, seed, corruption=corruption))
