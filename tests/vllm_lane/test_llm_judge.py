"""The LLM judge against a real ``vllm serve`` of the tiny policy on 127.0.0.1 (OpenAI-compatible).

The tiny model knows nothing about judging and has 128 positions, so the prompt is a short template
and vLLM's structured outputs force the reply to be one of "[[A]]", "[[B]]", "[[C]]": what is
under test is the wire path (request, response, parsing, log-probs), not the verdicts' quality.
"""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from actors.backends.vllm import CPU_ENV_DEFAULTS
from games.judges.llm import LLMJudge, logprob_verdict

CHOICE = {"structured_outputs": {"choice": ["[[A]]", "[[B]]", "[[C]]"]}}
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # 127.0.0.1 only, never a proxy


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str):
    with OPENER.open(url, timeout=5) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def served(tiny_policy, tmp_path_factory):
    """``vllm serve`` of the tiny policy as model "tiny"; yields its /v1 URL."""
    port, log_path = free_port(), tmp_path_factory.mktemp("vllm-serve") / "server.log"
    max_len = json.loads((Path(tiny_policy) / "config.json").read_text())["max_position_embeddings"]
    env = {**CPU_ENV_DEFAULTS, **os.environ}
    env.setdefault("VLLM_CPU_OMP_THREADS_BIND", ",".join(map(str, sorted(os.sched_getaffinity(0)))))
    # the server's module, not the `vllm` script: that one asks for the version of a distribution
    # named "vllm", and this venv's is "vllm_cpu"
    command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(tiny_policy),
               "--host", "127.0.0.1", "--port", str(port), "--served-model-name", "tiny", "--dtype", "float32",
               "--max-model-len", str(max_len), "--enforce-eager", "--no-enable-chunked-prefill",
               "--generation-config", "vllm", "--seed", "0"]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 180
        while True:
            if process.poll() is not None:
                pytest.fail(f"vllm serve exited with {process.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                if get(url + "/models")["data"][0]["id"] == "tiny":
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"vllm serve not ready after 180 s:\n{log_path.read_text()[-3000:]}")
            time.sleep(1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def template(tmp_path):
    path = tmp_path / "judge.txt"
    path.write_text("{question} A:{answer_a} B:{answer_b}")
    return str(path)


def pairs(task, n):
    """n real running_sum states, each with a correct answer in two styles."""
    from games.tasks.running_sum import running_total

    states = task.heldout_states(n, seed=0)[:n]
    totals = [running_total(s) for s in states]
    return states, [f"{t}!" for t in totals], [f"{t}." for t in totals]


def test_every_pair_gets_a_verdict_in_both_orders(served, template, task):
    judge = LLMJudge(base_url=served, model="tiny", template=template, max_tokens=8, timeout_s=30.0,
                     request_retries=1, max_concurrency=4, extra_body={**CHOICE, "temperature": 0.0})
    states, a, b = pairs(task, 6)
    forward, backward = judge.compare(states, a, b), judge.compare(states, b, a)
    assert len(forward) == len(backward) == len(states)
    assert all(p in (0.0, 0.5, 1.0) for p in forward + backward), (forward, backward)
    assert judge.stats == {"requests": 2 * len(states), "retries": 0, "failures": 0, "unparsed": 0,
                           "rate_limited": 0}


def test_logprobs_mode_reads_the_verdict_letter_of_the_real_reply(served, template, task):
    """The judge's P is strictly between 0 and 1 (read from log-probs: the text alone gives 0, ½ or 1)
    and equals ``logprob_verdict`` of the same request sent by hand (greedy: the same reply)."""
    states, a, b = pairs(task, 1)
    extra = {**CHOICE, "temperature": 0.0}
    judge = LLMJudge(base_url=served, model="tiny", template=template, max_tokens=8, timeout_s=30.0,
                     verdict="logprobs", extra_body=extra)
    (p,) = judge.compare(states, a, b)
    body = {"model": "tiny", "messages": judge.messages(states[0], a[0], b[0]), "max_tokens": 8,
            "logprobs": True, "top_logprobs": 20, **extra}
    request = urllib.request.Request(served + "/chat/completions", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with OPENER.open(request, timeout=30) as response:
        choice = json.loads(response.read())["choices"][0]
    content = choice["logprobs"]["content"]
    assert choice["message"]["content"] in CHOICE["structured_outputs"]["choice"]
    # the tiny tokenizer writes "[[A]]" a character a token; the grammar leaves only the 3 letters
    assert [t["token"] for t in content[:2]] == ["[", "["]
    assert {t["token"] for t in content[2]["top_logprobs"] if t["logprob"] > -100} == {"A", "B", "C"}
    assert 0.0 < p < 1.0 and p == pytest.approx(logprob_verdict(content), abs=1e-6)
    assert judge.stats["requests"] == 1 and judge.stats["failures"] == 0


def test_the_llm_judge_served_by_vllm_drives_self_play_under_ray(served, template, ray_session, cache_dir,
                                                                  tmp_path):
    """``judge.kind=llm`` against the real ``vllm serve``: a quick self-play run under Ray, two judge
    actors sharing the pairs, every pair judged in both orders and none failing."""
    import yaml

    from framework.config import load_config
    from framework.jobs.selfplay import run as run_selfplay

    config = tmp_path / "llm_judge.yaml"
    config.write_text(yaml.safe_dump({"judge": {
        "kind": "llm", "base_url": served, "model": "tiny", "template": template, "max_tokens": 8,
        "timeout_s": 60.0, "extra_body": {**CHOICE, "temperature": 0.0}}}))
    cfg = load_config(config, [f"cache_dir={cache_dir}", "quick=true", "task.turns=2", "warm_start.steps=150",
                               "train.conversations=4", "algo.k=2", "train.iterations=2", "eval.every=2",
                               "eval.conversations=2", "eval.final_conversations=2", "eval.samples=1",
                               "pipeline.backend=hf", "pipeline.judges=2"])
    run_selfplay(cfg, tmp_path / "run", progress=False)
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(r["judge_pairs"] > 0 and r["judge_failures"] == 0 for r in rows)
    assert all(r["judge_position_flip"] is not None and r["judge_tie_rate"] is not None for r in rows)
    print("LLM judge (vllm serve) per iteration:", [(r["judge_pairs"], round(r["judge_pairs_per_s"], 1),
                                                     r["judge_position_flip"], r["judge_tie_rate"]) for r in rows])
