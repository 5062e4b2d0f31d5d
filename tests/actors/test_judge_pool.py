"""The judge pool under real local Ray (``pipeline.judges``): pairs shared in order, a killed
judge's share re-issued, one rate limit across every judge actor, failures counted not scored,
and the LLM judge driving self-play against a local HTTP server standing in for a provider
(tests/llm_server.py)."""

import json
import os
import signal
import threading

import pyarrow.parquet as pq
import pytest

from actors.judge import PreferenceJudge, judge_all
from actors.remote import RayCluster
from games.judges.llm import RateLimiter

CONV = [{"role": "user", "content": "2+3"}]


def pairs(n: int):
    answers = [f"{5 + i % 3}{'!.~'[i % 3]}" for i in range(n)]
    return [CONV] * n, answers, answers[1:] + answers[:1]


def test_a_pool_shares_the_pairs_in_order_and_a_killed_judges_share_is_reissued(ray_session, task):
    conversations, a, b = pairs(30)
    expected = PreferenceJudge(kind="rule", task=task).compare(conversations, a, b)
    cluster = RayCluster(max_restarts=1)
    try:
        judges = [cluster.spawn(PreferenceJudge, cpus=0, restartable=True, kind="rule", task=task) for _ in range(3)]
        verdicts = judge_all(cluster, judges, conversations, a, b)
        assert verdicts.probabilities == pytest.approx(expected) and verdicts.pairs == 30
        # judge 1 dies: its share (pairs 10–19) is sent again to its re-created actor
        pid = cluster.ray.get(judges[1].actor.__ray_call__.remote(lambda self_: os.getpid()))
        os.kill(pid, signal.SIGKILL)
        assert judge_all(cluster, judges, conversations, a, b).probabilities == pytest.approx(expected)
        assert sum(cluster.restarts.values()) == 1
    finally:
        cluster.shutdown()


def test_one_rate_limit_holds_across_three_llm_judge_actors(ray_session, server):
    """600 requests per minute for the run: whichever of the 3 judges sends, consecutive requests
    reach the server ≥ 0.1 s apart (3 limits of their own would let 3 arrive at once)."""
    cluster = RayCluster()
    try:
        limiter = cluster.spawn(RateLimiter, cpus=0, requests_per_minute=600).actor
        settings = {"base_url": server.url, "model": "judge-model", "timeout_s": 5.0, "requests_per_minute": 600}
        judges = [cluster.spawn(PreferenceJudge, cpus=0, kind="llm", settings=settings, limiter=limiter)
                  for _ in range(3)]
        conversations, a, b = pairs(6)
        verdicts = judge_all(cluster, judges, conversations, a, b)  # 2 pairs × 2 orders per judge
        assert verdicts.probabilities == [0.5] * 6  # "[[A]]" in both orders: a position-biased judge ...
        assert verdicts.flips == 6  # ... whose every verdict flips with the order
        times = sorted(server.arrivals())
        gaps = [y - x for x, y in zip(times, times[1:])]
        print(f"12 requests from 3 judge actors: smallest gap {min(gaps):.3f} s, span {times[-1] - times[0]:.2f} s")
        assert len(times) == 12 and min(gaps) >= 0.1 - 0.02 and times[-1] - times[0] >= 1.1 - 0.05
    finally:
        cluster.shutdown()


FLAKY = '''
class DropsSome:
    """Answers None (could not judge) for any pair whose answer a ends with "~"."""
    antisymmetric = True
    def compare(self, conversations, a, b):
        return [None if x.endswith("~") else 0.75 for x in a]
'''


def test_pairs_a_judge_cannot_judge_are_counted_and_dropped_never_scored(plugin, small_config, tmp_path):
    from framework.jobs.selfplay import run as run_selfplay

    host = PreferenceJudge(kind="custom", target=f"{plugin('flaky_judge', FLAKY)}:DropsSome", requeue=2)
    verdicts = host.judge_pairs([CONV] * 3, ["5!", "5~", "4."], ["1", "2", "3"])
    assert verdicts.probabilities == [0.75, None, 0.75] and verdicts.failures == 1 and verdicts.asked == 3 + 2
    run_selfplay(small_config("judge.kind=custom", "judge.target=flaky_judge:DropsSome", "train.iterations=2",
                              "pipeline.ray=false", "pipeline.mode=sync"), tmp_path, progress=False)
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    comparisons = pq.read_table(tmp_path / "comparisons").to_pylist()
    assert all(c["probability"] == 0.75 for c in comparisons)  # no made-up ½ or 0
    failures = sum(r["judge_failures"] for r in rows)
    assert failures > 0 and sum(r["judge_pairs"] for r in rows) == len(comparisons) + failures
    assert all(r["judge_dropped_conversations"] > 0 for r in rows if r["judge_failures"])


def test_the_llm_judge_drives_self_play_under_ray(ray_session, server, small_config, tmp_path):
    """Against the local stand-in server answering by the answers' styles ("!" beats "."), with a
    request rate limit and two judge actors; the key named by api_key_env stays out of the run."""
    key = "sk-test-" + os.urandom(8).hex()
    os.environ["ALIGNPLAY_TEST_JUDGE_KEY"] = key
    lock, seen = threading.Lock(), []

    def verdict(body):
        from llm_server import Reply

        text = body["messages"][-1]["content"]
        answer_a = text.split("[The Start of Assistant A's Answer]\n")[1].split("\n")[0]
        answer_b = text.split("[The Start of Assistant B's Answer]\n")[1].split("\n")[0]
        with lock:
            seen.append(1)
        return Reply(content="[[C]]" if answer_a[-1:] == answer_b[-1:] else
                     "[[A]]" if answer_a.endswith("!") or answer_b.endswith(".") else "[[B]]")

    server.default = verdict
    cfg = small_config("quick=true", "train.iterations=2", "eval.every=2", "judge.kind=llm",
                       f"judge.base_url={server.url}", "judge.model=judge-model",
                       "judge.api_key_env=ALIGNPLAY_TEST_JUDGE_KEY", "judge.requests_per_minute=60000",
                       "pipeline.judges=2")
    from framework.jobs.selfplay import run as run_selfplay

    try:
        run_selfplay(cfg, tmp_path, progress=False)
    finally:
        del os.environ["ALIGNPLAY_TEST_JUDGE_KEY"]
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(r["judge_failures"] == 0 for r in rows)
    assert sum(r["judge_pairs"] for r in rows) * 2 <= len(seen)  # both orders of every pair (and evaluation's)
    assert server.requests[0]["headers"]["Authorization"] == f"Bearer {key}"
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert key.encode() not in path.read_bytes(), path
