"""``job: compare_dp`` writes the comparison contract: the issue's method keys and metrics."""

import json

import pytest

from framework.jobs import compare_dp


def test_compare_dp_writes_the_contract(dp_config, dp_model, tmp_path):
    cfg = dp_config("job=compare_dp", "pipeline.ray=false", "compare.seeds=[0]", "dp.switch=plateau",
                    "dp.plateau_window=2", "compare.methods=[nondp,public_only,dp_scratch,dp_continual]",
                    "compare.variants={'8': ['dp.target_epsilon=8'], '2': ['dp.target_epsilon=2']}")
    compare_dp.run(cfg, tmp_path)
    table = json.loads((tmp_path / "comparison.json").read_text())
    assert set(table) == {"nondp", "public_only", "dp_scratch@8", "dp_continual@8", "dp_scratch@2", "dp_continual@2"}
    for key, entry in table.items():
        for metric in ("eval_ppl", "audit_eps_lower", "wall_s"):
            assert entry[metric] == entry[metric] and f"{metric}_std" in entry, (key, metric)
    assert table["nondp"]["epsilon"] is None and table["public_only"]["epsilon"] == 0
    for eps in (8, 2):
        for method in ("dp_scratch", "dp_continual"):
            assert table[f"{method}@{eps}"]["epsilon"] == pytest.approx(eps, rel=1e-3)
            assert table[f"{method}@{eps}"]["audit_eps_lower"] <= eps
    assert "dp_continual@8" in (tmp_path / "comparison.md").read_text()
    assert (tmp_path / "eval_loss.png").stat().st_size > 1000
