"""The README's commands run as written (issue 15), in a working directory holding the files a
user would bring (``my_judges.py``, ``my_demos.jsonl``, ``my_dialogues.jsonl``, ``P.npy``):

- every ``alignplay run`` command, with ``quick=true`` added, passes the config checks and its
  job's preflight (all that stands between the command and its run), leaving nothing behind;
- ``make demo``'s command and the first IRFT example run to the end in their quick form, then
  ``alignplay eval`` and ``alignplay report`` on the demo's run directory;
- every ``alignplay lab`` command runs as written.

The comparisons' quick forms (several runs each, up to 10 minutes) are left to their own tests.
``ray ...`` commands need a cluster launcher (``ray job submit`` is run in test_multinode.py).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    """The ``alignplay`` commands of the README's bash blocks, continuations joined, comments cut."""
    out = []
    for block in re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.split(r"\s+#", line)[0].strip()
            if line.startswith("alignplay "):
                out.append(re.sub(r"\s+", " ", line))
    return out


COMMANDS = readme_commands()
#: the judge commands read the demo's run (runs/quickstart) or a judge trained from it: run after it
AFTER_DEMO = [c for c in COMMANDS if c.startswith("alignplay run ") and
              ("examples/train_judge.yaml" in c or "judge.path=runs/" in c)]
RUNS = [c for c in COMMANDS if c.startswith("alignplay run ") and c not in AFTER_DEMO]
LABS = [c for c in COMMANDS if c.startswith("alignplay lab ")]
FIRST_IRFT = next(c for c in RUNS if "algo.name=irft" in c)

MY_JUDGES = '''
class MyJudge:
    """A user's judge: the shorter answer wins, softened by a temperature."""

    def __init__(self, temperature: float = 1.0):
        self.temperature = temperature

    def compare(self, conversations, a, b):
        return [0.5 if len(x) == len(y) else (0.9 if len(x) < len(y) else 0.1) for x, y in zip(a, b)]
'''


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    """A user's working directory: the examples, and the files the README asks them to bring."""
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    (tmp_path / "my_judges.py").write_text(textwrap.dedent(MY_JUDGES))
    sample = ROOT / "examples" / "data" / "mtbench101_sample.jsonl"
    (tmp_path / "my_dialogues.jsonl").write_text(sample.read_text())
    demos = [{"messages": [{"role": "user", "content": h["user"]}, {"role": "assistant", "content": h["bot"]}]}
             for line in sample.read_text().splitlines() for h in json.loads(line)["history"]]
    (tmp_path / "my_demos.jsonl").write_text("".join(json.dumps(d) + "\n" for d in demos))
    p = np.array([[0.5, 0.8, 0.3], [0.2, 0.5, 0.7], [0.7, 0.3, 0.5]])  # P + Pᵀ = 1, a cycle
    np.save(tmp_path / "P.npy", p)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def cli(*args: str, cwd: Path, cache_dir: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(ALIGNPLAY_CACHE=str(cache_dir), PYTHONPATH=os.pathsep.join([str(ROOT), str(cwd)]))
    return subprocess.run([sys.executable, "-m", "framework.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_the_readme_shows_the_commands_this_file_checks():
    assert len(RUNS) >= 9 and len(LABS) == 5, COMMANDS
    assert any(c.startswith("alignplay eval ") for c in COMMANDS)


def preflight(command: str, cache_dir: Path) -> Path:
    """The config checks and the job's preflight of an ``alignplay run`` command in quick form;
    its run directory."""
    from framework.cli import build_parser
    from framework.config import load_config
    from framework.jobs import JOBS

    args, extra = build_parser().parse_known_args([*shlex.split(command)[1:], "quick=true"])
    cfg = load_config(args.config, [*args.overrides, *extra, f"cache_dir={cache_dir}"])
    run_dir = Path(args.run_dir or "runs/readme")
    JOBS[cfg.job].preflight(cfg, run_dir)
    return run_dir


@pytest.mark.parametrize("command", RUNS)
def test_each_run_command_passes_its_checks_as_written(command, workspace, cache_dir):
    run_dir = preflight(command, cache_dir)
    assert not run_dir.exists() and not (workspace / "runs").exists()


def test_the_demo_and_the_irft_example_run_in_quick_form_then_eval_and_report(workspace, cache_dir):
    demo = cli("run", "examples/quickstart.yaml", "--run-dir", "runs/quickstart", "quick=true", cwd=workspace,
               cache_dir=cache_dir)
    assert demo.returncode == 0, demo.stderr[-3000:]
    summary = json.loads((workspace / "runs" / "quickstart" / "summary.json").read_text())
    assert summary["iterations"] == 12
    evaluated = cli(*shlex.split(next(c for c in COMMANDS if c.startswith("alignplay eval ")))[1:],
                    cwd=workspace, cache_dir=cache_dir)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert 0.0 <= json.loads((workspace / "runs" / "quickstart" / "eval.json").read_text())["win_rate_vs_reference"] <= 1.0
    report = cli("report", "runs/quickstart", cwd=workspace, cache_dir=cache_dir)
    assert report.returncode == 0 and (workspace / "runs" / "quickstart" / "report.md").exists(), report.stderr
    for command in AFTER_DEMO:  # train the judges on the demo's run; the runs using them pass their checks
        if "examples/train_judge.yaml" in command:
            trained = cli(*shlex.split(command)[1:], "quick=true", cwd=workspace, cache_dir=cache_dir)
            assert trained.returncode == 0 and "held-out accuracy" in trained.stdout, trained.stderr[-3000:]
        else:
            assert not preflight(command, cache_dir).exists()
    assert len(AFTER_DEMO) == 4 and (workspace / "runs" / "judge-rm" / "judge" / "judge.json").exists()
    irft = cli(*shlex.split(FIRST_IRFT)[1:], "quick=true", cwd=workspace, cache_dir=cache_dir)
    assert irft.returncode == 0, irft.stderr[-3000:]
    assert json.loads((workspace / "runs" / "irft" / "summary.json").read_text())["iterations"] == 5


@pytest.mark.parametrize("command", LABS)
def test_each_lab_command_runs_as_written(command, workspace, cache_dir):
    res = cli(*shlex.split(command)[1:], cwd=workspace, cache_dir=cache_dir)
    assert res.returncode == 0, res.stderr[-3000:]
    out = workspace / shlex.split(command)[-1]
    assert out.exists() and out.with_suffix(".png").exists()
