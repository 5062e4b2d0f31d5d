"""``job: compare`` end to end, in-process: the comparison.json contract and reuse of finished runs."""

import json

import pytest

from framework.errors import InputError
from framework.jobs import run_job
from framework.jobs.reports import aggregate

METHODS = ["sft", "mpo", "dpo"]


def test_comparison_writes_the_contract_and_reuses_finished_runs(small_config, tiny_policy, tmp_path):
    cfg_args = ("job=compare", "train.iterations=2", "eval.every=1", "pipeline.ray=false", "pipeline.mode=sync",
                "train.fixed_prompts=true", f"compare.methods=[{','.join(METHODS)}]", "compare.seeds=[0,1]")
    cfg = small_config(*cfg_args)
    run_job(cfg, tmp_path)
    table = json.loads((tmp_path / "comparison.json").read_text())
    assert list(table) == METHODS
    for method in METHODS:
        for metric in ("win_rate_vs_sft", "exploitability", "samples", "wall_s"):
            assert isinstance(table[method][metric], float) and f"{metric}_std" in table[method], (method, metric)
    # the same sample budget: conversations × turns × K × iterations, whatever the method samples
    assert table["mpo"]["samples"] == table["dpo"]["samples"] == 6 * 2 * 3 * 2
    assert table["sft"]["samples"] == 0
    # the start is evaluated once per seed: the second method's run shares the first's
    for seed in (0, 1):
        first, second = (json.loads((tmp_path / "runs" / f"{m}-seed{seed}" / "summary.json").read_text())
                         for m in ("mpo", "dpo"))
        assert second["start"] == first["start"] and second["start_shared"] and "start_shared" not in first
    seeds = json.loads((tmp_path / "comparison_seeds.json").read_text())
    assert table["mpo"]["exploitability"] == sum(r["exploitability"] for r in seeds["mpo"]) / 2
    for name in ("comparison.md", "exploitability.png"):
        assert (tmp_path / name).stat().st_size > 500
    assert "| ompo" not in (tmp_path / "comparison.md").read_text()
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "runs").glob("*/metrics.jsonl")}
    assert len(stamps) == 4  # 2 methods × 2 seeds
    run_job(cfg, tmp_path)  # finished runs are reused, not run again
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    # ... but only with the settings they ran with: another step size is refused, nothing rewritten
    with pytest.raises(InputError, match=r"mpo-seed0 holds a finished run of other settings \(algo.eta: 5.0 → 2.5\)"):
        run_job(small_config(*cfg_args, "algo.eta=2.5"), tmp_path)
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps


def test_aggregate_means_and_sample_std():
    out = aggregate({"mpo": [{"win_rate_vs_sft": 0.6, "win_rate_vs_sft_ci95": 0.03, "exploitability": 0.1,
                              "samples": 10, "wall_s": 1.0},
                             {"win_rate_vs_sft": 0.7, "win_rate_vs_sft_ci95": 0.04, "exploitability": 0.3,
                              "samples": 10, "wall_s": 3.0}]})["mpo"]
    assert abs(out["win_rate_vs_sft"] - 0.65) < 1e-12 and abs(out["win_rate_vs_sft_std"] - 0.0707107) < 1e-6
    assert abs(out["win_rate_vs_sft_ci95"] - 0.025) < 1e-12  # √(.03² + .04²)/2
    assert out["samples_std"] == 0.0 and out["wall_s"] == 2.0


def test_a_shared_grid_tunes_each_method_on_validation_states_and_reuses_the_chosen_run(small_config, tmp_path):
    cfg = small_config("job=compare", "train.iterations=2", "eval.every=1", "pipeline.ray=false",
                       "pipeline.mode=sync", "train.fixed_prompts=true", "compare.methods=[sft,mpo,ompo]",
                       "compare.seeds=[0,1]", "compare.grid={algo.lr: [0.0001, 0.003]}", "algo.round_reset=true")
    run_job(cfg, tmp_path)
    selection = json.loads((tmp_path / "selection.json").read_text())
    for method in ("mpo", "ompo"):
        scores = selection[method]["validation_win_rate"]
        assert set(scores) == {"algo.lr=0.0001", "algo.lr=0.003"}
        assert selection[method]["chosen"] == max(scores, key=scores.get)
        # the chosen point's run is the first seed's; the second seed ran with the chosen point
        lr = selection[method]["chosen"].split("=")[1]
        assert (tmp_path / "runs" / f"{method}-seed0").resolve() == (tmp_path / "runs" / "grid" / f"{method}-lr{lr}")
        assert selection[method]["chosen"].split("=")[1] in (tmp_path / "runs" / f"{method}-seed1" / "config.yaml").read_text()
    table = json.loads((tmp_path / "comparison.json").read_text())
    for key in ("exploitability_style", "exploitability_correctness", "effective_step", "lab_exploitability"):
        assert isinstance(table["mpo"][key], float), key
    assert table["ompo"]["optimistic_hit_rate"] == 1.0  # the cache is keyed by the user turns: every state recurs
    assert "optimistic_hit_rate" not in table["mpo"]
    assert table["mpo"]["exploitability"] == pytest.approx(
        table["mpo"]["exploitability_style"] + table["mpo"]["exploitability_correctness"])
    targets = json.loads((tmp_path / "targets.json").read_text())
    assert {"mpo_beats_sft", "ompo_beats_sft"} <= set(targets) and "mpo_cycles_regime" not in targets
    assert "## Tuning" in (tmp_path / "comparison.md").read_text()


def test_the_style_targets_belong_to_the_pure_cycle_and_the_win_rate_targets_to_the_full_task():
    from framework.config import load_config
    from framework.jobs.compare import target_checks

    def row(win, ci, style, cv, step=None):
        return {"win_rate_vs_sft": win, "win_rate_vs_sft_ci95": ci, "exploitability_style": style,
                "exploitability_style_cv": cv, "effective_step": step}

    table = {"mpo": row(0.54, 0.005, 0.30, 0.30, 3.0), "ompo": row(0.53, 0.005, 0.05, 0.01, 1.0),
             "ipo": row(0.531, 0.005, 0.02, 0.02)}
    per_seed = {"mpo": [{"iters_to_style": 101}], "ompo": [{"iters_to_style": 25}]}
    cycle = target_checks(load_config(None, ["task.correctness_weight=0", "train.iterations=100"]), table, per_seed)
    assert set(cycle) == {"ompo_style_le_half_mpo", "ompo_style_cv_le_half_mpo", "ompo_reaches_style_eps_first",
                          "mpo_cycles_regime"}  # (at a pure cycle the equilibrium wins ½ against any start)
    assert all(t["met"] for t in cycle.values()) and cycle["mpo_cycles_regime"]["product"] == 300.0
    full = target_checks(load_config(None, ["task.correctness_weight=0.7"]), table, per_seed)
    assert set(full) == {"mpo_beats_sft", "mpo_beats_pair_methods", "ompo_beats_sft", "ompo_beats_pair_methods"}
    assert full["mpo_beats_sft"]["met"] and full["ompo_beats_sft"]["met"]
    # 0.54 − 0.005 = 0.535 is below IPO's 0.531 + 0.005: a margin of +0.009 with the intervals overlapping
    assert full["mpo_beats_pair_methods"]["ipo"] == {"margin": pytest.approx(0.009), "intervals_apart": False}
    assert not full["mpo_beats_pair_methods"]["met"] and not full["ompo_beats_pair_methods"]["met"]
