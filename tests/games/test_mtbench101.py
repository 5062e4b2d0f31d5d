"""The MT-Bench-101-format loader and task: the shipped sample, malformed files, a run on it."""

import json
from pathlib import Path

import pytest

from framework.errors import InputError
from games.tasks import get_task
from games.tasks.mtbench101 import load_mtbench101

SAMPLE = Path(__file__).resolve().parents[2] / "examples" / "data" / "mtbench101_sample.jsonl"


def test_the_sample_file_loads_as_a_scripted_task():
    dialogues = load_mtbench101(SAMPLE)
    assert len(dialogues) == sum(1 for line in SAMPLE.read_text().splitlines() if line.strip())
    task = get_task("mtbench101", path=str(SAMPLE), turns=2)
    train, heldout = task._split("train"), task._split("heldout")
    assert train and heldout and not {d.id for d in train} & {d.id for d in heldout}
    episode = task.episodes("train", 3, seed=0)[0]
    state = episode.start()
    dialogue = next(d for d in train if episode.conversation_id.endswith(f"-{d.id}"))
    assert state == [{"role": "user", "content": dialogue.users[0]}]
    after = episode.advance(state, "anything")  # scripted: the next user turn whatever the answer
    assert after[-1] == {"role": "user", "content": dialogue.users[1]}
    # held-out states carry the reference answers as context, one state per played turn
    states = task.heldout_states(100, seed=0)
    assert len(states) == sum(min(len(d.users), 2) for d in heldout)
    assert any(s[1]["role"] == "assistant" and s[1]["content"] in {d.bots[0] for d in heldout}
               for s in states if len(s) > 1)


def _line(**row):
    return json.dumps(row)


GOOD = _line(id=1, task="CM", history=[{"user": "hi", "bot": "hello"}, {"user": "again", "bot": "yes"}])


@pytest.mark.parametrize("bad, fragment", [
    ('{"id": 2, "history": [', ":2: not valid JSON"),
    (_line(id=2, history=[]), ":2: field 'history': expected a non-empty list"),
    (_line(id=2, dialogue=[{"user": "x"}]), ":2: field 'history': expected a non-empty list of turns, got None"),
    (_line(id=2, history=[{"user": "a"}, {"user": ""}]), ":2: field 'history[1].user': expected a non-empty string"),
    (_line(id=2, history=[{"user": "a", "bot": 3}]), ":2: field 'history[0].bot': expected a string, got 3"),
    (_line(id=2, history=["just text"]), ":2: field 'history[0]': expected an object"),
    (_line(id=1, history=[{"user": "a"}]), ":2: field 'id': expected an id not used by an earlier line, got 1"),
    ("[1, 2]", ":2: line: expected a JSON object"),
])
def test_a_malformed_dialogue_names_the_line_and_field(tmp_path, bad, fragment):
    path = tmp_path / "d.jsonl"
    path.write_text(GOOD + "\n" + bad + "\n")
    with pytest.raises(InputError, match=None) as err:
        load_mtbench101(path)
    assert str(path) + fragment in str(err.value)


@pytest.fixture
def length_judge(plugin):
    return plugin("mt_judges", '''
        class PrefersShort:
            """A stand-in for an LLM judge: the shorter answer wins (ties ½)."""
            antisymmetric = True
            def compare(self, conversations, a, b):
                return [0.5 if len(x) == len(y) else float(len(x) < len(y)) for x, y in zip(a, b)]
    ''') + ":PrefersShort"


def test_a_run_on_mtbench_format_data_and_a_malformed_file_loses_nothing(length_judge, cache_dir, tmp_path):
    """A comparison on the sample file with a user's judge; then the file breaks and a resume
    fails before touching the run: the error names the line and field, every file is intact."""
    from framework.cli import main

    data = tmp_path / "dialogues.jsonl"
    data.write_text(SAMPLE.read_text())
    run_dir = tmp_path / "run"
    args = ["run", str(SAMPLE.parents[1] / "compare_nontransitive.yaml"), "--run-dir", str(run_dir),
            f"cache_dir={cache_dir}", "task.name=mtbench101", f"task.path={data}", "task.turns=2",
            "judge.kind=custom", f"judge.target={length_judge}", "model.max_new_tokens=6",
            "warm_start.steps=10", "warm_start.demonstrations=40", "train.iterations=2", "train.conversations=4",
            "eval.every=1", "eval.conversations=4", "eval.final_conversations=4", "eval.samples=2",
            "pipeline.ray=false", "pipeline.mode=sync", "compare.methods=[sft,mpo]", "compare.seeds=[0]",
            "compare.grid={}", "eval.final_samples=2", "algo.k=2", "algo.epochs=1"]
    assert main(args) == 0
    table = json.loads((run_dir / "comparison.json").read_text())
    assert set(table) == {"sft", "mpo"} and "exploitability" not in table["mpo"]  # no response classes
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    lines = data.read_text().splitlines()
    lines[4] = _line(id=5, history=[{"user": "fine"}, {"bot": "no user turn"}])
    data.write_text("\n".join(lines) + "\n")
    sub = run_dir / "runs" / "mpo-seed0"
    assert main(["run", str(sub / "config.yaml"), "--run-dir", str(sub), "resume=true",
                 "train.iterations=3"]) == 2
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == before
