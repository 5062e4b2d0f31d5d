"""Demonstration files: both row forms, JSONL and Parquet, and errors naming the row and field."""

import json

import pytest

from games.demonstrations import from_conversations, load_demonstrations
from framework.errors import InputError

CHAT = [{"role": "user", "content": "3+4"}, {"role": "assistant", "content": "7!"},
        {"role": "user", "content": "+2"}, {"role": "assistant", "content": "9."}]


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_both_row_forms_from_jsonl_and_parquet(tmp_path):
    rows = [{"messages": CHAT}, {"messages": CHAT[:2]}]
    demos = load_demonstrations(_jsonl(tmp_path / "d.jsonl", rows))
    assert [d.response for d in demos] == ["9.", "7!"]
    assert demos[0].messages == CHAT[:3] and demos[1].messages == CHAT[:1]
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist([{"prompt": "1+1", "response": "2~"}]), tmp_path / "d.parquet")
    (demo,) = load_demonstrations(tmp_path / "d.parquet")
    assert demo.messages == [{"role": "user", "content": "1+1"}] and demo.response == "2~"


def test_conversations_give_one_demonstration_per_assistant_turn():
    demos = from_conversations([CHAT])
    assert [(len(d.messages), d.response) for d in demos] == [(1, "7!"), (3, "9.")]


@pytest.mark.parametrize("rows, fragment", [
    ([{"messages": CHAT}, {"messages": CHAT[:1]}], "row 1: field 'messages': expected a list of at least"),
    ([{"messages": CHAT[:3]}], "row 0: field 'messages[2].role': expected 'assistant'"),
    ([{"messages": [{"role": "bot", "content": "x"}, CHAT[1]]}], "row 0: field 'messages[0].role': expected one of"),
    ([{"prompt": "1+1", "response": "2!"}, {"prompt": "", "response": "3!"}], "row 1: field 'prompt': expected a non-empty"),
    ([{"text": "hello"}], "needs a 'messages' column or 'prompt' and 'response'"),
])
def test_malformed_rows_name_the_row_and_field(tmp_path, rows, fragment):
    with pytest.raises(InputError) as err:
        load_demonstrations(_jsonl(tmp_path / "d.jsonl", rows))
    assert fragment in str(err.value)


def test_a_broken_jsonl_line_is_named(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"messages": CHAT}) + "\n{\"messages\": [\n")
    with pytest.raises(InputError, match="d.jsonl:2: not valid JSON"):
        load_demonstrations(path)
