"""The command line, run as users run it (the installed console script)."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

# the console script installed beside this interpreter (make test does not activate the venv)
_BESIDE = Path(sys.executable).parent / "alignplay"
ALIGNPLAY = str(_BESIDE) if _BESIDE.exists() else shutil.which("alignplay")


def run(*args, cwd=None):
    assert ALIGNPLAY, "the alignplay console script is not installed"
    return subprocess.run([ALIGNPLAY, *args], capture_output=True, text=True, cwd=cwd, timeout=300)


def test_lab_matrix_writes_the_contract(tmp_path):
    out = tmp_path / "m.json"
    res = run("lab", "matrix", "--builtin", "asymmetric_cycle", "--algo", "ompo", "--eta", "0.7",
              "--iters", "5000", "--out", str(out))
    assert res.returncode == 0, res.stderr
    report = json.loads(out.read_text())
    assert report["algo"] == "ompo" and report["eta"] == 0.7 and report["iters"] == 5000
    assert len(report["policy"]) == len(report["last_policy"]) == 3
    assert sum(report["policy"]) == pytest.approx(1.0)
    assert isinstance(report["exploitability"], float) and report["exploitability"] < 5e-3
    assert report["curve"][-1][0] == 5000 and len(report["curve"][0]) == 3
    # acceptance 2 through the CLI: within 1e-3 (L1) of the LP equilibrium after 5,000 iterations
    assert np.abs(np.subtract(report["last_policy"], report["nash"])).sum() <= 1e-3
    assert out.with_suffix(".png").stat().st_size > 1000


def test_lab_matrix_runs_the_task_class_game_with_staleness(tmp_path):
    out = tmp_path / "s.json"
    res = run("lab", "matrix", "--builtin", "running_sum_style", "--algo", "ompo", "--eta", "5", "--iters", "100",
              "--init", "uniform", "--staleness", "1", "--out", str(out))
    assert res.returncode == 0, res.stderr
    report = json.loads(out.read_text())
    assert report["game"] == "running_sum_w0" and report["staleness"] == 1 and len(report["policy"]) == 8
    assert set(report["last_iters_to_eps"]) == {"0.02", "0.01", "0.001"}


def test_lab_matrix_reads_a_payoff_file(tmp_path):
    P = np.array([[0.5, 0.9, 0.3], [0.1, 0.5, 0.6], [0.7, 0.4, 0.5]])
    np.save(tmp_path / "p.npy", P)
    res = run("lab", "matrix", "--payoff", str(tmp_path / "p.npy"), "--algo", "mpo", "--iters", "300",
              "--out", str(tmp_path / "o.json"))
    assert res.returncode == 0, res.stderr
    assert len(json.loads((tmp_path / "o.json").read_text())["policy"]) == 3


def test_lab_markov_writes_the_contract_and_a_table(tmp_path):
    out = tmp_path / "k.json"
    res = run("lab", "markov", "--games", "2", "--seed", "4", "--algo", "both", "--iters", "200",
              "--out", str(out))
    assert res.returncode == 0, res.stderr
    report = json.loads(out.read_text())
    assert set(report) == {"mpo", "ompo"}
    for r in report.values():
        assert set(r["iters_to_eps"]) == {"0.01", "0.001"}
        assert all(v is None or isinstance(v, int) for v in r["iters_to_eps"].values())
        assert isinstance(r["slope"], float)
        assert r["mean_exploitability"][-1][0] == 200
        assert r["mean_exploitability"][0][0] == 1
    assert "iters→1e-2" in res.stdout and "ompo" in res.stdout
    assert out.with_suffix(".png").exists()


def bad_payoff(tmp_path, P):
    path = tmp_path / "bad.npy"
    np.save(path, np.asarray(P))
    return ["lab", "matrix", "--payoff", str(path), "--algo", "ompo", "--out", str(tmp_path / "o.json")]


@pytest.mark.parametrize("case, fragment", [
    (lambda t: bad_payoff(t, [[0.5, 0.7], [0.7, 0.5]]), "not constant-sum: P[0,1] + P[1,0] = 1.4"),
    (lambda t: bad_payoff(t, [[0.5, 1.5], [-0.5, 0.5]]), "P[0,1] = 1.5 is not a probability"),
    (lambda t: bad_payoff(t, np.full((2, 3), 0.5)), "expected a square n×n matrix"),
    (lambda t: ["lab", "matrix", "--builtin", "rps", "--algo", "ppo"], "unknown algorithm 'ppo'"),
    (lambda t: ["lab", "markov", "--algo", "ompo", "--games", "0"], "--games must be ≥ 1"),
    (lambda t: ["lab", "matrix", "--algo", "mpo"], "exactly one of --payoff"),
    (lambda t: ["lab", "matrix", "--builtin", "rps", "--algo", "mpo", "--iters", "x"], "invalid int value"),
    (lambda t: ["run", "examples/quickstart.yaml", "lab.temperature=2"], "lab.temperature"),
    (lambda t: ["run", str(t / "missing.yaml")], "no such config file"),
    (lambda t: ["teleport"], "invalid choice"),
    (lambda t: ["eval", str(t)], "no reference policy known"),
    (lambda t: ["eval", str(t), "--reference", str(t / "nowhere")], "eval target: "),
    (lambda t: ["run", "examples/compare_nontransitive.yaml", "compare.methods=[sft,ppo]"], "unknown method 'ppo'"),
    (lambda t: ["run", "examples/quickstart.yaml", "algo.name=ppo"], "algo.name: unknown algorithm 'ppo'"),
    (lambda t: ["run", "examples/quickstart.yaml", "--run-dir", str(t / "r"), "checkpoint.every=0"],
     "checkpoint.every: must be ≥ 1"),
    (lambda t: ["run", "examples/dp_continual.yaml", "--run-dir", str(t / "r"), "dp.max_grad_norm=inf"],
     "dp.max_grad_norm: the clipping bound must be finite and > 0, got inf"),
    (lambda t: ["run", "examples/quickstart.yaml", "--run-dir", str(t / "r"), "pipeline.resources.learner.gpus=1000"],
     "GPU (pipeline.resources.learner 1 × 1000) but the cluster has"),
    (lambda t: ["run", "examples/dp_continual.yaml", "--run-dir", str(t / "r"), "dp.workers=2",
                "pipeline.resources.dp_worker.cpus=1000"], "CPU (pipeline.resources.dp_worker 2 × 1000)"),
])
def test_bad_input_is_one_line_and_exit_code_2(tmp_path, case, fragment):
    import pathlib

    repo = pathlib.Path(__file__).resolve().parents[2]
    res = run(*case(tmp_path), cwd=repo)
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert fragment in lines[0] and lines[0].startswith("alignplay: error:")


def test_help_everywhere():
    for args in ([], ["run"], ["eval"], ["report"], ["lab"], ["lab", "matrix"], ["lab", "markov"]):
        res = run(*args, "--help")
        assert res.returncode == 0 and "usage:" in res.stdout


def test_run_lab_quick_writes_a_run_directory(tmp_path):
    import pathlib

    repo = pathlib.Path(__file__).resolve().parents[2]
    res = run("run", "examples/lab.yaml", "--run-dir", str(tmp_path / "r"), "quick=true", cwd=repo)
    assert res.returncode == 0, res.stderr
    r = tmp_path / "r"
    assert "quick: true" in (r / "config.yaml").read_text()
    markov = json.loads((r / "markov.json").read_text())
    assert markov["ompo"]["mean_exploitability"][-1][0] == 300
    assert len(markov["ompo"]["games"]) == 2
    assert (r / "matrix" / "asymmetric_cycle_ompo.json").exists()
    assert "| asymmetric_cycle | ompo |" in (r / "report.md").read_text()


def test_run_lab_plays_the_class_game_of_the_configs_task(tmp_path):
    repo = Path(__file__).resolve().parents[2]
    res = run("run", "examples/lab.yaml", "--run-dir", str(tmp_path / "r"), "quick=true", "lab.matrix_games=[task]",
              "task.correctness_weight=0", "lab.eta=5", "lab.iters=100", "lab.markov_games=1", cwd=repo)
    assert res.returncode == 0, res.stderr
    report = json.loads((tmp_path / "r" / "matrix" / "running_sum_w0_ompo.json").read_text())
    assert report["last_exploitability"] < 1e-3 and len(report["nash"]) == 8
    res = run("run", "examples/lab.yaml", "--run-dir", str(tmp_path / "bad"), "lab.matrix_games=[tsk]", cwd=repo)
    assert res.returncode == 2 and "lab.matrix_games[0]" in res.stderr and not (tmp_path / "bad").exists()


def test_selfplay_bad_input_fails_before_writing_anything(tmp_path):
    import pathlib

    repo = pathlib.Path(__file__).resolve().parents[2]
    run_dir = tmp_path / "run"
    res = run("run", "examples/quickstart.yaml", "--run-dir", str(run_dir), "model.path=/no/such/model", cwd=repo)
    assert res.returncode == 2 and "model.path: /no/such/model does not exist" in res.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("job: selfplay\ntrain: {iterations: 3\n")
    res = run("run", str(bad), "--run-dir", str(run_dir))
    assert res.returncode == 2 and "not valid YAML" in res.stderr
    res = run("run", "examples/quickstart.yaml", "--run-dir", str(run_dir), "judge.kind=custom",
              "judge.target=no_such_module:Judge", cwd=repo)
    assert res.returncode == 2 and "cannot import 'no_such_module'" in res.stderr
    res = run("run", "examples/quickstart.yaml", "--run-dir", str(run_dir), "resume=true", cwd=repo)
    assert res.returncode == 2 and "no checkpoint to resume from" in res.stderr
    assert not run_dir.exists()
    res = run("report", str(tmp_path))
    assert res.returncode == 2 and "no metrics.jsonl" in res.stderr


def test_eval_of_a_policy_against_itself_is_a_tie(tiny_policy, tmp_path):
    """Same policy on both sides: the judge is constant-sum, so the expected win rate is exactly ½."""
    out = tmp_path / "eval.json"
    res = run("eval", tiny_policy, "--reference", tiny_policy, "--conversations", "20", "--samples", "2",
              "--out", str(out), "task.turns=2")
    assert res.returncode == 0, res.stderr
    report = json.loads(out.read_text())
    assert report["states"] == 40 and report["samples_per_state"] == 2
    assert abs(report["win_rate_vs_reference"] - 0.5) <= report["win_rate_ci95"]
    assert 0.0 <= report["exploitability"] <= 0.5 and "win rate vs reference" in res.stdout
