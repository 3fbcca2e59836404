"""Hugging Face datasets as synthesis input: ``hf:`` ids (streamed; ``load_dataset``
monkeypatched, no network), ``save_to_disk`` directories and folders of JSONL / Parquet,
with the prompt file's field mapping, ids, numbered bad rows and resume."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.fakes import fake_agents, hash_reward
from toa_graph.errors import UserError
from toa_graph.synthesis import (
    BadLine,
    DatasetInput,
    PromptItem,
    load_source,
    read_records,
    run_synthesis,
)
from toa_graph.synthesis.dataset_input import data_files, parse_hub_id, resolve_input

datasets = pytest.importorskip("datasets")

ROWS = [
    {"id": "a", "question": "What is 1+1?", "answer": "2"},
    {"id": "b", "question": "", "answer": "x"},  # empty prompt: a bad row
    {"id": "c", "question": "What is 2+2?", "answer": "4"},
]


def test_parse_hub_id() -> None:
    assert parse_hub_id("hf:openai/gsm8k:main") == ("openai/gsm8k", "main")
    assert parse_hub_id("hf:org/name") == ("org/name", None)
    for bad in ("hf:", "hf:a/b/c", "hf:org/na me", "hf:org/name:con fig"):
        with pytest.raises(UserError, match="expected hf:ORG/NAME"):
            parse_hub_id(bad)


def test_resolve_input(tmp_path: Path) -> None:
    f = tmp_path / "p.jsonl"
    f.write_text(json.dumps({"prompt": "hi"}) + "\n")
    assert resolve_input(f) == f
    assert resolve_input(str(tmp_path), "test") == DatasetInput(str(tmp_path), "test")
    assert resolve_input("hf:o/n:c", "train") == DatasetInput("hf:o/n:c", "train")
    with pytest.raises(UserError, match="--split test applies to hf: datasets"):
        resolve_input(f, "test")
    with pytest.raises(FileNotFoundError, match="input file not found"):
        resolve_input(tmp_path / "missing")


def test_hub_input_streams_through_load_dataset(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    def fake_load_dataset(*args: Any, **kwargs: Any) -> Any:
        calls.append((args, kwargs))
        return iter(ROWS)  # what an IterableDataset yields: dict rows

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    res = load_source(DatasetInput("hf:org/qa:main", "test"), field_map={"reference": "answer"})
    assert calls == [(("org/qa", "main"), {"split": "test", "streaming": True})]
    assert [(i.id, i.prompt, i.reference, i.line) for i in res.items] == [
        ("a", "What is 1+1?", "2", 1),
        ("c", "What is 2+2?", "4", 3),
    ]
    assert [(e.line, e.reason) for e in res.errors] == [(2, "empty prompt (field 'question')")]


def test_hub_input_without_split_takes_train_of_a_dict(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Any] = []

    def fake_load_dataset(name: str, config: Any, *, split: Any, streaming: bool) -> Any:
        seen.append((name, config, split, streaming))
        return {"train": ROWS[:1], "test": ROWS[2:]}

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    assert [i.id for i in load_source("hf:org/qa").items] == ["a"]
    assert seen == [("org/qa", None, None, True)]
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: {"dev": ROWS})
    assert [i.id for i in load_source("hf:org/qa").items] == ["a", "c"]  # the only split
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: {"dev": ROWS, "eval": ROWS})
    with pytest.raises(UserError, match="no split 'train'; it has dev, eval"):
        load_source("hf:org/qa")


def test_save_to_disk_dataset_dict_splits(tmp_path: Path) -> None:
    d = tmp_path / "dd"
    datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_list(ROWS),
            "test": datasets.Dataset.from_list([{"id": "t", "question": "Q?", "answer": "A"}]),
        }
    ).save_to_disk(str(d))
    train = load_source(DatasetInput(str(d)))
    assert [i.id for i in train.items] == ["a", "c"] and [e.line for e in train.errors] == [2]
    assert [i.id for i in load_source(DatasetInput(str(d), "test")).items] == ["t"]
    with pytest.raises(UserError, match="no split 'validation'; it has train, test"):
        load_source(DatasetInput(str(d), "validation"))


def test_save_to_disk_single_dataset_and_field_map(tmp_path: Path) -> None:
    d = tmp_path / "one"
    rows = [{"text": "Translate: Hallo", "en": "Hello"}, {"text": "Translate: Welt", "en": "World"}]
    datasets.Dataset.from_list(rows).save_to_disk(str(d))
    res = load_source(d, field_map={"prompt": "text", "reference": "en"})
    assert [(i.prompt, i.reference) for i in res.items] == [
        ("Translate: Hallo", "Hello"),
        ("Translate: Welt", "World"),
    ]
    assert all(i.id.startswith("h") for i in res.items)  # content hashes, as for JSONL
    assert res.items == load_source(d, field_map={"prompt": "text", "reference": "en"}).items
    with pytest.raises(UserError, match="saved without splits: drop --split test"):
        load_source(DatasetInput(str(d), "test"))


def test_folder_of_files_reports_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train-00000-of-00002.jsonl").write_text(
        json.dumps(ROWS[0]) + "\n{not json\n"
    )
    datasets.Dataset.from_list([ROWS[2]]).to_parquet(
        str(tmp_path / "data" / "train-00001-of-00002.parquet")
    )
    (tmp_path / "data" / "test.jsonl").write_text(json.dumps({"id": "t", "prompt": "T?"}) + "\n")
    (tmp_path / "notes.txt").write_text("not data")
    assert [p.name for p in data_files(tmp_path, None)] == [
        "train-00000-of-00002.jsonl",
        "train-00001-of-00002.parquet",
    ]
    res = load_source(tmp_path)
    assert [i.id for i in res.items] == ["a", "c"]
    [bad] = res.errors
    assert bad.line == 2 and bad.reason.startswith("data/train-00000-of-00002.jsonl: invalid JSON")
    assert [i.id for i in load_source(DatasetInput(str(tmp_path), "test")).items] == ["t"]
    with pytest.raises(
        UserError, match=re.escape("no .jsonl/.json/.parquet/.pq files for split 'dev'")
    ):
        load_source(DatasetInput(str(tmp_path), "dev"))


def test_duplicate_ids_across_files_are_bad_rows(tmp_path: Path) -> None:
    (tmp_path / "a.jsonl").write_text(json.dumps({"id": 1, "prompt": "x"}) + "\n")
    (tmp_path / "b.jsonl").write_text(json.dumps({"id": 1, "prompt": "y"}) + "\n")
    items = list(resolve_and_iter(tmp_path))
    assert isinstance(items[0], PromptItem) and isinstance(items[1], BadLine)
    assert "duplicate id '1'" in items[1].reason


def resolve_and_iter(path: Path) -> list[PromptItem | BadLine]:
    from toa_graph.synthesis import iter_source

    return list(iter_source(path))


def test_synthesis_over_a_hub_dataset_resumes(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    rows = [{"instruction": f"Say {i}."} for i in range(4)]  # no ids: content hashes
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: iter(rows))
    src = DatasetInput("hf:org/prompts", "train")
    kw: dict[str, Any] = dict(
        method="random", agents=fake_agents(), reward=hash_reward, context={"budget": 2},
        progress=False,
    )  # fmt: skip
    first = asyncio.run(run_synthesis(src, tmp_path / "out", limit=3, **kw))
    assert first.done == 3
    second = asyncio.run(run_synthesis(src, tmp_path / "out", **kw))
    assert (second.skipped, second.done) == (3, 1)
    recs = list(read_records(tmp_path / "out"))
    assert len({r["id"] for r in recs}) == 4
    assert [r["prompt"] for r in recs] == [r["instruction"] for r in rows]


def test_synthesize_cli_rejects_a_bad_hub_id_before_starting(tmp_path: Path) -> None:
    from toa_graph.cli import main

    assert main(["synthesize", "--input", "hf:not a/valid id", "--output", str(tmp_path)]) == 2
    assert main(["synthesize", "--split", "test", "--output", str(tmp_path)]) == 2
    assert not (tmp_path / "records.jsonl").exists()
