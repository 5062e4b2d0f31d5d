"""``job: train_judge`` on a self-play run's comparisons, and the trained judges driving self-play.

The run's judge is the running-sum rule judge with its style cycle alone (correctness weight 0):
the answers' style markers decide, which a tiny model can read (correctness would need it to add).
"""

import json
from pathlib import Path

import pytest

from actors.judge import PreferenceJudge
from framework.config import load_config
from framework.errors import InputError
from framework.jobs import train_judge
from framework.jobs.selfplay import run as run_selfplay

STYLE_ONLY = ["task.correctness_weight=0"]


@pytest.fixture(scope="module")
def style_run(cache_dir, tiny_policy, tmp_path_factory):
    """A self-play run (in this process) whose comparisons the judges learn from."""
    from conftest import SMALL

    out = tmp_path_factory.mktemp("style_run")
    cfg = load_config(None, [f"cache_dir={cache_dir}", *SMALL, *STYLE_ONLY, "train.conversations=16",
                             "train.iterations=4", "pipeline.ray=false", "pipeline.mode=sync"])
    run_selfplay(cfg, out, progress=False)
    return out


@pytest.fixture(scope="module")
def judges(style_run, cache_dir, tmp_path_factory):
    """Both kinds trained on the run's comparisons (summaries by kind). 8 epochs: after the default
    4 the pairwise model may still read only the answers' positions (it did on an AMD EPYC host,
    whose float rounding differs: held-out accuracy 0.2, every verdict flipping with the order)."""
    out = {}
    for kind in ("reward_model", "pairwise_model"):
        cfg = load_config(None, [f"cache_dir={cache_dir}", "task.turns=2", "warm_start.steps=150", *STYLE_ONLY,
                                 "job=train_judge", f"train_judge.data={style_run}", f"train_judge.kind={kind}",
                                 "train_judge.epochs=8"])
        out[kind] = train_judge.run(cfg, tmp_path_factory.mktemp(kind), progress=False)
    return out


def test_both_kinds_learn_the_runs_preferences(style_run, judges):
    train, held = train_judge.split(train_judge.read_preferences(str(style_run)), 0.2, 0)
    rm, pm = judges["reward_model"], judges["pairwise_model"]
    print(f"held-out accuracy: reward model {rm['held_out_accuracy']:.3f}, pairwise {pm['held_out_accuracy']:.3f} "
          f"(ECE {rm['held_out_ece']:.3f} / {pm['held_out_ece']:.3f}; pairwise position flips "
          f"{pm['held_out_position_flip']:.3f}; {rm['held_out_pairs']} pairs)")
    assert rm["held_out_pairs"] == pm["held_out_pairs"] == len(held) and rm["train_pairs"] == len(train)
    # no held-out state was trained on; chance (a judge that does not read the answers) is ½
    assert not {p.state for p in held} & {p.state for p in train}
    assert rm["held_out_accuracy"] > 0.5 and pm["held_out_accuracy"] > 0.5
    assert rm["held_out_position_flip"] == 0.0  # antisymmetric by construction
    assert 0.0 <= pm["held_out_position_flip"] <= 1.0


def test_the_saved_judge_is_what_judge_kind_loads(judges, style_run):
    pm = judges["pairwise_model"]
    assert json.loads((Path(pm["judge_path"]) / "judge.json").read_text())["kind"] == "pairwise_model"
    with pytest.raises(InputError, match="was trained as judge.kind=pairwise_model, not reward_model"):
        PreferenceJudge(kind="reward_model", settings={"path": pm["judge_path"]})
    # the host asks both orders of a pairwise model and combines them: ½(P(a≻b) + 1 − P(b≻a))
    host = PreferenceJudge(kind="pairwise_model", settings={"path": pm["judge_path"]})
    conv = [[{"role": "user", "content": "3+4"}]] * 3
    a, b = ["7!", "7.", "7~"], ["7.", "7~", "7!"]
    p, q = host.judge.compare(conv, a, b), host.judge.compare(conv, b, a)
    verdicts = host.judge_pairs(conv, a, b)
    assert verdicts.probabilities == pytest.approx([0.5 * (x + 1 - y) for x, y in zip(p, q)])
    assert verdicts.disagreement == pytest.approx(sum(abs(x - (1 - y)) for x, y in zip(p, q)))
    assert verdicts.flips == sum((x > 0.5) != (y < 0.5) for x, y in zip(p, q))


@pytest.mark.parametrize("kind", ["reward_model", "pairwise_model"])
def test_a_trained_judge_drives_self_play_under_ray(ray_session, judges, small_config, tmp_path, kind):
    cfg = small_config(*STYLE_ONLY, "quick=true", "train.iterations=2", "eval.every=2",
                       f"judge.kind={kind}", f"judge.path={judges[kind]['judge_path']}", "pipeline.judges=2")
    run_selfplay(cfg, tmp_path, progress=False)
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(r["judge_failures"] == 0 and r["judge_pairs"] > 0 for r in rows)
    assert all(r["judge_position_flip"] is not None and r["judge_pairs_per_s"] > 0 for r in rows)
    if kind == "reward_model":
        assert all(r["judge_position_flip"] == 0.0 and r["judge_disagreement"] == pytest.approx(0.0, abs=1e-9)
                   for r in rows)


@pytest.mark.parametrize("row, message", [
    ({"chosen": "7!", "rejected": "8."}, "needs 'messages' (a chat ending with the user turn) or 'prompt'"),
    ({"prompt": "3+4", "chosen": "7!"}, "'rejected' must be a string"),
    ({"prompt": "3+4", "a": "7!", "b": "8.", "probability": 1.5}, "'probability' must be a number in [0, 1]"),
    ({"prompt": "3+4", "a": "7!"}, "needs 'chosen' and 'rejected', or 'a', 'b' and 'probability'"),
    ({"messages": [{"role": "user", "content": "3+4"}, {"role": "assistant", "content": "7"}], "chosen": "a",
      "rejected": "b"}, "must end with the user turn"),
    ([1, 2], "expected an object"),
])
def test_bad_preference_rows_name_the_file_and_row(tmp_path, row, message):
    path = tmp_path / "prefs.jsonl"
    path.write_text(json.dumps({"prompt": "1+1", "chosen": "2!", "rejected": "3."}) + "\n" + json.dumps(row) + "\n")
    with pytest.raises(InputError) as err:
        train_judge.read_preferences(str(path))
    assert str(err.value).startswith(f"{path}:2: ") and message in str(err.value)


def test_preference_files_of_both_formats_read_alike(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"prompt": "1+1", "chosen": "2!", "rejected": "3."},
            {"messages": [{"role": "user", "content": "2+2"}], "a": "4.", "b": "4!", "probability": 0.25}]
    (tmp_path / "p.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    pq.write_table(pa.Table.from_pylist([rows[0]]), tmp_path / "p.parquet")
    prefs = train_judge.read_preferences(str(tmp_path / "p.jsonl"))
    assert [(p.a, p.b, p.probability) for p in prefs] == [("2!", "3.", 1.0), ("4.", "4!", 0.25)]
    assert train_judge.read_preferences(str(tmp_path / "p.parquet")) == prefs[:1]
    (tmp_path / "p.csv").write_text("prompt,chosen\n")
    with pytest.raises(InputError, match="must be a run directory, a .jsonl or a .parquet file"):
        train_judge.read_preferences(str(tmp_path / "p.csv"))
