"""The one reader of users' JSONL files (demonstrations, MT-Bench-101 dialogues).

Lines are read one at a time and none longer than ``MAX_LINE_BYTES``: a giant line is refused
after reading that much of it, never held whole. Errors name the file and the line.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

from framework.errors import InputError

#: The longest line a JSONL input may have (a demonstration or a dialogue is far shorter).
MAX_LINE_BYTES = 1 << 20


def read_jsonl(path: str | Path) -> Iterator[tuple[int, object]]:
    """(line number from 1, value) of each non-blank line of ``path``."""
    path = Path(path)
    with path.open("rb") as f:
        for n, raw in enumerate(iter(lambda: f.readline(MAX_LINE_BYTES + 1), b""), start=1):
            if len(raw) > MAX_LINE_BYTES:
                raise InputError(f"{path}:{n}: the line is longer than {MAX_LINE_BYTES} bytes (the limit of a "
                                 f"JSONL line, games.jsonl.MAX_LINE_BYTES)")
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise InputError(f"{path}:{n}: not UTF-8 text (byte {raw[e.start]:#04x} at column {e.start + 1})") \
                    from None
            if not text.strip():
                continue
            try:
                value = json.loads(text)
            except json.JSONDecodeError as e:
                raise InputError(f"{path}:{n}: not valid JSON ({e.msg} at column {e.colno})") from None
            yield n, value
