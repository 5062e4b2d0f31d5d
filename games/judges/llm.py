"""LLM-as-judge over an OpenAI-compatible ``/v1/chat/completions`` endpoint (``judge.kind=llm``).

One ``compare`` call judges every pair in ONE order (assistant A = ``a[i]``, B = ``b[i]``); the host
asks both orders and symmetrises, so position bias is measured (a flip rate), not hidden. Requests
run concurrently on one event loop (``asyncio.run`` per call, so the judge works from a plain thread
such as a Ray actor's method), at most ``max_concurrency`` in flight.

Three rules, each a common mistake in such clients:

* No failure is ever scored. A pair whose request failed after every retry, was refused (a 4xx other
  than auth or 404) or whose verdict does not parse comes back ``None``, never 0 or 0.5: a silent tie
  pulls win rates toward ½ and hides an outage. 401/403 (a bad key) and 404 (a wrong URL or model)
  fail every request alike, so they raise ``InputError`` and stop the run.
* Backoff never blocks: a retry waits with ``await asyncio.sleep`` (jittered exponential, or a 429's
  ``Retry-After``), so the other requests keep flowing; the limiter is called off the event loop.
* The rate limit is one per run, not one per judge: the provider counts every request made with the
  key, so the run passes one shared ``limiter`` to all judge actors, and a 429's ``Retry-After``
  pauses them all through ``limiter.hold``. A judge built without one makes its own.

The API key is read from the environment variable ``api_key_env`` names when the judge is built and
sent only as the ``Authorization`` header: no message, repr or stat holds it (server replies quoted
in errors are redacted first).
"""

from __future__ import annotations

import asyncio
import email.utils
import inspect
import json
import math
import os
import random
import re
import string
import threading
import time
from pathlib import Path

from framework.errors import InputError, excerpt

# The default prompt is MT-Bench's pairwise judge ("pair-v2" and "pair-v2-multi-turn" in FastChat's
# fastchat/llm_judge/data/judge_prompts.jsonl, Apache-2.0, https://github.com/lm-sys/FastChat),
# adapted to a shared history: both assistants had the same earlier turns and differ only in the last.
SYSTEM_PROMPT = (
    "Please act as an impartial judge and evaluate the quality of the responses provided by two AI "
    "assistants to the last user question of the conversation displayed below. The earlier turns of the "
    "conversation are shared by both assistants. You should choose the assistant that follows the user's "
    "instructions and answers the user's last question better. Your evaluation should consider factors "
    "such as the helpfulness, relevance, accuracy, depth, creativity, and level of detail of their "
    "responses. Begin your evaluation by comparing the two responses and provide a short explanation. "
    "Avoid any positional biases and ensure that the order in which the responses were presented does "
    "not influence your decision. Do not allow the length of the responses to influence your evaluation. "
    "Do not favor certain names of the assistants. Be as objective as possible. After providing your "
    "explanation, output your final verdict by strictly following this format: \"[[A]]\" if assistant A "
    "is better, \"[[B]]\" if assistant B is better, and \"[[C]]\" for a tie."
)
USER_TEMPLATE = (
    "[The Start of the Conversation So Far]\n{conversation}\n[The End of the Conversation So Far]\n\n"
    "[User Question]\n{question}\n\n"
    "[The Start of Assistant A's Answer]\n{answer_a}\n[The End of Assistant A's Answer]\n\n"
    "[The Start of Assistant B's Answer]\n{answer_b}\n[The End of Assistant B's Answer]"
)
PLACEHOLDERS = ("conversation", "question", "answer_a", "answer_b")
SCORES = {"A": 1.0, "B": 0.0, "C": 0.5}  # P(A ≻ B) for each verdict letter
_VERDICT = re.compile(r"\[\[\s*([ABC])\s*\]\]")


def text_verdict(reply: str | None) -> float | None:
    """P(A ≻ B) from the LAST "[[A]]", "[[B]]" or "[[C]]" in a reply (the explanation before the
    verdict may quote the format); None when there is none."""
    found = _VERDICT.findall(reply or "")
    return SCORES[found[-1]] if found else None


def logprob_verdict(content: list[dict] | None) -> float | None:
    """P(A ≻ B) = (p_A + ½ p_C) / (p_A + p_B + p_C) from the top log-probs where the letter is written.

    ``content`` is OpenAI's ``choices[0].logprobs.content`` (per token: ``token``, ``top_logprobs``).
    The letter is the last token reading "A", "B" or "C" right after "[[" (the verdict, as the text
    parse reads it), else the first token reading a letter. Variants of a letter (" A", "A") add up;
    letters absent from the top log-probs count 0. None when no token or no top log-prob is a letter
    (the caller then parses the text).
    """
    content = content or []
    letters = [i for i, t in enumerate(content) if t.get("token", "").strip() in SCORES]
    if not letters:
        return None
    after_brackets = [i for i in letters
                      if "".join(t.get("token", "") for t in content[max(0, i - 2):i]).rstrip().endswith("[[")]
    p = dict.fromkeys(SCORES, 0.0)
    for top in content[(after_brackets or letters[:1])[-1]].get("top_logprobs") or []:
        if (letter := top.get("token", "").strip()) in p:
            p[letter] += math.exp(top["logprob"])
    total = sum(p.values())
    return (p["A"] + 0.5 * p["C"]) / total if total > 0 else None


def transcript(history: list[dict]) -> str:
    """The turns before the last question, written as MT-Bench writes them ("### User:")."""
    turns = [f"### {m['role'].capitalize()}:\n{m['content']}" for m in history]
    return "\n\n".join(turns) if turns else "(none: this is the first question)"


def retry_after_s(value: str | None) -> float | None:
    """A ``Retry-After`` header as seconds from now (it is a number of seconds or an HTTP date)."""
    if not value:
        return None
    try:
        seconds = float(value)
        return max(0.0, seconds) if math.isfinite(seconds) else None
    except ValueError:
        pass
    try:
        return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


class RateLimiter:
    """Books request slots under a requests-per-minute and a tokens-per-minute limit (0: none).

    Requests start at least 60/rpm seconds apart, and each request's tokens are paid at tpm/60 per
    second before the next one starts. ``reserve`` books the next slot and returns how long the caller
    must wait before sending (the caller sleeps; the limiter never does), so one instance, or a proxy
    to one, can serve every judge of a run. Thread-safe.
    """

    def __init__(self, requests_per_minute: float = 0.0, tokens_per_minute: float = 0.0):
        self.interval_s = 60.0 / requests_per_minute if requests_per_minute > 0 else 0.0
        self.tokens_per_s = tokens_per_minute / 60.0 if tokens_per_minute > 0 else 0.0
        self._next_s = 0.0  # time.monotonic() before which no slot starts
        self._lock = threading.Lock()

    def reserve(self, tokens: int) -> float:
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next_s)
            self._next_s = start + max(self.interval_s, tokens / self.tokens_per_s if self.tokens_per_s else 0.0)
            return start - now

    def hold(self, seconds: float) -> None:
        """No slot starts before now + ``seconds`` (a provider's ``Retry-After``)."""
        with self._lock:
            self._next_s = max(self._next_s, time.monotonic() + seconds)


def _read_template(path: str) -> str:
    """A user-message template, checked now so a typo fails at startup, not on every request."""
    try:
        text = Path(path).read_text()
        fields = {f for _, f, _, _ in string.Formatter().parse(text) if f is not None}
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"judge.template: cannot read {path} ({getattr(e, 'strerror', None) or e})") from None
    except ValueError as e:  # an unmatched brace
        raise InputError(f"judge.template {path}: {e} (write a literal brace as {{{{ or }}}})") from None
    known = ", ".join("{" + p + "}" for p in PLACEHOLDERS)
    if unknown := sorted(fields - set(PLACEHOLDERS)):
        raise InputError(f"judge.template {path}: unknown placeholder {{{unknown[0]}}} (known: {known})")
    if missing := [p for p in ("answer_a", "answer_b") if p not in fields]:
        raise InputError(f"judge.template {path}: no {{{missing[0]}}} placeholder (the judge must see both answers)")
    return text


class LLMJudge:
    """Asks a chat model which of two answers is better; see the module docstring for the design.

    Args: the ``judge.<name>`` config keys. ``template``: a text file holding the user message (the
    placeholders of ``PLACEHOLDERS``; a literal brace is written twice); with a template no system
    message is sent, so the file carries all the instructions. ``limiter``: an object with
    ``reserve(tokens) -> seconds`` and ``hold(seconds)`` shared across judges; None builds a
    ``RateLimiter(requests_per_minute, tokens_per_minute)`` for this judge. A request's tokens are
    estimated as its prompt characters / 4 + ``max_tokens``.

    ``stats`` counts, over the judge's life: ``requests`` (HTTP requests sent, retries included),
    ``retries``, ``failures`` (pairs returned as None), ``unparsed`` (those whose reply held no
    verdict) and ``rate_limited`` (429s seen); ``last_error`` says why the latest failure failed.
    """

    backoff_base_s = 0.5  # first retry waits about this long (× uniform(0.5, 1.5)), doubling
    backoff_cap_s = 30.0

    def __init__(self, *, base_url: str, model: str, api_key_env: str | None = None, max_concurrency: int = 8,
                 timeout_s: float = 60.0, requests_per_minute: float = 0.0, tokens_per_minute: float = 0.0,
                 request_retries: int = 4, template: str | None = None, verdict: str = "text",
                 max_tokens: int = 512, extra_body: dict | None = None, limiter=None):
        if not str(base_url).startswith(("http://", "https://")):
            raise InputError(f"judge.base_url must start with http:// or https://, got {excerpt(base_url)}")
        if verdict not in ("text", "logprobs"):
            raise InputError(f"judge.verdict must be 'text' or 'logprobs', got {excerpt(verdict)}")
        for key, value, low in (("max_concurrency", max_concurrency, 1), ("request_retries", request_retries, 0),
                                ("max_tokens", max_tokens, 1), ("requests_per_minute", requests_per_minute, 0),
                                ("tokens_per_minute", tokens_per_minute, 0)):
            if value < low:
                raise InputError(f"judge.{key} must be at least {low}, got {value!r}")
        if not timeout_s > 0:
            raise InputError(f"judge.timeout_s must be positive, got {timeout_s!r}")
        if clash := sorted({"model", "messages"} & set(extra_body or {})):
            raise InputError(f"judge.extra_body: cannot set {clash[0]!r} (it is judge.model or the prompt)")
        if api_key_env is not None and not os.environ.get(api_key_env):
            raise InputError(f"judge.api_key_env: environment variable {api_key_env} is not set")
        self.api_key_env, self._key = api_key_env, os.environ[api_key_env] if api_key_env else None
        self.url, self.model, self.verdict = base_url.rstrip("/") + "/chat/completions", model, verdict
        self.max_concurrency, self.timeout_s, self.request_retries = max_concurrency, timeout_s, request_retries
        self.max_tokens, self.extra_body = max_tokens, dict(extra_body or {})
        self.template, self.system = (_read_template(template), None) if template else (USER_TEMPLATE, SYSTEM_PROMPT)
        self.limiter = limiter if limiter is not None else RateLimiter(requests_per_minute, tokens_per_minute)
        self.stats = dict.fromkeys(("requests", "retries", "failures", "unparsed", "rate_limited"), 0)
        self.last_error: str | None = None

    def __repr__(self) -> str:
        return f"LLMJudge(url={self.url!r}, model={self.model!r}, verdict={self.verdict!r})"

    def messages(self, conversation: list[dict], answer_a: str, answer_b: str) -> list[dict]:
        """The chat messages that ask for one verdict (``conversation`` ends with the user's question)."""
        user = self.template.format(conversation=transcript(conversation[:-1]), question=conversation[-1]["content"],
                                    answer_a=answer_a, answer_b=answer_b)
        system = [{"role": "system", "content": self.system}] if self.system else []
        return system + [{"role": "user", "content": user}]

    def compare(self, conversations: list[list[dict]], a: list[str], b: list[str]) -> list[float | None]:
        """P(a[i] ≻ b[i]) per pair with a[i] shown first, or None where the judge could not judge.

        Runs its own event loop: call it from a thread with none running (a Ray actor's method)."""
        if not len(conversations) == len(a) == len(b):
            raise InputError(f"llm judge: {len(conversations)} conversations but {len(a)} and {len(b)} answers")
        bodies = [{"model": self.model, "messages": self.messages(c, x, y), "max_tokens": self.max_tokens,
                   **({"logprobs": True, "top_logprobs": 20} if self.verdict == "logprobs" else {}),
                   **self.extra_body} for c, x, y in zip(conversations, a, b)]
        return asyncio.run(self._ask_all(bodies)) if bodies else []

    async def _ask_all(self, bodies: list[dict]) -> list[float | None]:
        import aiohttp

        gate = asyncio.Semaphore(self.max_concurrency)
        headers = {"Authorization": f"Bearer {self._key}"} if self._key else {}
        timeout = aiohttp.ClientTimeout(total=self.timeout_s)  # per request, connect to last byte
        async with aiohttp.ClientSession(headers=headers, timeout=timeout) as session:
            try:
                async with asyncio.TaskGroup() as group:  # a refused key cancels the requests in flight
                    tasks = [group.create_task(self._ask(session, gate, body)) for body in bodies]
            except ExceptionGroup as errors:
                raise errors.exceptions[0] from None
        return [task.result() for task in tasks]

    async def _ask(self, session, gate: asyncio.Semaphore, body: dict) -> float | None:
        """One pair: send, retry what a retry can fix (429, 5xx, timeouts, lost connections), score."""
        tokens = sum(len(m["content"]) for m in body["messages"]) // 4 + self.max_tokens
        async with gate:
            for attempt in range(self.request_retries + 1):
                if (wait := await asyncio.to_thread(self.limiter.reserve, tokens)) > 0:
                    await asyncio.sleep(wait)
                status, text, retry_after = await self._post(session, body)
                if status == 200:
                    return self._score(text)
                if status is not None and status != 429 and status < 500:
                    return self._refused(status, text)
                self.stats["rate_limited"] += status == 429
                if attempt == self.request_retries:
                    break
                wait = min(self.backoff_cap_s, self.backoff_base_s * 2 ** attempt) * random.uniform(0.5, 1.5)
                if status == 429 and retry_after is not None:
                    wait = retry_after
                    await asyncio.to_thread(self.limiter.hold, retry_after)
                self.stats["retries"] += 1
                await asyncio.sleep(wait)
        reason = f"HTTP {status}: {excerpt(self._redact(text), 200)}" if status else text
        return self._failed(f"no answer after {self.request_retries + 1} attempts ({reason})")

    async def _post(self, session, body: dict) -> tuple[int | None, str, float | None]:
        """(status, reply text, Retry-After seconds); status None for a timeout or a lost connection."""
        import aiohttp

        self.stats["requests"] += 1
        try:
            async with session.post(self.url, json=body) as response:
                return response.status, await response.text(), retry_after_s(response.headers.get("Retry-After"))
        except (aiohttp.ClientError, asyncio.TimeoutError) as e:
            return None, f"{type(e).__name__} {e}".strip(), None

    def _score(self, text: str) -> float | None:
        try:
            choice = json.loads(text)["choices"][0]
            reply = choice["message"]["content"]
            p = logprob_verdict((choice.get("logprobs") or {}).get("content")) if self.verdict == "logprobs" else None
        except (ValueError, LookupError, TypeError, AttributeError):  # not a chat completion
            reply, p = text, None
        if (p := text_verdict(reply) if p is None else p) is None:
            self.stats["unparsed"] += 1
            return self._failed(f"no [[A]], [[B]] or [[C]] in the reply {excerpt(self._redact(reply or ''), 200)}")
        return p

    def _refused(self, status: int, text: str) -> None:
        """A 4xx a retry will not fix: a bad key or a wrong URL/model stops the run, others fail the pair."""
        if status in (401, 403):
            where = f"the key in ${self.api_key_env}" if self._key else "a request with no key (set judge.api_key_env)"
            raise InputError(f"judge.api_key_env: {self.url} refused {where} with HTTP {status}")
        if status == 404:
            raise InputError(f"judge.base_url/judge.model: {self.url} answered HTTP 404 for model {self.model!r} "
                             f"({excerpt(self._redact(text), 120)})")
        return self._failed(f"HTTP {status}: {excerpt(self._redact(text), 200)}")

    def _failed(self, reason: str) -> None:
        self.stats["failures"] += 1
        self.last_error = self._redact(reason)
        return None

    def _redact(self, text: str) -> str:
        return text.replace(self._key, "***") if self._key else text


def llm_judge(*, task=None, **settings) -> LLMJudge:
    """``judge.kind=llm``: the task is not used (the judge reads only the conversations).

    Registered by ``games/judges/__init__.py``; this module does not import the package, which
    would make an import circle (the package imports this module to register it)."""
    known = [p for p in inspect.signature(LLMJudge).parameters]
    if unknown := sorted(set(settings) - set(known)):
        raise InputError(f"judge.kwargs: llm judge takes no argument {unknown[0]!r} (it takes {', '.join(known)})")
    if missing := [k for k in ("base_url", "model") if not settings.get(k)]:
        raise InputError(f"judge.{missing[0]}: the llm judge needs it (e.g. judge.base_url=http://127.0.0.1:8000/v1 "
                         f"judge.model=NAME)")
    return LLMJudge(**settings)
