"""Secrets: a config takes them from the environment, never as literals; no file a run writes
holds one (config.yaml keeps the ``${oc.env:VAR}`` form, a resumed run resolves it again); run
directories are the user's alone."""

import json
import os
import shutil
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from framework.config import load_config, to_yaml, with_overrides
from framework.errors import ConfigError
from framework.jobs.rundir import append_metrics, write_summary
from tests.conftest import SMALL

_BESIDE = Path(sys.executable).parent / "alignplay"
ALIGNPLAY = str(_BESIDE) if _BESIDE.exists() else shutil.which("alignplay")
REPO = Path(__file__).resolve().parents[2]
SECRET = "s3cr3t-" + os.urandom(4).hex()


def alignplay(*args, cwd=None, env=None):
    return subprocess.run([ALIGNPLAY, *args], capture_output=True, text=True, timeout=600, cwd=cwd,
                          env={**os.environ, **(env or {})})


def files_holding(root: Path, needle: str) -> list[str]:
    return [str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and needle.encode() in p.read_bytes()]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_secret_from_the_environment_reaches_the_judge_and_no_file_of_the_run(tiny_policy, cache_dir, tmp_path):
    """A user's judge that needs its API key (it refuses to judge with a wrong one) drives a run
    and its resume; the key is in no file under the run directory and in nothing printed."""
    (tmp_path / "keyed_judges.py").write_text(textwrap.dedent('''
        import os

        class NeedsKey:
            antisymmetric = True
            def __init__(self, api_key, timeout=1.0):
                if api_key != os.environ["MY_TOKEN"]:
                    raise ValueError("wrong api key")
            def compare(self, conversations, a, b):
                return [0.5 + 0.5 * ((len(x) > len(y)) - (len(x) < len(y))) for x, y in zip(a, b)]
    '''))
    (tmp_path / "run.yaml").write_text("job: selfplay\njudge:\n  kind: custom\n  target: keyed_judges:NeedsKey\n"
                                       "  kwargs:\n    api_key: ${oc.env:MY_TOKEN}\n    timeout: 2.0\n")
    run_dir = tmp_path / "run"
    common = [f"cache_dir={cache_dir}", *SMALL, "eval.every=1", "pipeline.mode=sync", "pipeline.ray=false",
              "checkpoint.every=1"]
    env = {"MY_TOKEN": SECRET}
    first = alignplay("run", "run.yaml", "--run-dir", str(run_dir), *common, "train.iterations=1", cwd=tmp_path,
                      env=env)
    assert first.returncode == 0, first.stderr[-3000:]
    saved = (run_dir / "config.yaml").read_text()
    assert "api_key: ${oc.env:MY_TOKEN}" in saved and "timeout: 2.0" in saved
    assert mode(run_dir) == 0o700 and mode(run_dir / "config.yaml") == 0o600
    resumed = alignplay("run", "run.yaml", "--run-dir", str(run_dir), *common, "train.iterations=2", "resume=true",
                        cwd=tmp_path, env=env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads((run_dir / "summary.json").read_text())["iterations"] == 2
    assert len(list(run_dir.rglob("*"))) > 10  # metrics, summary, records, checkpoints, the report
    assert files_holding(run_dir, SECRET) == []
    assert SECRET not in first.stdout + first.stderr + resumed.stdout + resumed.stderr


@pytest.mark.parametrize("where", [
    ["judge.kwargs.api_key={value}"],
    ["judge.kwargs={{Authorization: {value}}}"],
    ["judge.kwargs={{client: {{openai_api_key: {value}}}}}"],
    ["job=compare", "compare.overrides={{mpo: ['judge.kwargs.password={value}']}}"],
])
def test_a_secret_written_as_a_literal_is_refused_with_the_environment_form(where, tmp_path):
    overrides = [w.format(value=SECRET) for w in where]
    with pytest.raises(ConfigError, match=r"a secret must not be written in a config; use (\S+)='\$\{oc\.env:MY_"):
        load_config(None, overrides)
    # through the command line: one line, exit code 2, nothing written
    run_dir = tmp_path / "run"
    res = alignplay("run", "examples/lab.yaml", "--run-dir", str(run_dir), "quick=true", *overrides, cwd=REPO)
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(lines) == 1, res.stderr
    assert "a secret must not be written in a config" in lines[0]
    assert SECRET not in res.stderr and not run_dir.exists()


def test_the_saved_config_keeps_the_environment_form_and_loads_again_from_it(monkeypatch, tmp_path):
    monkeypatch.setenv("MY_TOKEN", SECRET)
    monkeypatch.setenv("JUDGE_URL", "http://judge.example:8000/v1")
    cfg = load_config(None, ["judge.kwargs.api_key=${oc.env:MY_TOKEN}", "judge.kwargs.base_url=${oc.env:JUDGE_URL}",
                             "judge.kwargs.max_tokens=16"])
    assert cfg.judge.kwargs == {"api_key": SECRET, "base_url": "http://judge.example:8000/v1", "max_tokens": 16}
    text = to_yaml(cfg)
    assert SECRET not in text and "example" not in text
    assert "api_key: ${oc.env:MY_TOKEN}" in text and "base_url: ${oc.env:JUDGE_URL}" in text
    (tmp_path / "config.yaml").write_text(text)
    monkeypatch.setenv("MY_TOKEN", "rotated")  # a resumed run takes what the environment holds now
    again = load_config(tmp_path / "config.yaml")
    assert again.judge.kwargs["api_key"] == "rotated" and again.judge == with_overrides(again, []).judge
    assert "${oc.env:MY_TOKEN}" in to_yaml(with_overrides(again, ["seed=3"]))
    monkeypatch.delenv("MY_TOKEN")
    with pytest.raises(ConfigError, match="judge.kwargs.api_key: .*MY_TOKEN"):
        load_config(tmp_path / "config.yaml")


def test_what_a_run_logs_redacts_keys_named_like_secrets(tmp_path):
    append_metrics(tmp_path, {"iteration": 1, "judge": {"Api_Key": SECRET, "max_tokens": 8}})
    write_summary(tmp_path, {"headers": [{"authorization": f"Bearer {SECRET}"}], "token": SECRET})
    assert files_holding(tmp_path, SECRET) == []
    assert json.loads((tmp_path / "metrics.jsonl").read_text())["judge"] == {"Api_Key": "***", "max_tokens": 8}
    assert json.loads((tmp_path / "summary.json").read_text()) == {"headers": [{"authorization": "***"}],
                                                                   "token": "***"}
