"""The DP pre-training corpus, built offline from text every Python installation ships.

Documents are the standard library's docstrings (read with ``ast``, nothing is imported) and the
documentation topics of ``pydoc_data``, deduplicated and sorted, so the corpus is deterministic for
a Python version. Each document goes to one split by a hash of its text: ``eval`` (held out),
``public`` (``public_fraction`` of the rest) or ``private``. The unit of privacy is one training
sequence of ``seq_len`` tokens (the split's documents are joined and cut into sequences).

Canaries for the one-run audit: ``canaries`` random secret strings; each is put into the private
split with probability ½ (the audit's coin), as a sequence of its own. Which ones went in is known
only to the DP learner that owns the private data.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import string
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import numpy as np

_SKIP_DIRS = {"site-packages", "test", "tests", "idlelib", "turtledemo", "lib2to3"}


def stdlib_documents(*, min_chars: int = 40) -> list[str]:
    """Docstrings of the standard library and pydoc's topics: deduplicated, sorted."""
    return list(_stdlib_documents(min_chars))


@functools.lru_cache(maxsize=2)
def _stdlib_documents(min_chars: int) -> tuple[str, ...]:  # parsing the stdlib takes seconds: once
    root = Path(sysconfig.get_paths()["stdlib"])
    docs = set()
    for path in sorted(root.rglob("*.py")):
        if _SKIP_DIRS.intersection(path.relative_to(root).parts):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc and len(doc) >= min_chars:
                    docs.add(doc.strip())
    try:
        from pydoc_data.topics import topics

        docs.update(t.strip() for t in topics.values() if len(t) >= min_chars)
    except ImportError:  # some distributions strip pydoc_data
        pass
    return tuple(sorted(docs))


def _bucket(text: str) -> float:
    """A uniform number in [0, 1) fixed by the text (so splits do not depend on order)."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") / 2 ** 64


@dataclass(frozen=True)
class Splits:
    public: list[str]
    private: list[str]
    eval: list[str]


def split_documents(docs: list[str], *, public_fraction: float, eval_fraction: float,
                    max_chars: int | None = None) -> Splits:
    """Split by text hash; ``max_chars`` keeps a deterministic prefix of the (hash-ordered) corpus."""
    ordered = sorted(docs, key=_bucket)
    if max_chars is not None:
        kept, total = [], 0
        for d in ordered:
            if total >= max_chars:
                break
            kept.append(d)
            total += len(d)
        ordered = kept
    public, private, held = [], [], []
    for d in ordered:
        u = _bucket("split:" + d)
        if u < eval_fraction:
            held.append(d)
        elif (u - eval_fraction) / (1 - eval_fraction) < public_fraction:
            public.append(d)
        else:
            private.append(d)
    return Splits(public=public, private=private, eval=held)


def make_canaries(count: int, *, seed: int, length: int = 12) -> list[str]:
    """``count`` random secret strings (lower-case letters and digits)."""
    rng = np.random.default_rng([seed, 0xCA7A])
    alphabet = np.array(list(string.ascii_lowercase + string.digits))
    return ["secret " + "".join(rng.choice(alphabet, size=length)) for _ in range(count)]


def canary_coins(count: int, *, seed: int) -> np.ndarray:
    """The audit's coins: canary i goes into the private split iff coins[i]."""
    return np.random.default_rng([seed, 0xC014]).random(count) < 0.5


def pack(texts: list[str], tokenizer, *, seq_len: int) -> np.ndarray:
    """Join documents (each followed by the end token) and cut into (N, seq_len) sequences."""
    if not texts:
        return np.zeros((0, seq_len), dtype=np.int64)
    ids = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    flat = np.fromiter((t for doc in ids for t in (*doc, tokenizer.eos_token_id)), dtype=np.int64)
    n = len(flat) // seq_len
    return flat[: n * seq_len].reshape(n, seq_len)


def private_sequences(tokenizer, *, public_fraction: float, eval_fraction: float, max_chars: int | None,
                      seq_len: int, canaries: int, seed: int) -> int:
    """N, the sequences of the DP learner's private split (its packed documents and the canaries
    the coins put in): what its sample rate and default δ are computed from."""
    splits = split_documents(stdlib_documents(), public_fraction=public_fraction, eval_fraction=eval_fraction,
                             max_chars=max_chars)
    return len(pack(splits.private, tokenizer, seq_len=seq_len)) + int(canary_coins(canaries, seed=seed).sum())


def canary_sequences(canaries: list[str], tokenizer, *, seq_len: int) -> np.ndarray:
    """One sequence per canary: the secret repeated to fill ``seq_len`` tokens."""
    rows = []
    for c in canaries:
        ids = tokenizer(c + ". ", add_special_tokens=False)["input_ids"]
        reps = -(-seq_len // len(ids))
        rows.append((ids * reps)[:seq_len])
    return np.asarray(rows, dtype=np.int64).reshape(len(canaries), seq_len)
