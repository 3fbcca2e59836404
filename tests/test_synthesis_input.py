"""The synthesis input loader: field aliases, field mapping, bad lines with line numbers."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from toa_graph.synthesis import (
    PromptItem,
    load_input,
    normalize_row,
    parse_field_map,
    parse_jsonl,
    parse_rows,
)


def jl(*rows: object) -> str:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows)


@pytest.mark.parametrize("field", ["prompt", "instruction", "question"])
def test_prompt_aliases(field: str) -> None:
    res = parse_jsonl(jl({field: "What is 2+2?", "id": 7}))
    assert res.errors == []
    [item] = res.items
    assert item.prompt == "What is 2+2?"
    assert item.id == "7"
    assert item.line == 1


def test_prompt_alias_priority() -> None:
    [item] = parse_jsonl(jl({"question": "q", "prompt": "p", "instruction": "i"})).items
    assert item.prompt == "p"


def test_alpaca_input_is_appended() -> None:
    [item] = parse_jsonl(jl({"instruction": "Summarise:", "input": "A long text."})).items
    assert item.prompt == "Summarise:\n\nA long text."


def test_messages_trailing_assistant_becomes_reference() -> None:
    msgs = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello!"},
    ]
    [item] = parse_jsonl(jl({"messages": msgs, "id": "m1"})).items
    assert item.prompt == msgs[:2]
    assert item.reference == "hello!"
    # an explicit reference wins over the cut answer
    [item] = parse_jsonl(jl({"messages": msgs, "reference": "gold"})).items
    assert item.reference == "gold"


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("gold_response", "#### 18", "#### 18"),
        ("reference", "The dog sleeps.", "The dog sleeps."),
        ("answer", 42, "42"),
        ("output", "An essay.", "An essay."),
        ("references", ["a", "b"], ["a", "b"]),
    ],
)
def test_reference_aliases(field: str, value: object, expected: object) -> None:
    [item] = parse_jsonl(jl({"prompt": "p", field: value})).items
    assert item.reference == expected


def test_prompt_id_alias_and_hash_ids_are_stable() -> None:
    [a] = parse_jsonl(jl({"prompt": "p", "prompt_id": "abc"})).items
    assert a.id == "abc"
    [b1] = parse_jsonl(jl({"prompt": "same"})).items
    [b2] = parse_jsonl(jl({"prompt": "same", "other": 1})).items
    assert b1.id == b2.id and b1.id.startswith("h")
    [c] = parse_jsonl(jl({"prompt": "same", "answer": "x"})).items
    assert c.id != b1.id  # the reference is part of the identity


def test_field_map() -> None:
    row = {"src": "Übersetze: Hallo", "en": "Hello", "uid": "w1", "prompt": "ignored"}
    fmap = parse_field_map(["prompt=src", "reference=en", "id=uid"])
    [item] = parse_jsonl(jl(row), field_map=fmap).items
    assert (item.prompt, item.reference, item.id) == ("Übersetze: Hallo", "Hello", "w1")
    res = parse_jsonl(jl({"x": 1}), field_map={"prompt": "src"})
    assert "missing field 'src'" in res.errors[0].reason
    with pytest.raises(ValueError, match="unknown key"):
        parse_field_map(["question=foo"])
    with pytest.raises(ValueError, match="KEY=FIELD"):
        parse_field_map(["oops"])


def test_bad_lines_are_reported_with_line_numbers_and_the_rest_loads() -> None:
    data = (
        jl(
            {"prompt": "ok 1", "id": 1},  # 1
            "{not json",  # 2
            {"id": 3, "text": "no prompt field"},  # 3
            {"prompt": "   ", "id": 4},  # 4
            "[1, 2]",  # 5
            {"prompt": "ok 2", "id": 1},  # 6: duplicate id
            {"prompt": 12, "id": 7},  # 7: wrong type
            {"messages": [{"role": "user"}], "id": 8},  # 8: bad message
            {"prompt": "ok 3", "id": 9, "reference": {"a": 1}},  # 9: bad reference type
        ).encode()
        + b'{"prompt": "caf\xe9", "id": 10}\n'  # 10: invalid UTF-8 (latin-1 byte)
        + b"\n"  # blank lines are ignored
        + jl({"prompt": "ok 4", "id": 12}).encode()
    )
    res = parse_jsonl(data)
    assert [i.id for i in res.items] == ["1", "12"]
    assert [i.line for i in res.items] == [1, 12]
    reasons = {e.line: e.reason for e in res.errors}
    assert sorted(reasons) == [2, 3, 4, 5, 6, 7, 8, 9, 10]
    assert reasons[2].startswith("invalid JSON")
    assert reasons[3].startswith("missing prompt")
    assert reasons[4].startswith("empty prompt")
    assert "JSON object" in reasons[5]
    assert reasons[6] == "duplicate id '1' (first seen on line 1)"
    assert "must be a string or chat messages" in reasons[7]
    assert "bad chat messages" in reasons[8]
    assert "reference" in reasons[9]
    assert reasons[10].startswith("invalid UTF-8")


def test_bom_and_crlf() -> None:
    data = b"\xef\xbb\xbf" + b'{"prompt": "a", "id": 1}\r\n{"prompt": "b", "id": 2}\r\n'
    res = parse_jsonl(data)
    assert res.errors == [] and [i.prompt for i in res.items] == ["a", "b"]


def test_empty_messages_prompt() -> None:
    res = parse_jsonl(
        jl({"messages": [], "id": 1}, {"messages": [{"role": "user", "content": " "}], "id": 2})
    )
    assert [e.line for e in res.errors] == [1, 2]
    assert all("empty prompt" in e.reason for e in res.errors)


def test_parquet_and_json_array(tmp_path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [
        {"instruction": "a", "id": 1, "gold_response": "x"},
        {"instruction": "", "id": 2, "gold_response": "y"},
    ]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "in.parquet")
    res = load_input(tmp_path / "in.parquet")
    assert [i.id for i in res.items] == ["1"] and res.items[0].reference == "x"
    assert [e.line for e in res.errors] == [2]
    (tmp_path / "in.json").write_text(json.dumps(rows))
    res2 = load_input(tmp_path / "in.json")
    assert [i.id for i in res2.items] == ["1"] and [e.line for e in res2.errors] == [2]
    assert parse_rows(rows).items[0].prompt == "a"


def test_normalize_row_keeps_fields() -> None:
    row = {"instruction": "a", "dataset": "helpful_base", "id": 0}
    item = normalize_row(row, line=3)
    assert isinstance(item, PromptItem) and item.fields == row and item.line == 3


# ---------------------------------------------------------------- properties

json_scalars = st.none() | st.booleans() | st.integers() | st.text(max_size=20)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=8,
)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.one_of(st.binary(max_size=40), json_values.map(lambda v: json.dumps(v).encode())),
        max_size=12,
    )
)
def test_loader_never_raises_and_accounts_for_every_nonblank_line(lines: list[bytes]) -> None:
    lines = [ln.replace(b"\n", b" ") for ln in lines]
    data = b"\n".join(lines)
    res = parse_jsonl(data)
    split = data.split(b"\n")
    if split and split[0].startswith(b"\xef\xbb\xbf"):
        split[0] = split[0][3:]  # a BOM is not content
    nonblank = {i + 1 for i, ln in enumerate(split) if ln.strip()}
    seen = [i.line for i in res.items] + [e.line for e in res.errors]
    assert len(seen) == len(set(seen))  # each line reported at most once
    assert set(seen) == nonblank  # ... and every non-blank line exactly once
    ids = [i.id for i in res.items]
    assert len(ids) == len(set(ids))
