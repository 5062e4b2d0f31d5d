import math
from pathlib import Path

import pytest

from framework.config import QUICK, Config, load_config, to_yaml
from framework.errors import ConfigError, InputError

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.yaml"))


def test_there_are_shipped_examples():
    assert EXAMPLES


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_shipped_config_loads_also_in_quick_mode(path):
    cfg = load_config(path)
    assert isinstance(cfg, Config)
    quick = load_config(path, ["quick=true"])
    assert quick.quick and quick != cfg
    for key, value in QUICK.items():  # every reduced size is applied
        node = quick
        for part in key.split("."):
            node = getattr(node, part)
        assert node == (tuple(value) if isinstance(value, list) else value), key
    assert quick.train.iterations < cfg.train.iterations or cfg.job == "lab"


def test_overrides_win_over_quick_and_yaml(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("lab:\n  iters: 700\n  algos: [ompo]\n")
    assert load_config(path).lab.iters == 700
    assert load_config(path).lab.algos == ("ompo",)
    assert load_config(path, ["quick=true"]).lab.iters == QUICK["lab.iters"]
    assert load_config(path, ["quick=true", "lab.iters=55"]).lab.iters == 55


@pytest.mark.parametrize("overrides, message", [
    (["lab.iterz=3"], "lab.iterz: Key 'iterz' not in 'LabConfig'"),
    (["trainer.lr=3"], "trainer"),
    (["lab.iters=many"], "lab.iters: Value 'many' of type 'str' could not be converted to Integer"),
    (["lab.eta=-1"], "lab.eta: must be > 0, got -1.0"),
    (["lab.algos=[mpo,reinforce]"], "lab.algos[1]: unknown algorithm 'reinforce'"),
    (["lab.init=zeros"], "lab.init: must be 'uniform' or 'random'"),
    (["job=train"], "job: unknown job 'train'"),
    (["lab.iters"], "an override must look like key=value"),
    (["algo.kl_coef=0.3"], "algo.kl_coef: η·β must be < 1"),
    (["algo.kl_coef=0.1", "algo.name=ompo"], "algo.kl_coef: the KL penalty is implemented for mpo"),
    (["algo.kl_coef=0.1", "algo.q=monte_carlo"], "algo.kl_coef: the KL penalty is implemented for mpo"),
    (["algo.lr_schedule=step"], "algo.lr_schedule: must be one of"),
    (["algo.warmup=200"], "algo.warmup: the warm-up (200) must be shorter than train.iterations (200)"),
    (["pipeline.learner_strategy=zero3"], "pipeline.learner_strategy: must be one of ('ddp', 'fsdp')"),
    (["pipeline.weight_sync=nccl"], "pipeline.weight_sync: must be one of ('object_store', 'broadcast')"),
    (["pipeline.weight_sync=broadcast", "pipeline.ray=false"], "pipeline.weight_sync: broadcast needs pipeline.ray"),
    (["model.dtype=float16"], "model.dtype"),
    (["checkpoint.every=0"], "checkpoint.every: must be ≥ 1, got 0"),
    (["checkpoint.keep=-1"], "checkpoint.keep: must be ≥ 0 (0 keeps every checkpoint), got -1"),
    (["pipeline.num_cpus=0"], "pipeline.num_cpus: must be ≥ 1 (or unset: every CPU), got 0"),
    (["seed=-1"], "seed: must be ≥ 0, got -1"),
    (["dp.max_grad_norm=inf"], "dp.max_grad_norm: the clipping bound must be finite and > 0, got inf"),
    (["dp.max_grad_norm=nan"], "dp.max_grad_norm: the clipping bound must be finite and > 0, got nan"),
    (["dp.max_grad_norm=0"], "dp.max_grad_norm: the clipping bound must be finite and > 0, got 0.0"),
    (["dp.lr=inf"], "dp.lr: must be finite and > 0, got inf"),
])
def test_bad_values_name_the_full_key(overrides, message):
    with pytest.raises(ConfigError) as err:
        load_config(None, overrides)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("schedule, expected", [
    # lr = 1, 10 iterations, 2 of warm-up: 1/2, 1, then over the remaining 8 (progress (t − 2)/8)
    ("constant", [0.5, 1, 1, 1, 1, 1, 1, 1, 1, 1]),
    ("linear", [0.5, 1, 1, 7 / 8, 6 / 8, 5 / 8, 4 / 8, 3 / 8, 2 / 8, 1 / 8]),
    ("cosine", [0.5, 1] + [0.5 * (1 + math.cos(math.pi * k / 8)) for k in range(8)]),
])
def test_learning_rate_schedules(schedule, expected):
    cfg = load_config(None, [f"algo.lr_schedule={schedule}", "algo.lr=1", "algo.warmup=2", "train.iterations=10"])
    assert [cfg.algo.lr_at(t, 10) for t in range(10)] == pytest.approx(expected)


def test_unknown_keys_in_yaml_name_their_path(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("lab:\n  eta: 0.3\n  horizon: 3\n")
    with pytest.raises(ConfigError, match=r"^lab\.horizon: "):
        load_config(path)
    path.write_text("lab: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)
    with pytest.raises(InputError, match="no such config file"):
        load_config(tmp_path / "nope.yaml")


def test_configs_are_frozen_and_round_trip_through_yaml(tmp_path):
    cfg = load_config(None, ["lab.eta=0.25", "seed=3"])
    with pytest.raises(Exception):
        cfg.seed = 4
    path = tmp_path / "resolved.yaml"
    path.write_text(to_yaml(cfg))
    assert load_config(path) == cfg


def test_resume_refuses_a_different_experiment_but_allows_more_iterations():
    from framework.jobs.rundir import experiment_changes
    from framework.jobs.selfplay import EXPERIMENT_KEYS

    saved = load_config(None, ["job=selfplay"])
    assert experiment_changes(saved, load_config(None, ["train.iterations=500", "judge.retries=5",
                                                        "pipeline.mode=sync", "resume=true"]), EXPERIMENT_KEYS) == []
    assert experiment_changes(saved, load_config(None, ["algo.eta=2", "seed=3"]), EXPERIMENT_KEYS) == ["seed", "algo.eta"]


def test_a_round_runs_its_own_schedule_step_by_step():
    """Two iterations of five steps per round, 10% warm-up (one step), linear decay to zero at the
    round's end: step s > 0 of the round has lr (1 − (s − 1)/9)."""
    algo = load_config(None, ["algo.name=irft", "algo.lr=1.0", "algo.minibatches=5", "algo.round_iterations=2",
                              "algo.round_reset=true", "algo.lr_schedule=linear"]).algo
    want = [1.0] + [1 - (s - 1) / 9 for s in range(1, 10)]
    assert algo.round_lrs(0) + algo.round_lrs(1) == pytest.approx(want)
    constant = load_config(None, ["algo.name=sft", "algo.lr=0.5", "algo.minibatches=4", "algo.round_reset=true",
                                  "algo.round_warmup=0.5"]).algo
    assert constant.round_lrs(0) == pytest.approx([0.25, 0.5, 0.5, 0.5])


@pytest.mark.parametrize("override, key", [
    (["algo.name=mpo", "algo.temperature=0"], "algo.temperature"),
    (["algo.name=rft", "algo.temperature=0"], "algo.temperature"),
    (["algo.name=irft", "algo.temperature=-1"], "algo.temperature"),
    (["algo.name=mpo", "algo.round_reset=true", "algo.warmup=2"], "algo.warmup"),
    (["algo.name=irft", "algo.round_reset=true", "algo.warmup=2"], "algo.warmup"),
    (["algo.name=irft", "algo.round_warmup=1"], "algo.round_warmup"),
    (["algo.name=spin", "algo.reward_model=/x"], "algo.reward_model"),
])
def test_demonstration_settings_are_refused_where_they_mean_nothing(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(None, override)


def test_a_comparisons_mappings_are_replaced_by_a_later_layer_not_merged():
    """compare.overrides / variants / grid given on the command line (or by quick=true) replace the
    file's mapping: a merge would keep the file's other entries (a variant nobody asked for)."""
    cfg = load_config("examples/compare_style_cycle.yaml", ["compare.overrides={dpo: [algo.eta=3.0]}"])
    assert cfg.compare.overrides == {"dpo": ["algo.eta=3.0"]}
    assert set(load_config("examples/compare_style_cycle.yaml").compare.overrides) == {"dpo", "ipo", "step_dpo"}
    assert load_config("examples/compare_dp.yaml", ["compare.variants={x: [dp.target_epsilon=1]}"]).compare.variants \
        == {"x": ["dp.target_epsilon=1"]}
    assert load_config("examples/compare_nontransitive.yaml", ["quick=true"]).compare.grid == {}  # no tuning in quick
    assert load_config("examples/compare_nontransitive.yaml", ["quick=true", "compare.grid={algo.lr: [0.1]}"]
                       ).compare.grid == {"algo.lr": [0.1]}
    with pytest.raises(ConfigError, match=r"compare\.grid\.algo\.lr"):
        load_config(None, ["compare.grid={algo.lr: 3}"])
    with pytest.raises(ConfigError, match=r"compare\.grid"):
        load_config(None, ["compare.grid={lr: [3]}"])
