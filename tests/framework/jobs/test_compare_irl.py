"""``job: compare_irl`` end to end, in-process: keys, metrics and the SFT reference."""

import json

import pytest

from framework.errors import InputError
from framework.jobs import JOBS, run_job


def test_irl_comparison_writes_the_contract(small_config, tiny_policy, tmp_path):
    cfg = small_config("job=compare_irl", "demos.count=6", "pipeline.ray=false", "pipeline.mode=sync",
                       "eval.every=1", "compare.methods=[sft,irft]", "compare.seeds=[0]",
                       "compare.variants={clean: [demos.corruption=0.0], corrupted: [demos.corruption=0.5]}",
                       "compare.overrides={sft: [train.iterations=1], irft: [train.iterations=2]}")
    run_job(cfg, tmp_path)
    table = json.loads((tmp_path / "comparison.json").read_text())
    assert list(table) == ["sft@clean", "irft@clean", "sft@corrupted", "irft@corrupted"]
    for entry in table.values():
        for metric in ("correctness", "win_rate_vs_sft", "implicit_reward_acc", "wall_s"):
            assert 0.0 <= entry[metric] and f"{metric}_std" in entry
    # SFT against itself is a tie in expectation: its interval covers ½
    sft = table["sft@clean"]
    assert abs(sft["win_rate_vs_sft"] - 0.5) <= sft["win_rate_vs_sft_ci95"] * 1.5
    # the corrupted variant really trained on other (partly wrong) demonstrations
    clean = (tmp_path / "runs" / "sft@clean-seed0" / "config.yaml").read_text()
    assert "corruption: 0.5" in (tmp_path / "runs" / "sft@corrupted-seed0" / "config.yaml").read_text()
    assert "corruption: 0.0" in clean
    assert "IRFT ≥ SFT on `corrupted`" in (tmp_path / "comparison.md").read_text()


def test_irl_comparison_needs_the_sft_baseline(small_config, tmp_path):
    cfg = small_config("job=compare_irl", "compare.methods=[spin,irft]")
    with pytest.raises(InputError, match="needs 'sft'"):
        JOBS["compare_irl"].preflight(cfg, tmp_path)
