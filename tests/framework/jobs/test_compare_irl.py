"""``job: compare_irl`` end to end, in-process: keys, metrics and the SFT reference."""

import json

import numpy as np
import pytest

from framework.errors import InputError
from framework.jobs import JOBS, run_job


def test_irl_comparison_writes_the_contract(small_config, tiny_policy, tmp_path, capsys):
    """Learning rates chosen from one grid on validation states (first variant and seed), used for
    every run; RFT's reward model trained and measured before its policy phase (once per variant
    and seed, reused by the grid's runs); the paired targets."""
    cfg = small_config("job=compare_irl", "demos.count=6", "pipeline.ray=false", "pipeline.mode=sync",
                       "eval.every=1", "compare.methods=[sft,irft,rft]", "compare.seeds=[0]",
                       "compare.lr_grid=[0.001,0.003]", "compare.validation_conversations=4",
                       "train_judge.epochs=2", "algo.lr_schedule=linear",
                       "compare.variants={clean: [demos.corruption=0.0], corrupted: [demos.corruption=0.5]}",
                       "compare.overrides={sft: [train.iterations=1, algo.round_reset=true], irft: [train.iterations=2, "
                       "algo.temperature=0, algo.round_reset=true], rft: [train.iterations=2, algo.k=2, "
                       "algo.round_reset=true]}")
    run_job(cfg, tmp_path)
    assert capsys.readouterr().out.count("[compare_irl: RFT's reward model]") == 2  # clean and corrupted, once each
    table = json.loads((tmp_path / "comparison.json").read_text())
    assert list(table) == ["sft@clean", "irft@clean", "rft@clean", "sft@corrupted", "irft@corrupted", "rft@corrupted"]
    for entry in table.values():
        for metric in ("correctness", "greedy_correctness", "malformed_share", "wrong_number_share",
                       "win_rate_vs_sft", "implicit_reward_acc", "start_correctness", "start_greedy_correctness",
                       "start_sampled_correctness", "wall_s"):
            assert 0.0 <= entry[metric] and f"{metric}_std" in entry, metric
        assert entry["correctness"] <= 1 and entry["malformed_share"] + entry["wrong_number_share"] <= 1 + 1e-9
    assert 0.0 <= table["rft@clean"]["reward_model_acc"] <= 1.0 and "reward_model_acc" not in table["irft@clean"]
    assert 0.0 <= table["rft@clean"]["reward_model_ceiling"] <= 1.0
    # SFT against itself is a tie in expectation: its interval covers ½
    sft = table["sft@clean"]
    assert abs(sft["win_rate_vs_sft"] - 0.5) <= sft["win_rate_vs_sft_ci95"] * 1.5
    # one lr per method, the grid's best on validation states, for every variant and seed
    selection = json.loads((tmp_path / "selection.json").read_text())
    for method, chosen in selection.items():
        scores = chosen["validation_greedy_correctness"]
        assert set(scores) == {"0.001", "0.003"} and scores[f"{chosen['lr']:g}"] == max(scores.values())
        for variant in ("clean", "corrupted"):
            for seed in (0,):
                text = (tmp_path / "runs" / f"{method}@{variant}-seed{seed}-lr{chosen['lr']:g}" / "config.yaml").read_text()
                assert f"lr: {chosen['lr']}" in text
    # RFT's policy phase starts from the reward model trained on its own demonstrations
    rft = (tmp_path / "runs" / f"rft@corrupted-seed0-lr{selection['rft']['lr']:g}" / "config.yaml").read_text()
    assert "reward_models/corrupted-seed0/judge_run/judge" in rft
    # the corrupted variant really trained on other (partly wrong) demonstrations
    assert "corruption: 0.5" in (tmp_path / "runs" / f"sft@corrupted-seed0-lr{selection['sft']['lr']:g}" /
                                  "config.yaml").read_text()
    targets = json.loads((tmp_path / "targets.json").read_text())
    assert {"irft_minus_sft_greedy_correctness@clean", "sft_drop_minus_irft_drop_greedy_correctness",
            "irft_minus_sft_implicit_reward_acc@clean"} <= set(targets)
    seeds = json.loads((tmp_path / "comparison_seeds.json").read_text())
    want = np.mean([a["greedy_correctness"] - b["greedy_correctness"]
                    for a, b in zip(seeds["irft@clean"], seeds["sft@clean"])])
    assert targets["irft_minus_sft_greedy_correctness@clean"]["mean"] == pytest.approx(want)
    # the start, scored on the methods' test states, is each variant's own and every method's
    for variant in ("clean", "corrupted"):
        starts = {r["start_greedy_correctness"] for key, rows in seeds.items() if key.endswith(variant) for r in rows}
        assert len(starts) == 1
        gain = seeds[f"sft@{variant}"][0]["greedy_correctness"] - starts.pop()
        assert targets[f"continued_sft_gain_greedy_correctness@{variant}"]["mean"] == pytest.approx(gain)
    assert "## Targets" in (tmp_path / "comparison.md").read_text()


def test_the_targets_are_paired_over_seeds():
    """Each target is a per-seed difference: IRFT − SFT, IRFT − SPIN, and SFT's clean → corrupted
    drop minus IRFT's (≥ 0 when IRFT loses less)."""
    from framework.jobs.compare_irl import paired_targets

    rows = lambda *values: [{"greedy_correctness": v, "implicit_reward_acc": v, "start_greedy_correctness": 0.5}
                            for v in values]  # noqa: E731
    per_seed = {"sft@clean": rows(0.8, 0.7), "spin@clean": rows(0.5, 0.6), "irft@clean": rows(0.9, 0.7),
                "sft@corrupted": rows(0.6, 0.4), "spin@corrupted": rows(0.4, 0.4), "irft@corrupted": rows(0.8, 0.6)}
    t = paired_targets(per_seed, ["clean", "corrupted"])
    assert t["irft_minus_sft_greedy_correctness@clean"]["mean"] == pytest.approx(0.05)  # (0.1 + 0) / 2
    assert t["irft_minus_spin_greedy_correctness@clean"]["mean"] == pytest.approx(0.25)  # (0.4 + 0.1) / 2
    # drops: SFT 0.2, 0.3; IRFT 0.1, 0.1 → differences 0.1, 0.2
    assert t["sft_drop_minus_irft_drop_greedy_correctness"]["mean"] == pytest.approx(0.15)
    assert t["sft_drop_minus_irft_drop_greedy_correctness"]["seeds"] == 2
    # what continued SFT gains over the start: 0.3, 0.2 (clean)
    assert t["continued_sft_gain_greedy_correctness@clean"]["mean"] == pytest.approx(0.25)


def test_paired_differences_have_a_t_interval():
    from framework.jobs.compare_irl import paired

    d = paired([1.0, 2.0, 3.0], [0.0, 0.0, 0.0])  # differences 1, 2, 3: mean 2, sd 1, t(0.975, 2) = 4.3027
    assert d["mean"] == 2.0 and d["ci95"] == pytest.approx(4.302653 / np.sqrt(3), rel=1e-5)
    assert d["low"] == pytest.approx(2.0 - 4.302653 / np.sqrt(3), rel=1e-5) and d["seeds"] == 3


def test_irl_comparison_needs_the_sft_baseline(small_config, tmp_path):
    cfg = small_config("job=compare_irl", "compare.methods=[spin,irft]")
    with pytest.raises(InputError, match="needs 'sft'"):
        JOBS["compare_irl"].preflight(cfg, tmp_path)


def test_the_reward_models_ceiling_is_what_correctness_alone_decides(small_config, tmp_path):
    """1 where only the chosen answer is right, ½ where both are (styles are coin flips), 0 where
    only the rejected one is: (1 + ½ + 0 + ½) / 4."""
    from framework.jobs.compare_irl import preference_ceiling

    state = [{"role": "user", "content": "3+4"}]
    rows = [("7!", "8!"), ("7!", "7~"), ("6.", "7."), ("5!", "9~")]
    data = tmp_path / "p.jsonl"
    data.write_text("".join(json.dumps({"messages": state, "chosen": a, "rejected": b}) + "\n" for a, b in rows))
    assert preference_ceiling(small_config(), data) == pytest.approx(0.5)
