"""Runs that diverge stop before training on, publishing or checkpointing a non-finite value, with
one line naming the iteration (or step) and the quantity; what they wrote is strict JSON."""

import json
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from framework.jobs.rundir import append_metrics, write_summary
from tests.conftest import DP_SMALL, SMALL

_BESIDE = Path(sys.executable).parent / "alignplay"
ALIGNPLAY = str(_BESIDE) if _BESIDE.exists() else shutil.which("alignplay")


def alignplay(*args):
    return subprocess.run([ALIGNPLAY, *args], capture_output=True, text=True, timeout=300)


def strict(line: str):
    """``json.loads`` that refuses the NaN / Infinity tokens strict JSON parsers reject."""
    def refuse(token):
        raise ValueError(f"not strict JSON: {token}")

    return json.loads(line, parse_constant=refuse)


def metrics(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    return [strict(line) for line in path.read_text().splitlines()] if path.exists() else []


def one_error_line(res) -> str:
    """The run's one error line (stderr holds progress bars besides, which may end without a
    newline before it), and no traceback."""
    lines = re.findall(r"alignplay: error: [^\r\n]*", res.stderr)
    assert res.returncode == 2 and len(lines) == 1 and "Traceback" not in res.stderr, res.stderr[-3000:]
    return lines[0]


def config_file(tmp_path: Path, job: str) -> str:
    path = tmp_path / f"{job}.yaml"
    path.write_text(f"job: {job}\n")
    return str(path)


@pytest.mark.parametrize("lr", ["1e6", "1e12"])
def test_a_diverging_selfplay_run_stops_before_publishing_or_checkpointing_it(tiny_policy, cache_dir, tmp_path, lr):
    """With lr 1e6 the first update leaves huge weights and the next iteration's loss is NaN: the
    run stops there, its last checkpoint the weights before that update. With lr 1e12 the second
    optimizer step of the first update already sees a NaN loss: the update is half-applied, so no
    checkpoint is written for it."""
    run_dir = tmp_path / "run"
    res = alignplay("run", config_file(tmp_path, "selfplay"), "--run-dir", str(run_dir), f"cache_dir={cache_dir}",
                    *SMALL, "train.iterations=3", "eval.every=10", "pipeline.mode=sync", "pipeline.ray=false",
                    f"algo.lr={lr}")
    line = one_error_line(res)
    found = re.fullmatch(r"alignplay: error: iteration (\d+): (the (loss|gradient norm) is (nan|inf)|the weights are "
                         r"not finite); .*", line)
    assert found, line
    failed = int(found.group(1))
    rows = metrics(run_dir)
    assert [r["iteration"] for r in rows] == list(range(1, failed))  # every iteration before it, in strict JSON
    assert all(math.isfinite(r["loss"]) and math.isfinite(r["grad_norm"]) for r in rows)
    assert "final" not in json.loads((run_dir / "summary.json").read_text())
    assert not (run_dir / "report.md").exists() and not (run_dir / "checkpoints" / "final").exists()
    saved = sorted((run_dir / "checkpoints").glob("iter_*")) if (run_dir / "checkpoints").exists() else []
    for checkpoint in saved:  # what was saved is an iteration that completed, with finite weights
        state = json.loads((checkpoint / "state.json").read_text())
        assert state["iteration"] == state["policy_version"] < failed
        weights = load_file(str(checkpoint / "policy" / "model.safetensors"))
        assert all(torch.isfinite(w).all() for w in weights.values())
    if "nothing was applied" in line:  # the stop is resumable from the iteration before
        assert [json.loads((c / "state.json").read_text())["iteration"] for c in saved][-1:] == [failed - 1]
    else:  # a half-applied update: no checkpoint holds it
        assert "not saved" in line and failed == 1
        start = load_file(str(Path(tiny_policy) / "model.safetensors"))
        for checkpoint in saved:  # (one of iteration 0 holds the starting weights)
            weights = load_file(str(checkpoint / "policy" / "model.safetensors"))
            assert all(torch.equal(weights[k], start[k]) for k in start)


@pytest.mark.parametrize("method", ["dp_continual", "dp_scratch"])
def test_a_diverging_dp_run_stops_and_its_report_states_no_epsilon(dp_model, cache_dir, tmp_path, method):
    """dp.lr=1e8 diverges within a few steps: in dp_continual's public phase (a NaN loss), in
    dp_scratch's private phase (a NaN held-out loss or noised gradient; the private loss is never
    looked at). The run stops with one line; the report names the step instead of an ε."""
    run_dir = tmp_path / "run"
    res = alignplay("run", config_file(tmp_path, "dp"), "--run-dir", str(run_dir), f"cache_dir={cache_dir}",
                    *DP_SMALL, f"dp.method={method}", "dp.lr=1e8", "pipeline.ray=false")
    line = one_error_line(res)
    found = re.fullmatch(r"alignplay: error: step (\d+): the (loss|held-out loss|(noised )?gradient norm|largest "
                         r"weight) is (nan|inf); (nothing|the step) was applied \(the last checkpoint is .*\)", line)
    assert found, line
    failed = int(found.group(1))
    rows = metrics(run_dir)
    assert [r["iteration"] for r in rows] == list(range(1, failed))
    summary = strict((run_dir / "summary.json").read_text())
    assert "final" not in summary and summary["diverged"]["step"] == failed
    assert not (run_dir / "checkpoints" / "final").exists()
    assert alignplay("report", str(run_dir)).returncode == 0
    report = (run_dir / "report.md").read_text()
    assert f"diverged at step {failed}" in report
    final_row = next(r for r in report.splitlines() if r.startswith("| final |"))
    assert final_row.split("|")[4].strip() == "—"  # the ε column
    spent = [r["epsilon"] for r in rows if r["epsilon"]]
    assert not any(f"{e:.3f}" in report for e in spent)


def test_metrics_and_summaries_are_strict_json_with_null_for_non_finite_values(tmp_path):
    values = {"iteration": 1, "loss": float("nan"), "grad_norm": float("inf"), "low": -math.inf, "fine": 0.25,
              "nested": {"curve": [1.0, float("nan")]}}
    expected = {"iteration": 1, "loss": None, "grad_norm": None, "low": None, "fine": 0.25,
                "nested": {"curve": [1.0, None]}}
    append_metrics(tmp_path, values)
    assert metrics(tmp_path) == [expected]
    append_metrics(tmp_path, {**values, "iteration": 2, "fine": np.float64(0.25), "loss": np.float32("nan")})
    write_summary(tmp_path, {"final": values})
    assert metrics(tmp_path) == [expected, {**expected, "iteration": 2}]
    assert strict((tmp_path / "summary.json").read_text()) == {"final": expected}
