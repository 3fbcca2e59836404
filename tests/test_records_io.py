"""Lean records (each input value written once), compressed records files (streamed,
resumable after a kill) and readers of records written by earlier versions."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from tests.fakes import fake_agents, hash_reward, same_ids
from toa_graph.cli import main
from toa_graph.commands.compare import aggregate
from toa_graph.synthesis import read_records, repair_records, run_synthesis
from toa_graph.synthesis.inputs import normalize_row
from toa_graph.synthesis.recordio import LineReader, RecordFile, _compressor, records_file
from toa_graph.synthesis.records import build_record, encode_record

KW: dict[str, Any] = dict(
    method="toa", agents=fake_agents(), reward=hash_reward, context={"budget": 2}, progress=False
)


def write_prompts(path: Path, n: int) -> Path:
    rows = [
        {"prompt_id": f"p{i}", "question": f"What is {i}?", "answer": str(i), "topic": "m"}
        for i in range(n)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_a_record_writes_each_input_value_once() -> None:
    row = {"prompt_id": "a1", "question": "Q?", "answer": "A", "topic": "geo"}
    item = normalize_row(row, line=1)
    rec = build_record(item, {"samples": []}, method="toa", digest="d", context={}, wall_s=0.0)
    assert (rec["id"], rec["prompt"], rec["reference"]) == ("a1", "Q?", "A")
    assert rec["input"] == {"topic": "geo"}  # only the fields not already at the top level
    alpaca = normalize_row({"instruction": "Sum up:", "input": "long text", "output": "x"}, line=1)
    rec = build_record(alpaca, {"samples": []}, method="toa", digest="d", context={}, wall_s=0)
    assert rec["prompt"] == "Sum up:\n\nlong text" and "input" not in rec


@pytest.mark.parametrize("compress", ["zst", "gz"])
def test_compressed_records_resume_after_a_kill(tmp_path: Path, compress: str) -> None:
    inp = write_prompts(tmp_path / "in.jsonl", 6)
    out = tmp_path / "out"
    first = asyncio.run(run_synthesis(inp, out, limit=3, compress=compress, **KW))
    path = records_file(out)
    assert path.name == f"records.jsonl.{compress}" and first.done == 3
    assert not (out / "records.jsonl").exists()
    # a killed writer: one more record flushed, its frame never finished, the next one torn
    rec = next(read_records(out))
    f = RecordFile(path)
    f.write(encode_record({**rec, "id": "p3"}))
    size = path.stat().st_size
    n = f.write(encode_record({**rec, "id": "p4"}))
    with path.open("r+b") as raw:
        raw.truncate(size + n // 2)
    reader = LineReader(path)
    whole = [json.loads(x)["id"] for x in reader if x.endswith(b"\n")]  # gzip: a torn line too
    assert whole == ["p0", "p1", "p2", "p3"]
    assert not reader.clean
    scan = repair_records(path)
    assert same_ids(scan.ids, {"p0", "p1", "p2", "p3"})
    reader = LineReader(path)
    assert len(list(reader)) == 4 and reader.clean  # rewritten into a finished frame
    second = asyncio.run(run_synthesis(inp, out, compress=compress, **KW))
    assert (second.skipped, second.done) == (4, 2)
    assert sorted(r["id"] for r in read_records(out)) == [f"p{i}" for i in range(6)]
    assert LineReader(path).kind == compress


def old_record(i: int) -> dict[str, Any]:
    """A record as versions before lean records wrote it: the row again under ``input``."""
    samples = [
        {"text": f"answer {i} {k}", "reward": float(k), "agent": "a", "tokens": 3} for k in range(3)
    ]
    row = {"id": f"o{i}", "question": f"Old {i}?", "answer": f"{i}"}
    return {
        "id": f"o{i}", "input": row, "prompt": row["question"], "reference": row["answer"],
        "method": "toa", "context": {"budget": 3}, "config_digest": "old0",
        "samples": samples, "best": samples[-1],
        "totals": {"generations": 3, "failed_generations": 0, "tokens": {"total_tokens": 9}, "wall_s": 0.1},
        "shortfall": 0, "errors": [],
    }  # fmt: skip


def test_records_of_earlier_versions_still_read(tmp_path: Path) -> None:
    old_dir = tmp_path / "old"
    old_dir.mkdir()
    (old_dir / "records.jsonl").write_text(
        "".join(json.dumps(old_record(i)) + "\n" for i in range(4))
    )
    # export (every kind that reads prompt / reference / samples)
    for kind in ("sft", "dpo", "samples"):
        out = tmp_path / f"{kind}.jsonl"
        assert main(["export", kind, "--input", str(old_dir), "--output", str(out)]) == 0
        rows = [json.loads(x) for x in out.read_text().splitlines()]
        assert len(rows) == 4, kind
    sft = [json.loads(x) for x in (tmp_path / "sft.jsonl").read_text().splitlines()]
    assert sft[0]["messages"][0]["content"] == "Old 0?"
    # compare's aggregate
    row = aggregate(list(read_records(old_dir)), method="toa", budget=3)
    assert (row["prompts"], row["mean_best_reward"], row["mean_tokens"]) == (4, 2.0, 9)
    # resume: an old directory skips its ids and appends lean records after them
    inp = tmp_path / "in.jsonl"
    inp.write_text(
        "".join(json.dumps({"id": f"o{i}", "question": f"Old {i}?"}) + "\n" for i in range(6))
    )
    s = asyncio.run(run_synthesis(inp, old_dir, **KW))
    assert (s.skipped, s.done) == (4, 2)
    recs = list(read_records(old_dir))
    assert [r["id"] for r in recs] == [f"o{i}" for i in range(6)]
    assert "input" in recs[0] and "input" not in recs[5]
    out = tmp_path / "mixed.jsonl"
    assert main(["export", "sft", "--input", str(old_dir), "--output", str(out)]) == 0
    assert len(out.read_text().splitlines()) == 6


def test_export_streams_a_split_with_exact_counts(tmp_path: Path) -> None:
    d = tmp_path / "run"
    d.mkdir()
    (d / "records.jsonl").write_text("".join(json.dumps(old_record(i)) + "\n" for i in range(10)))
    out = tmp_path / "sft.jsonl"
    args = ["export", "sft", "--input", str(d), "--output", str(out), "--test-size", "0.3"]
    assert main(args) == 0
    train = (tmp_path / "sft.train.jsonl").read_text().splitlines()
    test = (tmp_path / "sft.test.jsonl").read_text().splitlines()
    assert (len(train), len(test)) == (7, 3) and not set(train) & set(test)
    card = (tmp_path / "sft.README.md").read_text()
    assert "| train | 7 |" in card and "| test | 3 |" in card


@pytest.mark.parametrize("compress", ["zst", "gz"])
@pytest.mark.parametrize("damage", ["head", "end", "head+torn"])
def test_a_damaged_frame_in_the_middle_keeps_the_frames_after_it(
    tmp_path: Path, compress: str, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Three runs, three frames; the middle one damaged. ``head``: its first bytes zeroed
    (nothing in it readable: its two prompts run again); ``end``: its last three bytes
    flipped (zstd's last block header, gzip's length check): its records are read up to
    the damage; ``head+torn``: and a killed writer's torn frame at the end, so the file is
    rewritten, the damaged one kept beside it. Before this, the frames after the damage
    were cut off by the resume and their prompts paid for again."""
    inp = write_prompts(tmp_path / "in.jsonl", 6)
    out = tmp_path / "out"
    ends = []
    for limit in (2, 4, 6):
        asyncio.run(run_synthesis(inp, out, limit=limit, compress=compress, **KW))
        ends.append(records_file(out).stat().st_size)
    path = records_file(out)
    data = bytearray(path.read_bytes())
    if damage == "end":
        data[ends[1] - 3 : ends[1]] = bytes(b ^ 0xFF for b in data[ends[1] - 3 : ends[1]])
    else:
        data[ends[0] : ends[0] + 8] = bytes(8)
    if damage == "head+torn":  # a frame of a killed writer, cut in its block
        block = _compressor(compress)[0](encode_record({"id": "p9"}))
        data += block[: len(block) // 2]
    path.write_bytes(bytes(data))

    reader = LineReader(path)
    readable = [json.loads(x)["id"] for x in reader if x.strip() and x.endswith(b"\n")]
    assert reader.damaged == [(ends[0], ends[1])] and reader.clean is (damage != "head+torn")
    lost = {"head": ["p2", "p3"], "end": [], "head+torn": ["p2", "p3"]}[damage]
    assert readable == [p for p in (f"p{i}" for i in range(6)) if p not in lost]

    with caplog.at_level("WARNING"):
        s = asyncio.run(run_synthesis(inp, out, compress=compress, **KW))
    assert (s.done, s.skipped) == (len(lost), 6 - len(lost))  # the frames after it are kept
    assert f"1 damaged compressed frame(s) skipped (bytes {ends[0]}-{ends[1]})" in caplog.text
    assert sorted(r["id"] for r in read_records(out)) == [f"p{i}" for i in range(6)]
    kept = path.with_name(path.name + ".damaged")
    if damage == "head+torn":
        assert kept.read_bytes() == bytes(data)  # the damaged original, as it was
        reader = LineReader(path)
        lines = [x for x in reader if x.strip()]  # (and the blank line ending the damage)
        assert len(lines) == 6 and reader.clean and not reader.damaged
    else:
        assert not kept.exists() and path.read_bytes().startswith(bytes(data))  # appended
