"""``job: compare_dp`` writes the comparison contract: the issue's method keys and metrics."""

import json

import pytest

from framework.jobs import compare_dp


def test_compare_dp_writes_the_contract(dp_config, dp_model, tmp_path):
    """Today's keys and the switch-point ablation: every continual run starts from public_only's
    final checkpoint of its seed; targets.json holds the paired retained share and the costs."""
    cfg = dp_config("job=compare_dp", "pipeline.ray=false", "compare.seeds=[0]", "dp.switch=plateau",
                    "dp.plateau_window=2", "compare.methods=[nondp,public_only,dp_scratch,dp_continual,"
                    "nondp_continual,clip_only]",
                    "compare.variants={'8': ['dp.target_epsilon=8'], '2': ['dp.target_epsilon=2']}")
    compare_dp.run(cfg, tmp_path)
    table = json.loads((tmp_path / "comparison.json").read_text())
    assert set(table) == {"nondp", "public_only", "dp_scratch@8", "dp_continual@8", "dp_scratch@2", "dp_continual@2",
                          "nondp_continual", "clip_only"}
    for key, entry in table.items():
        for metric in ("eval_ppl", "eval_loss", "public_val_loss", "audit_eps_lower", "wall_s"):
            assert entry[metric] == entry[metric] and f"{metric}_std" in entry, (key, metric)
    assert table["nondp"]["epsilon"] is None and table["public_only"]["epsilon"] == 0
    assert table["nondp_continual"]["epsilon"] is None and table["clip_only"]["epsilon"] is None
    public = json.loads((tmp_path / "runs" / "public_only-seed0" / "summary.json").read_text())
    for key in ("dp_continual@8", "dp_continual@2", "nondp_continual", "clip_only"):
        run = json.loads((tmp_path / "runs" / f"{key}-seed0" / "summary.json").read_text())
        assert run["started_from"].endswith("runs/public_only-seed0/checkpoints/final"), key
        assert run["switch_step"] == public["final"]["steps"]
        assert run["start"]["eval_loss"] == pytest.approx(public["final"]["eval_loss"], abs=1e-6)
    targets = json.loads((tmp_path / "targets.json").read_text())
    loss = {k: v["eval_loss"] for k, v in table.items()}
    assert targets["clip_cost"]["mean"] == pytest.approx(loss["clip_only"] - loss["nondp_continual"])
    assert targets["noise_cost@8"]["mean"] == pytest.approx(loss["dp_continual@8"] - loss["clip_only"])
    assert targets["retained@2"]["mean"] == pytest.approx(
        (loss["public_only"] - loss["dp_continual@2"]) / (loss["public_only"] - loss["nondp_continual"]))
    for eps in (8, 2):
        for method in ("dp_scratch", "dp_continual"):
            assert table[f"{method}@{eps}"]["epsilon"] == pytest.approx(eps, rel=1e-3)
            assert table[f"{method}@{eps}"]["audit_eps_lower"] <= eps
    assert "dp_continual@8" in (tmp_path / "comparison.md").read_text()
    assert (tmp_path / "eval_loss.png").stat().st_size > 1000
    # compare.finished_only: the same directory read again with a seed and a method not run: nothing starts
    again = dp_config("job=compare_dp", "pipeline.ray=false", "compare.seeds=[0,1]", "compare.finished_only=true",
                      "compare.methods=[public_only,nondp_continual,clip_only,dp_continual,mix]",
                      "compare.variants={'8': ['dp.target_epsilon=8']}")
    before = sorted(p.name for p in (tmp_path / "runs").iterdir())
    partial = compare_dp.run(again, tmp_path)
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == before
    assert set(partial) == {"public_only", "nondp_continual", "clip_only", "dp_continual@8"}
    assert partial["dp_continual@8"]["eval_loss"] == pytest.approx(loss["dp_continual@8"])
    md = (tmp_path / "comparison.md").read_text()
    assert "mix@8-seed0" in md and "public_only-seed1" in md and "dp_continual@8-seed1" in md


def test_ablation_targets_pair_by_seed():
    """A key missing a seed drops that seed from the differences it enters, not a shifted pairing."""
    per_seed = {"public_only": [{"seed": 0, "eval_loss": 3.4}, {"seed": 1, "eval_loss": 3.5},
                                {"seed": 2, "eval_loss": 3.3}],
                "nondp_continual": [{"seed": 0, "eval_loss": 2.4}, {"seed": 2, "eval_loss": 2.3}],
                "clip_only": [{"seed": 0, "eval_loss": 2.6}, {"seed": 1, "eval_loss": 2.5}, {"seed": 2, "eval_loss": 2.7}],
                "dp_continual@8": [{"seed": 1, "eval_loss": 2.9}, {"seed": 2, "eval_loss": 2.8}]}
    t = compare_dp.ablation_targets(per_seed, ["8", "2"])
    assert t["clip_cost"]["paired_seeds"] == [0, 2] and t["clip_cost"]["seeds"] == pytest.approx([0.2, 0.4])
    assert t["noise_cost@8"]["paired_seeds"] == [1, 2] and t["noise_cost@8"]["mean"] == pytest.approx(0.25)
    assert t["retained@8"]["paired_seeds"] == [2] and t["retained@8"]["mean"] == pytest.approx(0.5 / 1.0)
    assert t["retained@8"]["std"] == 0.0 and "retained@2" not in t and "noise_cost@2" not in t
