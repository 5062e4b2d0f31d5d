"""The LLM judge against a real HTTP server on 127.0.0.1 whose every reply a test scripts
(tests/llm_server.py: it stands in for a hosted provider).
"""

import email.utils
import math
import random
import re
import secrets
import threading
import time

import pytest

from framework.errors import InputError
from games.judges.llm import LLMJudge, RateLimiter, llm_judge, logprob_verdict, retry_after_s
from llm_server import Reply

CONVERSATION = [{"role": "user", "content": "What is 3+4?"}, {"role": "assistant", "content": "7."},
                {"role": "user", "content": "Now add 2."}]


def make_judge(server, **settings) -> LLMJudge:
    judge = LLMJudge(**{"base_url": server.url, "model": "judge-model", "timeout_s": 1.0, **settings})
    judge.backoff_base_s = 0.01  # fast retries; the schedule itself is not under test here
    return judge


def ask(judge, n=1, a="first answer", b="second answer"):
    return judge.compare([CONVERSATION] * n, [a] * n, [b] * n)


# --- verdicts -------------------------------------------------------------------------------------

def test_verdicts_parse_the_last_double_bracket_and_garbage_is_none_and_counted(server):
    judge = make_judge(server)
    for content, want in [("[[A]]", 1.0), ("Both fine. [[B]]", 0.0), ("[[ C ]]\n", 0.5),
                          ('Format: "[[A]]" or "[[B]]". Verdict: [[B]]', 0.0), ("A is better [A]", None),
                          ("", None)]:
        server.replies.append(Reply(content=content))
        assert ask(judge) == [want], content
    server.replies.append(Reply(body="not json"))
    assert ask(judge) == [None]
    assert judge.stats["unparsed"] == 3 and judge.stats["failures"] == 3 and judge.stats["requests"] == 7
    assert "no [[A]]" in judge.last_error


def test_results_keep_the_input_order_under_concurrency(server):
    rng = random.Random(0)

    def by_pair(body):  # the verdict depends on which pair the request is about
        i = int(re.search(r"answer (\d+)\n", body["messages"][-1]["content"]).group(1))
        return Reply(content="[[A]]" if i % 3 == 0 else "[[B]]" if i % 3 == 1 else "[[C]]",
                     delay_s=rng.uniform(0, 0.08))

    server.default = by_pair
    judge = make_judge(server, max_concurrency=4)
    n = 24
    out = judge.compare([CONVERSATION] * n, [f"answer {i}" for i in range(n)], ["other"] * n)
    assert out == [[1.0, 0.0, 0.5][i % 3] for i in range(n)]
    assert 1 < server.max_in_flight <= 4


# --- the request ----------------------------------------------------------------------------------

def test_the_request_carries_model_prompt_max_tokens_and_extra_body(server):
    seen = []

    class Recording(RateLimiter):
        def reserve(self, tokens):
            seen.append(tokens)
            return super().reserve(tokens)

    extra = {"temperature": 0.0, "structured_outputs": {"choice": ["[[A]]", "[[B]]", "[[C]]"]}}
    judge = make_judge(server, max_tokens=77, extra_body=extra, limiter=Recording())
    assert ask(judge, a="ANSWER-ONE", b="ANSWER-TWO") == [1.0]
    (request,) = server.requests
    body = request["body"]
    assert request["path"] == "/v1/chat/completions"
    assert "Authorization" not in request["headers"]  # api_key_env=None sends no key
    assert body["model"] == "judge-model" and body["max_tokens"] == 77
    assert body["temperature"] == 0.0 and body["structured_outputs"] == extra["structured_outputs"]
    assert "logprobs" not in body
    system, user = body["messages"]
    assert system["role"] == "system" and "impartial judge" in system["content"]
    assert system["content"].endswith('"[[C]]" for a tie.')
    assert user["role"] == "user"
    text = user["content"]
    # the shared history, the question, then A's answer before B's
    positions = [text.index(s) for s in ("What is 3+4?", "### Assistant:\n7.", "[User Question]\nNow add 2.",
                                         "Assistant A's Answer]\nANSWER-ONE", "Assistant B's Answer]\nANSWER-TWO")]
    assert positions == sorted(positions)
    assert "Now add 2." not in text[:text.index("[User Question]")]  # the question is not in the history
    assert seen == [(len(system["content"]) + len(text)) // 4 + 77]


def test_a_first_question_says_there_is_no_history(server):
    judge = make_judge(server)
    judge.compare([[{"role": "user", "content": "Hi?"}]], ["x"], ["y"])
    assert "(none: this is the first question)" in server.requests[0]["body"]["messages"][-1]["content"]


def test_a_template_file_is_the_whole_user_message(server, tmp_path):
    path = tmp_path / "judge.txt"
    path.write_text("H={conversation}|Q={question}|A={answer_a}|B={answer_b}|{{literal}}")
    judge = make_judge(server, template=str(path))
    assert ask(judge, a="x{y}", b="z") == [1.0]
    assert server.requests[0]["body"]["messages"] == [
        {"role": "user", "content": "H=### User:\nWhat is 3+4?\n\n### Assistant:\n7.|Q=Now add 2.|A=x{y}|B=z|{literal}"}]


@pytest.mark.parametrize("text, says", [("{question} {answer_a}", "no {answer_b}"),
                                        ("{answer_a} {answer_b} {reference}", "unknown placeholder {reference}"),
                                        ("{answer_a} {answer_b} }", "Single '}'")])
def test_a_bad_template_is_one_line_naming_the_file(tmp_path, text, says):
    path = tmp_path / "bad.txt"
    path.write_text(text)
    with pytest.raises(InputError) as e:
        LLMJudge(base_url="http://127.0.0.1:9/v1", model="m", template=str(path))
    assert "judge.template" in str(e.value) and str(path) in str(e.value) and says in str(e.value)
    assert "\n" not in str(e.value)


def test_an_unreadable_template_unknown_settings_and_bad_values_are_input_errors(tmp_path):
    with pytest.raises(InputError, match=r"judge.template: cannot read .*missing.txt"):
        llm_judge(base_url="http://127.0.0.1:9/v1", model="m", template=str(tmp_path / "missing.txt"))
    with pytest.raises(InputError, match="judge.kwargs: llm judge takes no argument 'temperatur'"):
        llm_judge(base_url="http://127.0.0.1:9/v1", model="m", temperatur=0.0)
    with pytest.raises(InputError, match="judge.model"):
        llm_judge(base_url="http://127.0.0.1:9/v1", task=None)
    with pytest.raises(InputError, match="judge.verdict"):
        llm_judge(base_url="http://127.0.0.1:9/v1", model="m", verdict="scores")
    with pytest.raises(InputError, match="judge.extra_body: cannot set 'messages'"):
        llm_judge(base_url="http://127.0.0.1:9/v1", model="m", extra_body={"messages": []})
    with pytest.raises(InputError, match="judge.base_url"):
        llm_judge(base_url="127.0.0.1:9/v1", model="m")


# --- retries --------------------------------------------------------------------------------------

def test_two_500s_then_a_verdict(server):
    server.replies.extend([Reply(status=500, body="oops"), Reply(status=503, body="busy"), Reply(content="[[B]]")])
    judge = make_judge(server)
    assert ask(judge) == [0.0]
    assert len(server.requests) == 3 and judge.stats["retries"] == 2 and judge.stats["requests"] == 3
    assert judge.stats["failures"] == 0


def test_always_500_is_none_after_every_attempt(server):
    server.default = lambda body: Reply(status=500, body="down")
    judge = make_judge(server, request_retries=3)
    assert ask(judge) == [None]
    assert len(server.requests) == 4 and judge.stats["failures"] == 1 and judge.stats["retries"] == 3
    assert "HTTP 500" in judge.last_error and "4 attempts" in judge.last_error


def test_backoff_doubles_and_does_not_block_other_requests(server, monkeypatch):
    """Pair 0's retries wait 0.1 then 0.2 s (base 0.1 s doubling; the jitter pinned to ×1) while pair
    1 is answered at once: the backoff sleeps on the event loop, it does not block it."""
    monkeypatch.setattr("games.judges.llm.random.uniform", lambda low, high: 1.0)
    server.default = lambda body: Reply(status=500) if "p0" in str(body) else Reply(content="[[A]]")
    judge = make_judge(server, request_retries=2, max_concurrency=2)
    judge.backoff_base_s = 0.1
    assert judge.compare([CONVERSATION] * 2, ["p0", "p1"], ["q", "q"]) == [None, 1.0]
    first = [r["t"] for r in server.requests if "p0" in str(r["body"])]
    (other,) = [r["t"] for r in server.requests if "p1" in str(r["body"])]
    gaps = [b - a for a, b in zip(first, first[1:])]
    assert len(first) == 3 and 0.1 <= gaps[0] < 0.19 and 0.2 <= gaps[1] < 0.29, gaps
    assert other < first[1]


def test_429_retry_after_is_waited_and_shared_through_the_limiter(server):
    holds = []

    class Recording(RateLimiter):
        def hold(self, seconds):
            holds.append(seconds)
            super().hold(seconds)

    server.replies.extend([Reply(status=429, headers={"Retry-After": "1"}, body="slow down"), Reply(content="[[C]]")])
    judge = make_judge(server, limiter=Recording())
    assert ask(judge) == [0.5]
    first, second = server.arrivals()
    assert second - first >= 1.0
    assert holds == [1.0] and judge.stats["rate_limited"] == 1 and judge.stats["retries"] == 1


def test_retry_after_reads_seconds_and_http_dates():
    assert retry_after_s("3") == 3.0 and retry_after_s("-2") == 0.0 and retry_after_s(None) is None
    assert retry_after_s("soon") is None and retry_after_s("inf") is None
    in_5s = email.utils.formatdate(time.time() + 5, usegmt=True)
    assert 3.9 <= retry_after_s(in_5s) <= 5.0


def test_a_slow_answer_times_out_and_is_retried(server):
    server.replies.extend([Reply(content="[[A]]", delay_s=1.5), Reply(content="[[B]]")])
    judge = make_judge(server, timeout_s=0.5)
    t0 = time.monotonic()
    assert ask(judge) == [0.0]  # the late [[A]] was never read
    assert len(server.requests) == 2 and judge.stats["retries"] == 1
    assert 0.5 <= time.monotonic() - t0 < 1.4


def test_a_hung_connection_is_none_within_a_bounded_time(server):
    server.default = lambda body: Reply(hang=True)
    judge = make_judge(server, timeout_s=0.5, request_retries=2)
    t0 = time.monotonic()
    assert ask(judge) == [None]
    assert 1.5 <= time.monotonic() - t0 < 3.0
    assert len(server.requests) == 3 and judge.stats["failures"] == 1 and "TimeoutError" in judge.last_error


def test_a_refused_connection_is_none_after_the_retries():
    judge = LLMJudge(base_url="http://127.0.0.1:1/v1", model="m", request_retries=1, timeout_s=1.0)
    judge.backoff_base_s = 0.01
    assert ask(judge) == [None]
    assert judge.stats["requests"] == 2 and judge.stats["failures"] == 1


def test_a_400_is_none_for_that_pair_only(server):
    server.replies.extend([Reply(status=400, body='{"error": "too long"}'), Reply(content="[[A]]")])
    judge = make_judge(server, max_concurrency=1)
    assert judge.compare([CONVERSATION] * 2, ["a0", "a1"], ["b", "b"]) == [None, 1.0]
    assert len(server.requests) == 2 and judge.stats["retries"] == 0 and judge.stats["failures"] == 1
    assert "HTTP 400" in judge.last_error and "too long" in judge.last_error


def test_a_404_names_the_url_and_model(server):
    server.replies.append(Reply(status=404, body='{"error": "The model judge-model does not exist"}'))
    with pytest.raises(InputError, match=r"judge.base_url/judge.model: .*404 .*'judge-model'"):
        ask(make_judge(server))
    assert len(server.requests) == 1


# --- the API key ----------------------------------------------------------------------------------

def test_a_rejected_key_stops_the_run_and_the_key_is_never_shown(server, monkeypatch):
    key = "sk-" + secrets.token_hex(16)
    monkeypatch.setenv("JUDGE_TEST_KEY", key)
    # providers echo the key they reject (and a 400 might too): the judge must not repeat it
    server.replies.extend([Reply(status=400, body=f"bad request for key {key}"), Reply(status=500, body=key),
                           Reply(content=f"[[A]] {key}"), Reply(status=401, body=f"Incorrect API key: {key}")])
    judge = make_judge(server, api_key_env="JUDGE_TEST_KEY", max_concurrency=1, request_retries=0)
    assert judge.compare([CONVERSATION] * 3, ["a"] * 3, ["b"] * 3) == [None, None, 1.0]
    errors = [judge.last_error]
    with pytest.raises(InputError, match=r"judge.api_key_env: .*JUDGE_TEST_KEY.*HTTP 401") as e:
        ask(judge)
    errors += [str(e.value), repr(e.value), repr(judge), str(judge), str(judge.stats), str(vars(judge).get("stats"))]
    assert all(key not in text for text in errors), errors
    assert "***" in errors[0]  # the 500's echoed key, redacted
    assert {r["headers"]["Authorization"] for r in server.requests} == {f"Bearer {key}"}


def test_a_rejected_key_cancels_the_requests_in_flight(server):
    server.replies.append(Reply(status=401, delay_s=0.2))
    server.default = lambda body: Reply(hang=True)
    judge = make_judge(server, timeout_s=10.0, max_concurrency=4)
    t0 = time.monotonic()
    with pytest.raises(InputError, match="judge.api_key_env"):
        ask(judge, n=4)
    assert time.monotonic() - t0 < 2.0 and len(server.requests) == 4


def test_403_is_an_auth_error_too_and_no_key_says_so(server):
    server.replies.append(Reply(status=403, body="forbidden"))
    with pytest.raises(InputError, match=r"judge.api_key_env: .*no key .*HTTP 403"):
        ask(make_judge(server))


def test_an_unset_key_variable_fails_when_the_judge_is_built(monkeypatch):
    monkeypatch.delenv("JUDGE_TEST_UNSET", raising=False)
    with pytest.raises(InputError, match="^judge.api_key_env: environment variable JUDGE_TEST_UNSET is not set$"):
        llm_judge(base_url="http://127.0.0.1:9/v1", model="m", api_key_env="JUDGE_TEST_UNSET")


# --- logprobs -------------------------------------------------------------------------------------

def token(text, top=()):
    return {"token": text, "logprob": -0.1, "top_logprobs": [{"token": t, "logprob": math.log(p)} for t, p in top]}


def test_logprobs_give_the_probability_at_the_verdict_letter(server):
    # "Assistant A" earlier must not be taken for the verdict; " A" and "A" are one letter
    content = [token("Assistant"), token(" A", [(" A", 0.9), ("B", 0.1)]), token(" wins"), token(" [["),
               token("B", [("B", 0.5), ("A", 0.2), (" A", 0.1), ("C", 0.1), ("x", 0.1)]), token("]]")]
    server.replies.append(Reply(content="Assistant A wins [[B]]", logprobs=content))
    judge = make_judge(server, verdict="logprobs")
    (p,) = ask(judge)
    assert p == pytest.approx((0.3 + 0.5 * 0.1) / (0.3 + 0.5 + 0.1))  # = 0.35/0.9
    body = server.requests[0]["body"]
    assert body["logprobs"] is True and body["top_logprobs"] == 20


def test_logprobs_with_the_brackets_split_and_missing_letters():
    split = [token("["), token("["), token("C", [("C", 0.6), ("A", 0.4)]), token("]]")]
    assert logprob_verdict(split) == pytest.approx(0.4 + 0.5 * 0.6)
    assert logprob_verdict([token("[["), token("A", [("A", 1.0)])]) == 1.0  # B and C absent count 0
    assert logprob_verdict([token("[[A]]", [("[[A]]", 1.0)])]) is None  # no letter token
    assert logprob_verdict([token("[["), token("A", [("x", 1.0)])]) is None  # no letter in its top log-probs
    assert logprob_verdict(None) is None


def test_logprobs_fall_back_to_the_text(server):
    server.replies.extend([Reply(content="[[B]]", logprobs=[token("[["), token("B", [("x", 0.9)]), token("]]")]),
                           Reply(content="[[C]]"),  # the server sent no logprobs
                           Reply(content="nothing", logprobs=[token("nothing", [("nothing", 1.0)])])])
    judge = make_judge(server, verdict="logprobs", max_concurrency=1)
    assert judge.compare([CONVERSATION] * 3, ["a"] * 3, ["b"] * 3) == [0.0, 0.5, None]
    assert judge.stats["unparsed"] == 1


# --- rate limits ----------------------------------------------------------------------------------

def test_reserve_spaces_requests_and_books_tokens():
    rpm = RateLimiter(requests_per_minute=600)
    assert [rpm.reserve(1) for _ in range(4)] == pytest.approx([0.0, 0.1, 0.2, 0.3], abs=0.01)
    tpm = RateLimiter(tokens_per_minute=6000)  # 100 tokens a second
    assert [tpm.reserve(50), tpm.reserve(50), tpm.reserve(10)] == pytest.approx([0.0, 0.5, 1.0], abs=0.01)
    both = RateLimiter(requests_per_minute=60, tokens_per_minute=6000)
    assert [both.reserve(10), both.reserve(500), both.reserve(1)] == pytest.approx([0.0, 1.0, 6.0], abs=0.01)
    free = RateLimiter()
    assert [free.reserve(10**6) for _ in range(3)] == [0.0, 0.0, 0.0]
    free.hold(2.0)
    assert free.reserve(1) == pytest.approx(2.0, abs=0.01) and free.reserve(1) == pytest.approx(2.0, abs=0.01)


def test_reserve_is_thread_safe():
    limiter, starts = RateLimiter(requests_per_minute=60_000), []  # 1 ms apart

    def book():
        for _ in range(50):
            now = time.monotonic()
            starts.append(now + limiter.reserve(1))

    threads = [threading.Thread(target=book) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    starts.sort()
    assert len(starts) == 200 and min(b - a for a, b in zip(starts, starts[1:])) >= 0.001 - 1e-4


def test_one_limiter_shared_by_three_judges_in_three_threads_holds_the_run_rate(server):
    limiter = RateLimiter(requests_per_minute=600)  # one request per 0.1 s for all judges together
    judges = [make_judge(server, limiter=limiter, max_concurrency=4) for _ in range(3)]
    out = {}
    threads = [threading.Thread(target=lambda i=i: out.setdefault(i, ask(judges[i], n=4))) for i in range(3)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert out == {i: [1.0] * 4 for i in range(3)}
    arrivals = sorted(server.arrivals())
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:])]
    assert len(arrivals) == 12 and min(gaps) >= 0.1 - 0.03, gaps
    assert arrivals[-1] - t0 >= 1.1 - 0.03  # 12 requests at 10 a second, not 30
