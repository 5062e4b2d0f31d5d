"""The bad-input catalogue (issue 15): every case runs the installed ``alignplay`` command in a
subprocess, as a user would, and must end with exit code 2, exactly one line on stderr —
``alignplay: error: ...`` naming the key, row or file and what was expected — no traceback, and
a run directory that was never created (or, resuming or evaluating a finished run, is unchanged:
the same files with the same sizes and modification times).

What the cases need once — a finished 12-iteration self-play run (its checkpoints and policy
are corrupted in copies) and a finished DP run — is built per module by the CLI itself. Each CLI
start spends ~4 s importing torch, Ray and transformers, so the cases run two at a time.

The catalogue, 90 cases, by category:

    config       27   values of the wrong type, out of range, unknown keys and names
    files        22   config files, demonstrations, task files, model directories
    judges       16   a user's judge module (syntax, import, constructor), kwargs, kinds; model
                     paths, LLM endpoints, keys and templates; train_judge data (issue 16)
    checkpoints  13   corrupt or foreign checkpoints on resume, shortening a run
    paths         7   unwritable run and cache directories, eval arguments
    dp budgets    5   schedules and batches the privacy budget or the corpus cannot hold

Run on the code before the issue-15 fixes (the same cases), 39 were clear, 33 unclear (a
traceback, a crash, more than one line, a wrong key named, or the run directory written first)
and 2 accepted silently (resuming with fewer iterations or DP steps); now all 74 are clear; issue 16 added 8 judge cases, issue 17 four, the DP
ablation options four.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest

from tests.conftest import DP_SMALL

REPO = Path(__file__).resolve().parents[1]
QUICKSTART, DP_EXAMPLE = str(REPO / "examples" / "quickstart.yaml"), str(REPO / "examples" / "dp_continual.yaml")
_BESIDE = Path(sys.executable).parent / "alignplay"  # the console script (make test does not activate the venv)
ALIGNPLAY = str(_BESIDE) if _BESIDE.exists() else shutil.which("alignplay")

#: A small self-play experiment in this process (no Ray), from the random-init tiny model.
SP = ["pipeline.ray=false", "task.turns=2", "warm_start.steps=0", "train.conversations=4", "algo.k=2",
      "train.iterations=12", "checkpoint.every=6", "eval.every=6", "eval.conversations=2",
      "eval.final_conversations=2", "eval.samples=2", "cache_dir={cache}"]
DP = [*DP_SMALL, "pipeline.ray=false", "cache_dir={cache}"]


def sp(*extra: str, run_dir: str = "{t}/run") -> tuple[str, ...]:
    return ("run", QUICKSTART, "--run-dir", run_dir, *SP, *extra)


def dp(*extra: str, run_dir: str = "{t}/run") -> tuple[str, ...]:
    return ("run", DP_EXAMPLE, "--run-dir", run_dir, *DP, *extra)


def demos(path: str = "{t}/d.jsonl") -> tuple[str, ...]:
    """A self-play run whose warm start reads ``demos.path``."""
    return sp("warm_start.steps=1", f"demos.path={path}")


def dialogues(path: str = "{t}/d.jsonl") -> tuple[str, ...]:
    """A self-play run on MT-Bench-101-format dialogues from ``task.path``."""
    return sp("task.name=mtbench101", f"task.path={path}")


@dataclass(frozen=True)
class Case:
    id: str
    category: str
    args: tuple[str, ...]  # ``{t}``: the case's folder, ``{cache}``: the module's cache
    expect: str  # a part of the one line
    files: dict = field(default_factory=dict)  # name under {t} → bytes, or a function of the artifacts
    start: str | None = None  # "selfplay" | "dp": {t}/run starts as a copy of that finished run
    corrupt: Callable[[Path], None] | None = None  # applied to {t}/run before the command
    watch: str = "{t}/run"  # must not appear (must stay as it was, with ``start``)


# --- what cases write ----------------------------------------------------------------------
def line(obj) -> bytes:
    return (json.dumps(obj) + "\n").encode()


DEMO = line({"prompt": "3+4", "response": "7!"})
DIALOGUE = line({"id": 1, "history": [{"user": "hello", "bot": "hi"}]})
SAMPLE = REPO / "examples" / "data" / "mtbench101_sample.jsonl"  # 24 dialogues


def with_huge_line(head: bytes, start: bytes, end: bytes):
    """A file of ``head`` and then a 50 MB line: ``start``, 50 MB of text, ``end``."""
    def write(path: Path, art) -> None:
        with path.open("wb") as f:
            f.write(head + start)
            for _ in range(50):
                f.write(b"x" * (1 << 20))
            f.write(end)
    return write


def model_dir(change: Callable[[Path], None]):
    """A copy of the finished run's final policy, with ``change`` applied."""
    def build(target: Path, art) -> None:
        shutil.copytree(art["selfplay"] / "checkpoints" / "final" / "policy", target)
        change(target)
    return build


def cut_in_half(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


JUDGE_OK = b"class Judge:\n    def compare(self, conversations, a, b):\n        return [0.5] * len(a)\n"

CASES = [
    # --- config: values, types, keys, names -----------------------------------------------
    Case("checkpoint.every=0", "config", sp("checkpoint.every=0"), "checkpoint.every: must be ≥ 1, got 0"),
    Case("checkpoint.keep=-1", "config", sp("checkpoint.keep=-1"), "checkpoint.keep: must be ≥ 0"),
    Case("pipeline.num_cpus=0", "config", sp("pipeline.num_cpus=0"), "pipeline.num_cpus: must be ≥ 1"),
    Case("seed=-1", "config", sp("seed=-1"), "seed: must be ≥ 0, got -1"),
    Case("dp.max_grad_norm=inf", "config", dp("dp.max_grad_norm=inf"),
         "dp.max_grad_norm: the clipping bound must be finite and > 0, got inf"),
    Case("dp.max_grad_norm=nan", "config", dp("dp.max_grad_norm=nan"), "dp.max_grad_norm: the clipping bound "
         "must be finite and > 0, got nan"),
    Case("dp.max_grad_norm=0", "config", dp("dp.max_grad_norm=0"), "dp.max_grad_norm: the clipping bound must be"),
    Case("unknown key", "config", sp("train.iteratons=5"), "train.iteratons"),
    Case("wrong type int", "config", sp("train.iterations=abc"), "train.iterations"),
    Case("override without =", "config", ("run", QUICKSTART, "quick", "--run-dir", "{t}/run"),
         "quick: an override must look like key=value"),
    Case("unknown pipeline.mode", "config", sp("pipeline.mode=turbo"), "pipeline.mode: must be 'sync' or 'async'"),
    Case("unknown algo.name", "config", sp("algo.name=ppo"), "algo.name: unknown algorithm 'ppo'"),
    Case("unknown job", "config", sp("job=nope"), "job: unknown job 'nope'"),
    Case("unknown task.name", "config", sp("task.name=chess"), "task.name: unknown task 'chess'"),
    Case("unknown model.dtype", "config", sp("model.dtype=float16"), "model.dtype: must be one of"),
    Case("unknown dp.accountant", "config", dp("dp.accountant=gdp"), "dp.accountant: must be 'rdp' or 'prv'"),
    Case("unknown dp.clipping", "config", dp("dp.clipping=per_layer"),
         "dp.clipping: must be one of ('flat', 'automatic'), got 'per_layer'"),
    Case("dp.start_from for a method without a switch", "config", dp("dp.method=dp_scratch", "dp.start_from={t}"),
         "dp.start_from: only a continual method (public then private phase) starts from a public_only checkpoint"),
    Case("negative train.conversations", "config", sp("train.conversations=-1"), "train.conversations: must be ≥ 1"),
    Case("algo.k=1", "config", sp("algo.k=1"), "algo.k: must be ≥ 2"),
    # issue 17: the demonstration methods' settings
    Case("algo.temperature on mpo", "config", sp("algo.temperature=0"), "algo.temperature: is implemented for"),
    Case("unknown warm_start.until", "config", sp("warm_start.until=forever"), "warm_start.until: must be 'steps'"),
    Case("compare.lr_grid of words", "config", sp("compare.lr_grid=[fast]"), "compare.lr_grid: [fast] holds a value that is not a Float"),
    Case("missing algo.reward_model", "files", sp("algo.name=rft", "algo.kl_coef=0", "algo.reward_model={t}/nope"),
         "algo.reward_model: {t}/nope does not exist"),
    Case("model.tiny.heads=3", "config", sp("model.tiny.heads=3"), "model.tiny.hidden_size: hidden_size / heads"),
    Case("eval.samples=0", "config", sp("eval.samples=0"), "eval.samples: must be ≥ 1, got 0"),
    Case("task.path for running_sum", "config", sp("task.path={t}/d.jsonl"),
         "task.path: task 'running_sum' reads no file", files={"d.jsonl": DIALOGUE}),
    Case("task.turns=9", "config", sp("task.turns=9"), "task.turns must be in 1..8, got 9"),

    # --- files: configs, demonstrations, task files, model directories ------------------------
    Case("missing config file", "files", ("run", "{t}/missing.yaml", "--run-dir", "{t}/run"), "no such config file"),
    Case("YAML syntax error", "files", ("run", "{t}/bad.yaml", "--run-dir", "{t}/run"), "not valid YAML",
         files={"bad.yaml": b"job: selfplay\ntrain: {iterations: 3\n"}),
    Case("YAML top-level list", "files", ("run", "{t}/list.yaml", "--run-dir", "{t}/run"),
         "the top level must be a mapping", files={"list.yaml": b"- job: selfplay\n"}),
    Case("demos.path missing", "files", demos("{t}/none.jsonl"), "demos.path: {t}/none.jsonl does not exist"),
    Case("demos.path wrong suffix", "files", demos("{t}/d.txt"), "must be .jsonl or .parquet", files={"d.txt": DEMO}),
    Case("demos.path not UTF-8", "files", demos(), "d.jsonl:2: not UTF-8 text",
         files={"d.jsonl": DEMO + b'{"prompt": "\xff\xfe", "response": "x"}\n'}),
    Case("demos.path empty", "files", demos(), "demos.path: {t}/d.jsonl holds no row", files={"d.jsonl": b"\n"}),
    Case("demos.path bad JSON", "files", demos(), "d.jsonl:2: not valid JSON",
         files={"d.jsonl": DEMO + b'{"prompt": \n'}),
    Case("demos.path row not an object", "files", demos(), "d.jsonl: row 1: expected a JSON object",
         files={"d.jsonl": DEMO + b"[1, 2]\n"}),
    Case("demos.path missing field", "files", demos(), "d.jsonl: row 1: field 'prompt': expected a non-empty string",
         files={"d.jsonl": DEMO + line({"prompt": "", "response": "x"})}),
    Case("demos.path 50 MB line", "files", demos(), "d.jsonl:2: the line is longer than 1048576 bytes",
         files={"d.jsonl": with_huge_line(DEMO, b'{"prompt": "', b'", "response": "y"}\n')}),
    Case("task.path missing", "files", dialogues("{t}/none.jsonl"), "task.path: {t}/none.jsonl does not exist"),
    Case("task.path not UTF-8", "files", dialogues(), "d.jsonl:1: not UTF-8 text",
         files={"d.jsonl": b'{"history": [{"user": "caf\xe9"}]}\n'}),
    Case("task.path 50 MB line", "files", dialogues(), "d.jsonl:25: the line is longer than 1048576 bytes",
         files={"d.jsonl": with_huge_line(SAMPLE.read_bytes(), b'{"id": 999, "history": [{"user": "', b'"}]}\n')}),
    Case("task.path empty", "files", dialogues(), "holds no dialogue", files={"d.jsonl": b""}),
    Case("task.path bad row", "files", dialogues(), "d.jsonl:1: field 'history': expected a non-empty list",
         files={"d.jsonl": line({"id": 1, "history": []})}),
    Case("model.path missing", "files", sp("model.path=/no/such/model"), "model.path: /no/such/model does not exist"),
    Case("model.path no config.json", "files", sp("model.path={t}/m"), "has no config.json",
         files={"m": model_dir(lambda m: (m / "config.json").unlink())}),
    Case("model.path no weights", "files", sp("model.path={t}/m"), "model.path: {t}/m holds no weights",
         files={"m": model_dir(lambda m: (m / "model.safetensors").unlink())}),
    Case("model.path truncated weights", "files", sp("model.path={t}/m"),
         "model.path: {t}/m/model.safetensors is truncated or corrupt",
         files={"m": model_dir(lambda m: cut_in_half(m / "model.safetensors"))}),
    Case("model.path no tokenizer", "files", sp("model.path={t}/m"), "model.path: {t}/m has no tokenizer",
         files={"m": model_dir(lambda m: [(m / n).unlink() for n in ("tokenizer.json", "tokenizer_config.json")])}),

    # --- judges ------------------------------------------------------------------------------
    Case("judge module missing", "judges", sp("judge.kind=custom", "judge.target=no_such_module:Judge"),
         "judge.target: cannot import 'no_such_module'"),
    Case("judge module SyntaxError", "judges", sp("judge.kind=custom", "judge.target=judge_syntax:Judge"),
         "judge.target: 'judge_syntax' does not compile (expected ':' at",
         files={"judge_syntax.py": b"class Judge:\n    def compare(self, conversations, a, b)\n        return []\n"}),
    Case("judge module raises at import", "judges", sp("judge.kind=custom", "judge.target=judge_raises:Judge"),
         "judge.target: importing 'judge_raises' raised RuntimeError: no API key in the environment at",
         files={"judge_raises.py": b"import os\nraise RuntimeError('no API key in the environment')\n"}),
    Case("judge constructor raises", "judges", sp("judge.kind=custom", "judge.target=judge_ctor:Judge"),
         "judge.target judge_ctor:Judge: the constructor raised ConnectionError: cannot reach the judge server at",
         files={"judge_ctor.py": b"class Judge:\n    def __init__(self):\n"
                                 b"        raise ConnectionError('cannot reach the judge server')\n"}),
    Case("judge without compare", "judges", sp("judge.kind=custom", "judge.target=judge_nc:Judge"),
         "has no compare(conversations, a, b) method", files={"judge_nc.py": b"class Judge:\n    pass\n"}),
    Case("judge.kwargs for the rule judge", "judges", sp("judge.kwargs.foo=1"),
         "judge.kwargs: the rule judge of task 'running_sum' got an unexpected keyword argument 'foo'"),
    Case("judge.kwargs for a custom judge", "judges", sp("judge.kind=custom", "judge.target=judge_ok:Judge",
                                                         "judge.kwargs.foo=1"),
         "judge.target judge_ok:Judge: cannot construct with judge.kwargs (got an unexpected keyword argument 'foo')",
         files={"judge_ok.py": JUDGE_OK}),
    Case("unknown judge.kind", "judges", sp("judge.kind=oracle"), "judge.kind: unknown judge 'oracle'"),
    Case("reward_model without a path", "judges", sp("judge.kind=reward_model"),
         "judge.path: judge.kind=reward_model needs judge.path"),
    Case("reward_model path not a model", "judges", sp("judge.kind=reward_model", "judge.path={t}/empty"),
         "judge.path: {t}/empty has no config.json", files={"empty": lambda path, art: path.mkdir()}),
    Case("llm without base_url", "judges", sp("judge.kind=llm", "judge.model=m"),
         "judge.base_url: judge.kind=llm needs judge.base_url"),
    Case("llm base_url not http", "judges", sp("judge.kind=llm", "judge.model=m", "judge.base_url=ftp://x"),
         "judge.base_url: must start with http:// or https://"),
    Case("llm api_key_env unset", "judges", sp("judge.kind=llm", "judge.model=m", "judge.base_url=http://127.0.0.1:9/v1",
                                               "judge.api_key_env=ALIGNPLAY_NO_SUCH_KEY"),
         "judge.api_key_env: environment variable ALIGNPLAY_NO_SUCH_KEY is not set"),
    Case("llm template without {answer_b}", "judges", sp("judge.kind=llm", "judge.model=m",
                                                         "judge.base_url=http://127.0.0.1:9/v1",
                                                         "judge.template={t}/t.txt"),
         "judge.template", files={"t.txt": b"{question} A: {answer_a}"}),
    Case("train_judge without data", "judges", sp("job=train_judge"), "train_judge.data: job=train_judge needs"),
    Case("train_judge bad row", "judges", sp("job=train_judge", "train_judge.data={t}/p.jsonl"),
         "{t}/p.jsonl:2: 'probability' must be a number in [0, 1]",
         files={"p.jsonl": b'{"prompt": "1+1", "chosen": "2!", "rejected": "3."}\n'
                           b'{"prompt": "1+1", "a": "2!", "b": "3.", "probability": 2}\n'}),

    # --- checkpoints: resuming the finished 12-iteration run (and the DP run) ---------------------
    Case("resume: truncated weights", "checkpoints", sp("resume=true"),
         "resume: {t}/run/checkpoints/final/policy/model.safetensors is truncated or corrupt", start="selfplay",
         corrupt=lambda r: cut_in_half(r / "checkpoints" / "final" / "policy" / "model.safetensors")),
    Case("resume: truncated optimizer state", "checkpoints", sp("resume=true"),
         "resume: {t}/run/checkpoints/final/optimizer.safetensors is truncated or corrupt", start="selfplay",
         corrupt=lambda r: cut_in_half(r / "checkpoints" / "final" / "optimizer.safetensors")),
    Case("resume: garbage state.json", "checkpoints", sp("resume=true"),
         "{t}/run/checkpoints/final/state.json: not valid JSON", start="selfplay",
         corrupt=lambda r: (r / "checkpoints" / "final" / "state.json").write_bytes(b"\x00garbage{")),
    Case("resume: state.json without iteration", "checkpoints", sp("resume=true"),
         "state.json: expected a JSON object with an integer 'iteration'", start="selfplay",
         corrupt=lambda r: (r / "checkpoints" / "final" / "state.json").write_text('{"iteration": "12"}')),
    Case("resume: missing optimizer state", "checkpoints", sp("resume=true"),
         "resume: {t}/run/checkpoints/final/optimizer.safetensors is missing", start="selfplay",
         corrupt=lambda r: (r / "checkpoints" / "final" / "optimizer.safetensors").unlink()),
    Case("resume: no checkpoint", "checkpoints", sp("resume=true"), "has no checkpoint to resume from",
         start="selfplay", corrupt=lambda r: shutil.rmtree(r / "checkpoints")),
    Case("resume: a self-play run with the DP job", "checkpoints", dp("resume=true"),
         "resume=true with job=dp, but {t}/run holds a job=selfplay run", start="selfplay"),
    Case("resume: a DP run with the self-play job", "checkpoints", sp("resume=true"),
         "resume=true with job=selfplay, but {t}/run holds a job=dp run", start="dp"),
    Case("resume: fewer iterations", "checkpoints", sp("resume=true", "train.iterations=5"),
         "resume=true with train.iterations=5, but {t}/run already has 12 iterations", start="selfplay"),
    Case("resume: fewer DP steps", "checkpoints", dp("resume=true", "dp.private_steps=2"),
         "resume=true with dp.public_steps=4, dp.private_steps=2, but {t}/run already has 8 steps (4 private)",
         start="dp"),
    Case("dp.start_from: no checkpoint there", "checkpoints", dp("dp.start_from={t}/nowhere"),
         "dp.start_from: {t}/nowhere is not a checkpoint of a job: dp run"),
    Case("dp.start_from: not a public_only checkpoint", "checkpoints",
         dp("dp.start_from={t}/run/checkpoints/final", run_dir="{t}/new"),
         "dp.start_from: {t}/run/checkpoints/final is a checkpoint of 'dp_continual', not of a public_only run",
         start="dp", watch="{t}/new"),
    Case("resume: another experiment", "checkpoints", sp("resume=true", "algo.eta=2"), "algo.eta differ from",
         start="selfplay"),

    # --- paths ---------------------------------------------------------------------------------
    Case("--run-dir in /proc", "paths", sp(run_dir="/proc/alignplay-x"), "--run-dir: cannot create /proc/alignplay-x",
         watch="/proc/alignplay-x"),
    Case("--run-dir under a file", "paths", sp(run_dir="{t}/f/run"), "--run-dir: cannot create {t}/f/run: {t}/f is a "
         "file, not a directory", files={"f": b"x"}, watch="{t}/f/run"),
    Case("DP --run-dir under a file", "paths", dp(run_dir="{t}/f/run"), "--run-dir: cannot create {t}/f/run",
         files={"f": b"x"}, watch="{t}/f/run"),
    Case("cache_dir in /proc", "paths", sp("cache_dir=/proc/alignplay-cache"),
         "cache_dir: cannot create /proc/alignplay-cache"),
    Case("cache_dir under a file", "paths", sp("cache_dir={t}/f/cache"), "cache_dir: cannot create {t}/f/cache: "
         "{t}/f is a file", files={"f": b"x"}),
    Case("eval --conversations 0", "paths", ("eval", "{t}/run", "--conversations", "0"),
         "eval: --conversations must be ≥ 1, got 0", start="selfplay"),
    Case("eval --samples 0", "paths", ("eval", "{t}/run", "--samples", "0"), "eval: --samples must be ≥ 1, got 0",
         start="selfplay"),

    # --- DP budgets -------------------------------------------------------------------------------
    Case("dp.noise_multiplier=0.05", "dp budgets", dp("dp.noise_multiplier=0.05"),
         "dp: the schedule does not fit the budget: dp.private_steps=4 at dp.noise_multiplier=0.05"),
    Case("dp.target_epsilon=1e-6", "dp budgets", dp("dp.target_epsilon=1e-6"),
         "dp.target_epsilon=1e-06: no noise multiplier ≤ 1e4 reaches ε = 1e-06 in 4 steps"),
    Case("dp.batch_size=100000", "dp budgets", dp("dp.batch_size=100000"), "dp.batch_size=100000 exceeds the"),
    Case("dp.batch_size=100000 without privacy", "dp budgets", dp("dp.method=nondp", "dp.batch_size=100000"),
         "dp.batch_size=100000 exceeds the"),
    Case("dp.target_epsilon=0", "dp budgets", dp("dp.target_epsilon=0"), "dp.target_epsilon: must be > 0"),
]


# --- running them ------------------------------------------------------------------------------
def snapshot(path: Path) -> dict | None:
    """Every file and folder under ``path`` with its size and modification time (None: no path)."""
    if not path.exists():
        return None
    return {str(p.relative_to(path)): (p.stat().st_size, p.stat().st_mtime_ns) if p.is_file() else "dir"
            for p in sorted(path.rglob("*"))}


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    assert ALIGNPLAY, "the alignplay console script is not installed"
    return subprocess.run([ALIGNPLAY, *args], capture_output=True, text=True, cwd=cwd, timeout=300)


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory, cache_dir) -> dict:
    """A finished 12-iteration self-play run and a finished DP run (4 + 4 steps), built by the CLI."""
    root = tmp_path_factory.mktemp("finished")
    runs = {"selfplay": sp(run_dir=str(root / "selfplay")), "dp": dp(run_dir=str(root / "dp"))}
    with ThreadPoolExecutor(2) as pool:
        done = {k: pool.submit(cli, *[a.replace("{cache}", str(cache_dir)) for a in args], cwd=root)
                for k, args in runs.items()}
        for future in done.values():
            assert future.result().returncode == 0, future.result().stderr[-3000:]
    return {"selfplay": root / "selfplay", "dp": root / "dp", "cache": cache_dir}


def attempt(case: Case, t: Path, art: dict):
    """Set the case up in ``t`` and run it: the result, the snapshots of what it watches before and
    after, and the part of the line it expects."""
    t.mkdir(parents=True)
    fill = lambda s: s.replace("{t}", str(t)).replace("{cache}", str(art["cache"]))
    for name, content in case.files.items():
        if callable(content):
            content(t / name, art)
        else:
            (t / name).write_bytes(content)
    if case.start:
        shutil.copytree(art[case.start], t / "run")
        if case.corrupt:
            case.corrupt(t / "run")
    watch = Path(fill(case.watch))
    before = snapshot(watch)
    res = cli(*map(fill, case.args), cwd=t)
    return res, before, snapshot(watch), fill(case.expect)


@pytest.fixture(scope="module")
def outcomes(request, artifacts, tmp_path_factory) -> dict:
    """Every selected case, run two at a time."""
    selected = [item.callspec.params["case"] for item in request.session.items
                if getattr(item, "originalname", None) == "test_bad_input_is_one_clear_line"
                and item.module.__name__ == __name__]
    root = tmp_path_factory.mktemp("cases")
    with ThreadPoolExecutor(2) as pool:
        futures = {c.id: pool.submit(attempt, c, root / f"case{i:03d}", artifacts) for i, c in enumerate(selected)}
        return {k: f.result() for k, f in futures.items()}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_clear_line(case, outcomes):
    res, before, after, expect = outcomes[case.id]
    lines = res.stderr.strip().splitlines()
    silent = res.returncode == 0
    assert res.returncode == 2, f"{'silent' if silent else 'unclear'}: exit {res.returncode}\n{res.stderr[-3000:]}"
    assert "Traceback" not in res.stderr + res.stdout, f"unclear: a traceback\n{res.stderr[-3000:]}"
    assert len(lines) == 1 and lines[0].startswith("alignplay: error: "), f"unclear: {len(lines)} lines\n{res.stderr}"
    assert expect in lines[0], f"unclear: {lines[0]!r} does not say {expect!r}"
    if case.start is None:
        assert before is None and after is None, f"unclear: {case.watch} was created"
    else:
        assert after == before, "unclear: the run directory changed"


def test_a_resume_may_extend_a_run_but_not_shorten_it(artifacts, tmp_path):
    """A finished 12-iteration run: resuming with 5 iterations is refused and changes nothing (it
    used to exit 0 with a summary of 5 iterations over 12 lines of metrics); with 14 it runs the
    two more and the summary matches metrics.jsonl."""
    run_dir = tmp_path / "run"
    shutil.copytree(artifacts["selfplay"], run_dir)
    before = snapshot(run_dir)
    args = [a.replace("{t}", str(tmp_path)).replace("{cache}", str(artifacts["cache"])) for a in sp("resume=true")]
    res = cli(*args, "train.iterations=5", cwd=tmp_path)
    assert res.returncode == 2 and "already has 12 iterations" in res.stderr and snapshot(run_dir) == before
    res = cli(*args, "train.iterations=14", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    metrics = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [m["iteration"] for m in metrics] == list(range(1, 15))
    assert json.loads((run_dir / "summary.json").read_text())["iterations"] == 14
