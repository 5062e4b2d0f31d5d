"""DP pre-training runs end to end: the budget is never crossed, resume keeps ε exact, and no
private canary reaches any artifact of a run."""

import json
import shutil
from pathlib import Path

import pytest

from framework.errors import InputError
from framework.jobs.dp import learner_kwargs, run as run_dp
from privacy.accounting import epsilon
from privacy.corpus import make_canaries
from privacy.learner import DPLearner


def test_a_schedule_over_budget_is_refused_or_stops_at_the_last_step_inside(dp_config, dp_model, tmp_path):
    probe = DPLearner(**learner_kwargs(dp_config("dp.method=public_only"), dp_model)).describe()
    q, delta, sigma = probe["sample_rate"], probe["delta"], 0.8
    eps = [epsilon(noise_multiplier=sigma, sample_rate=q, steps=n, delta=delta) for n in (5, 6)]
    target = sum(eps) / 2  # 5 steps fit, 6 do not
    over = ["dp.method=dp_scratch", "dp.private_steps=10", f"dp.noise_multiplier={sigma}",
            f"dp.target_epsilon={target}", "pipeline.ray=false"]
    with pytest.raises(InputError, match="does not fit the budget"):
        run_dp(dp_config(*over), tmp_path / "refused", progress=False)
    summary = run_dp(dp_config(*over, "dp.stop_at_budget=true"), tmp_path / "stops", progress=False)
    assert summary["final"]["private_steps"] == 5
    assert summary["final"]["epsilon"] == pytest.approx(eps[0]) and summary["final"]["epsilon"] <= target
    assert "privacy budget" in summary["stopped"]
    rows = [json.loads(line) for line in (tmp_path / "stops" / "metrics.jsonl").read_text().splitlines()]
    assert max(r["epsilon"] for r in rows) <= target and len(rows) == 5


@pytest.fixture(scope="module")
def continual_run(tmp_path_factory, cache_dir, ray_session):
    """dp_continual (4 public + 4 DP steps) as a Ray actor, straight through."""
    from tests.conftest import DP_SMALL

    from framework.config import load_config

    cfg = load_config(None, [f"cache_dir={cache_dir}", *DP_SMALL, "dp.method=dp_continual"])
    run_dir = tmp_path_factory.mktemp("dp") / "straight"
    return cfg, run_dir, run_dp(cfg, run_dir, progress=False)


def test_dp_continual_switches_once_and_spends_exactly_its_budget(continual_run):
    cfg, run_dir, summary = continual_run
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["phase"] for r in rows] == ["public"] * 4 + ["private"] * 4
    assert summary["switch_step"] == 4
    assert all(r["epsilon"] == 0 for r in rows[:4]) and rows[-1]["epsilon"] <= cfg.dp.target_epsilon
    assert summary["final"]["epsilon"] == pytest.approx(cfg.dp.target_epsilon, rel=1e-3)
    assert all(r["train_loss"] is None for r in rows[4:])  # a private batch's loss is not released
    assert summary["final"]["audit_eps_lower"] <= summary["final"]["epsilon"]


def test_resume_mid_private_phase_reports_the_same_epsilon_and_metrics(continual_run, tmp_path):
    cfg, straight, summary = continual_run
    interrupted = tmp_path / "resumed"
    shutil.copytree(straight, interrupted)
    for ckpt in (interrupted / "checkpoints").iterdir():
        if ckpt.name != "step-000006":  # two steps into the private phase
            shutil.rmtree(ckpt)
    (interrupted / "summary.json").write_text(json.dumps({k: v for k, v in summary.items() if k != "final"}))
    from framework.config import with_overrides

    resumed = run_dp(with_overrides(cfg, ["resume=true", "pipeline.ray=false"]), interrupted, progress=False)
    assert resumed["final"]["epsilon"] == summary["final"]["epsilon"]
    assert resumed["switch_step"] == summary["switch_step"] == 4  # from the checkpoint, not re-guessed
    assert resumed["final"]["eval_loss"] == pytest.approx(summary["final"]["eval_loss"], abs=1e-6)
    a = [json.loads(line) for line in (straight / "metrics.jsonl").read_text().splitlines()]
    b = [json.loads(line) for line in (interrupted / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in b] == [r["iteration"] for r in a]
    for x, y in zip(a[6:], b[6:]):
        assert y["epsilon"] == x["epsilon"]
        assert y.get("eval_loss") == pytest.approx(x.get("eval_loss"), abs=1e-6)


def _files_containing(root: Path, needles: list[str]) -> list[str]:
    hits = []
    for path in root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            hits += [f"{path}: {n}" for n in needles if n.encode() in data]
    return hits


def test_no_canary_reaches_any_artifact_of_a_dp_run(continual_run, dp_model):
    cfg, run_dir, summary = continual_run
    from framework.jobs.reports import dp_report

    dp_report(run_dir)
    canaries = make_canaries(cfg.dp.canaries, seed=cfg.seed)
    learner = DPLearner(**learner_kwargs(cfg, dp_model))
    # the canaries really are private training data ...
    inserted = [learner.tokenizer.decode(row) for row in learner.private[-int(learner.coins.sum()):]]
    assert all(c in text for c, text in zip([c for c, on in zip(canaries, learner.coins) if on], inserted))
    # ... the scan finds one where it is planted ...
    (run_dir.parent / "planted.txt").write_text(f"log line {canaries[0]}")
    assert _files_containing(run_dir.parent, canaries[:1])
    # ... and no file of the run holds any of them
    assert _files_containing(run_dir, canaries) == []


def test_dpmd_starts_on_the_public_gradient_alone_and_mix_weighs_by_sample_ratio(dp_config, dp_model):
    """α₀ = ½(1 + cos 0) = 1: DPMD's first update is an AdamW step on the public batch, whatever the
    private noise; ``mix`` weighs public by its share of the data."""
    import torch

    from framework.losses import lm_loss

    learner = DPLearner(**learner_kwargs(dp_config("dp.method=dpmd", "dp.noise_multiplier=50",
                                                   "dp.stop_at_budget=true"), dp_model))
    reference = type(learner.model)(learner.model.config)  # a deep copy would carry Opacus's hooks
    reference.load_state_dict(learner.model.state_dict())
    opt = torch.optim.AdamW(reference.parameters(), lr=learner.optimizer.param_groups[0]["lr"],
                            weight_decay=learner.optimizer.param_groups[0]["weight_decay"])
    assert learner.sample()["stop"] is None
    pub = learner._public_batch
    lm_loss(logits=reference(input_ids=pub).logits, input_ids=pub).mean().backward()
    opt.step()
    learner.update()
    # Adam's first step moves each weight by ≈ lr·sign(g): noise would show as lr-sized differences;
    # near-zero gradient entries may round either way, so compare to well below lr
    lr = learner.optimizer.param_groups[0]["lr"]
    for a, b in zip(reference.parameters(), learner.model.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=lr / 100)
    assert learner.public_weight() < 1  # the weight decays after the first step
    mix = DPLearner(**learner_kwargs(dp_config("dp.method=mix"), dp_model))
    assert mix.public_weight() == pytest.approx(len(mix.public) / (len(mix.public) + mix.private_total))


def test_switch_resets_adams_first_moment_and_keeps_second_moment_and_step(dp_config, dp_model):
    import torch

    learner = DPLearner(**learner_kwargs(dp_config("dp.method=dp_continual", "dp.public_steps=2"), dp_model))
    for _ in range(2):
        assert learner.sample()["phase"] == "public"
        learner.update()
    before = {id(p): {k: v.clone() for k, v in s.items()} for p, s in learner.optimizer.state.items()}
    assert any(float(s["exp_avg"].abs().sum()) > 0 for s in before.values())
    assert learner.sample()["phase"] == "private"  # the switch happens before the first private batch
    for p, state in learner.optimizer.state.items():
        assert float(state["exp_avg"].abs().sum()) == 0
        torch.testing.assert_close(state["exp_avg_sq"], before[id(p)]["exp_avg_sq"])
        assert float(state["step"]) == float(before[id(p)]["step"]) == 2


def test_the_public_phase_ends_on_a_plateau_of_held_out_public_loss(dp_config, dp_model):
    learner = DPLearner(**learner_kwargs(dp_config("dp.method=public_only", "dp.switch=plateau",
                                                   "dp.public_steps=100", "dp.plateau_window=2"), dp_model))
    assert len(learner.public_val) and not learner.done()
    for _ in range(2):
        learner.sample()
        out = learner.update()
    assert out["public_val_loss"] == learner.public_val_losses[-1]  # checked every plateau_window steps
    learner.public_val_losses = [3.0, 2.5]  # still improving by more than plateau_tol
    assert not learner.done()
    learner.public_val_losses = [3.0, 2.99]  # improved by 0.3% < 1%: the phase is over
    assert learner.done()
