"""The warm start: a fixed number of SFT steps, or until the held-out NLL stops improving."""

import json

import pytest

from actors.learner import Learner
from framework.config import WarmStartConfig, load_config
from framework.jobs.warmstart import heldout_nll, prepare_policy, sft_pairs, warm_start_record
from games.demonstrations import demonstrations


def test_a_plateau_stops_after_patience_checks_and_keeps_the_best_weights(cache_dir, task):
    """With a min_delta no check can beat, the first check is the best and two more end the run:
    30 steps, and the saved policy's held-out NLL is the first check's."""
    cfg = load_config(None, [f"cache_dir={cache_dir}", "task.turns=2", "warm_start.until=plateau",
                             "warm_start.steps=500", "warm_start.eval_every=10", "warm_start.patience=2",
                             "warm_start.min_delta=100", "warm_start.demonstrations=40", "warm_start.batch_size=8"])
    policy = prepare_policy(cfg, task, progress=False)
    record = warm_start_record(policy)
    assert record["stopped"] == "plateau" and record["steps"] == 30 and record["best_step"] == 10
    assert [step for step, _ in record["heldout_nll"]] == [10, 20, 30]
    assert record["heldout_nll_best"] == record["heldout_nll"][0][1]
    # the held-out tenth: the last 8 of 80 demonstrations (40 conversations × 2 turns)
    demos = demonstrations(task, path=None, count=40, corruption=0.0, seed=0)
    learner = Learner(model_path=policy)
    prompts, responses = sft_pairs(learner.tokenizer, demos[-8:])
    assert heldout_nll(learner, prompts, responses) == pytest.approx(record["heldout_nll_best"], rel=1e-4)
    assert policy != prepare_policy(load_config(None, [
        f"cache_dir={cache_dir}", "task.turns=2", "warm_start.steps=30", "warm_start.demonstrations=40",
        "warm_start.batch_size=8"]), task, progress=False)  # a fixed-step start is another cache entry


def test_a_plateau_with_lr_drops_goes_back_to_the_best_weights_at_the_lower_rate(cache_dir, task):
    """lr_drops=2 with a min_delta no check can beat: the rate drops at the 2nd plateau check (30)
    and again at 50, the run stops at 70. With a factor of 1e-9 training after a drop barely moves
    the weights, so every later check sees the best (first) check's weights again: the drop both
    restored them and set the rate."""
    common = [f"cache_dir={cache_dir}", "task.turns=2", "warm_start.until=plateau", "warm_start.steps=500",
              "warm_start.eval_every=10", "warm_start.patience=2", "warm_start.min_delta=100",
              "warm_start.demonstrations=40", "warm_start.batch_size=8"]
    cfg = load_config(None, [*common, "warm_start.lr_drops=2", "warm_start.lr_drop_factor=1e-9"])
    record = warm_start_record(prepare_policy(cfg, task, progress=False))
    assert record["stopped"] == "plateau" and record["steps"] == 70 and record["best_step"] == 10
    assert record["lr_drops"] == [[30, pytest.approx(3e-12)], [50, pytest.approx(3e-21)]]
    nll = dict(record["heldout_nll"])
    assert nll[20] != pytest.approx(nll[10], rel=1e-4)  # (at the full rate, 10 steps move the NLL)
    for step in (40, 50, 60, 70):
        assert nll[step] == pytest.approx(nll[10], rel=1e-5), step
    with pytest.raises(Exception, match="lr_drop"):
        load_config(None, [*common, "warm_start.lr_drop_factor=1.5"])


def test_a_fixed_step_start_keeps_its_cache_key():
    """The plateau's settings enter the cache key only when it stops on one: starts made before
    them are found again."""
    assert WarmStartConfig().cache_key() == {"steps": 800, "batch_size": 64, "lr": 3e-3, "demonstrations": 4000}
    assert json.dumps(WarmStartConfig(until="plateau").cache_key()).count("patience") == 1
    assert "lr_drops" not in WarmStartConfig(until="plateau").cache_key()  # (plateau starts made before drops)
    assert WarmStartConfig(until="plateau", lr_drops=1).cache_key()["lr_drops"] == 1


def test_a_fixed_warm_start_seed_gives_every_run_seed_one_start(cache_dir, task):
    """warm_start.seed=5 gives runs of seeds 0 and 1 the start a seed-5 run makes for itself, and
    that start differs from seed 0's own."""
    common = [f"cache_dir={cache_dir}", "task.turns=2", "warm_start.steps=5", "warm_start.demonstrations=20",
              "warm_start.batch_size=4"]
    fixed = {prepare_policy(load_config(None, [*common, f"seed={s}", "warm_start.seed=5"]), task, progress=False)
             for s in (0, 1)}
    assert fixed == {prepare_policy(load_config(None, [*common, "seed=5"]), task, progress=False)}
    assert fixed != {prepare_policy(load_config(None, [*common, "seed=0"]), task, progress=False)}
