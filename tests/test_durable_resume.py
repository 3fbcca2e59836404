"""Durable resume (issue 27): one data config per output, a bad generation store rebuilt,
a full disk stopping the run cleanly."""

from __future__ import annotations

import errno
import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.fake_servers import FakeServer
from tests.fakes import fake_agents, hash_reward
from toa_graph import cli
from toa_graph.config import AgentConfig
from toa_graph.export_io import read_record_files
from toa_graph.synthesis import read_records, run_synthesis
from toa_graph.synthesis.digest import MixedDigestError
from toa_graph.synthesis.recordio import (
    LineReader,
    RecordFile,
    _compressor,
    compression_of,
    records_file,
)
from toa_graph.synthesis.records import RecordWriter
from toa_graph.synthesis.rundir import DiskFullError


def write_prompts(path: Path, n: int) -> Path:
    path.write_text(
        "".join(json.dumps({"id": f"p{i}", "prompt": f"Q{i}?"}) + "\n" for i in range(n))
    )
    return path


def agents(port: int, **over: Any) -> list[AgentConfig]:
    return [
        AgentConfig(name=n, model=f"{n}-model", base_url=f"http://127.0.0.1:{port}/v1", **over)
        for n in ("a", "b")
    ]


RUN: dict[str, Any] = {"method": "toa", "reward": hash_reward, "context": {"budget": 3},
                       "concurrency": 2, "progress": False}  # fmt: skip


@pytest.mark.timeout(120)
async def test_a_moved_endpoint_resumes_another_model_setting_is_refused(tmp_path: Path) -> None:
    inp = write_prompts(tmp_path / "in.jsonl", 4)
    out = tmp_path / "out"
    with FakeServer(deterministic=True) as one, FakeServer(deterministic=True) as two:
        s = await run_synthesis(inp, out, agents=agents(one.port), limit=2, **RUN)
        assert s.done == 2
        # another port, timeout and retries: the same data config, so the run resumes
        s = await run_synthesis(
            inp, out, agents=agents(two.port, timeout_s=7, max_retries=1), **RUN
        )
        assert (s.done, s.skipped) == (2, 2)
        with pytest.raises(MixedDigestError, match=r"agents\.a\.temperature: \(absent\) -> 0\.9"):
            await run_synthesis(inp, out, agents=agents(two.port, temperature=0.9), **RUN)
    assert len(list(read_records(out))) == 4  # the refused run wrote nothing


async def test_export_refuses_a_mixed_directory_unless_allowed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inp = write_prompts(tmp_path / "in.jsonl", 4)
    out, other = tmp_path / "out", tmp_path / "other"
    await run_synthesis(inp, out, agents=fake_agents(), limit=2, **RUN)
    await run_synthesis(inp, other, agents=fake_agents(("x", "y")), **RUN)
    assert len(list(read_record_files([out, other]))) == 4  # two directories, one digest each
    await run_synthesis(inp, out, agents=fake_agents(("x", "y")), force_mixed=True, **RUN)
    with pytest.raises(MixedDigestError, match="--allow-mixed"):
        list(read_record_files([out]))
    assert len(list(read_record_files([out], allow_mixed=True))) == 4
    sft = tmp_path / "sft.jsonl"
    argv = ["export", "sft", "--input", str(out), "--output", str(sft)]
    assert cli.main(argv) == 2 and "--allow-mixed" in capsys.readouterr().err
    assert cli.main([*argv, "--allow-mixed"]) == 0
    assert len(sft.read_text().splitlines()) == 4


async def test_a_corrupt_generation_store_is_rebuilt_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    inp = write_prompts(tmp_path / "in.jsonl", 3)
    out = tmp_path / "out"
    out.mkdir()
    (out / "generations.sqlite").write_bytes(b"not a database at all" * 100)
    with caplog.at_level(logging.WARNING):
        s = await run_synthesis(inp, out, agents=fake_agents(), **RUN)
    assert s.done == 3
    assert "cannot be trusted" in caplog.text and "rebuilt" in caplog.text
    assert (out / "generations.sqlite.bad").exists()
    assert s.generations_reused == 0  # nothing was taken from the bad store


async def test_a_full_disk_stops_with_a_clear_message_and_keeps_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    inp = write_prompts(tmp_path / "in.jsonl", 6)
    out = tmp_path / "out"
    real = RecordWriter.append
    written = {"n": 0}

    def append(self: RecordWriter, record: dict[str, Any]) -> Any:
        if written["n"] >= 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        written["n"] += 1
        return real(self, record)

    monkeypatch.setattr(RecordWriter, "append", append)
    with pytest.raises(DiskFullError, match=r"is full .*2 records written are intact"):
        await run_synthesis(inp, out, agents=fake_agents(), **{**RUN, "concurrency": 1})
    assert len(list(read_records(out))) == 2
    monkeypatch.setattr(RecordWriter, "append", real)
    s = await run_synthesis(inp, out, agents=fake_agents(), **RUN)  # space freed: resumes
    assert (s.done, s.skipped) == (4, 2)


CHILD = r"""
import asyncio, json, resource, sys
from pathlib import Path
from benchmarks.resume_scale import make_records
from tests.fakes import fake_agents, hash_reward
from toa_graph.synthesis import run_synthesis

tmp = Path(sys.argv[1])
run = dict(method="toa", reward=hash_reward, context={"budget": 2}, concurrency=2, progress=False)
inp = tmp / "in.jsonl"
inp.write_text("".join(json.dumps({"id": i, "prompt": i}) + "\n" for i in ("r0", "r1", "n0", "n1")))
asyncio.run(run_synthesis(inp, tmp / "warm", agents=fake_agents(), **run))  # warm every pool

def vm_data() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmData:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmData")

limit = vm_data() + 64 * 2**20
resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
out = tmp / "out"
out.mkdir()
digest = json.loads((tmp / "warm" / "records.jsonl").read_text().splitlines()[0])["data_digest"]
make_records(out / "records.jsonl", (limit + 32 * 2**20) / 2**20, data_digest=digest)
size = (out / "records.jsonl").stat().st_size
s = asyncio.run(run_synthesis(inp, out, agents=fake_agents(), **run))
try:  # the limit bites: the file cannot be read whole
    (out / "records.jsonl").read_bytes()
    whole = True
except MemoryError:
    whole = False
print(json.dumps({"limit": limit, "size": size, "done": s.done, "skipped": s.skipped,
                  "read_whole": whole}))
"""


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_resume_over_a_records_file_larger_than_the_memory_limit(tmp_path: Path) -> None:
    repo = Path(__file__).resolve().parent.parent
    res = subprocess.run(
        [sys.executable, "-c", CHILD, str(tmp_path)], cwd=repo, capture_output=True, text=True,
        env={**os.environ, "PYTHONPATH": str(repo), "MALLOC_ARENA_MAX": "1"}, timeout=280,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    got = json.loads(res.stdout.strip().splitlines()[-1])
    assert got["size"] > got["limit"]  # the whole file could not have been held in memory
    assert (got["done"], got["skipped"]) == (2, 2)
    assert got["read_whole"] is False  # reading it whole, as resume once did, fails


def _damaged(lines: list[bytes]) -> tuple[bytes, bytes]:
    """Six record lines damaged: p2's record cut in half (then a newline), a line that is
    not JSON after p3's, p5's record torn. Returns (the intact part, p5's line, to tear);
    the unreadable lines are lines 3 and 5."""
    r = lines
    intact = r[0] + r[1] + r[2][: len(r[2]) // 2] + b"\n" + r[3] + b"not json at all\n" + r[4]
    return intact, r[5]


def _write_damaged(path: Path, intact: bytes, last: bytes) -> None:
    """Write the damaged records as a killed run would leave them: a plain file ends in
    the last line cut in half; a compressed one holds the intact lines in a finished frame,
    then the last line's frame (another run's) unfinished, cut in the middle of its block."""
    if compression_of(path) is None:
        path.write_bytes(intact + last[: len(last) // 2])
        return
    path.unlink()
    f = RecordFile(path)
    for line in intact.splitlines(keepends=True):
        f.write(line)
    f.close()
    block = _compressor("zst")[0](last)
    with path.open("ab") as fh:
        fh.write(block[: len(block) // 2])


@pytest.mark.parametrize("compress", [None, "zst"])
async def test_unreadable_lines_in_the_middle_and_a_torn_tail_resume_end_to_end(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, compress: Any
) -> None:
    if compress:
        pytest.importorskip("zstandard")
    inp = write_prompts(tmp_path / "in.jsonl", 6)
    out = tmp_path / "out"
    run = {**RUN, "concurrency": 1, "compress": compress}  # records in input order
    await run_synthesis(inp, out, agents=fake_agents(), **run)
    path = records_file(out)
    assert path.name == "records.jsonl" + (f".{compress}" if compress else "")
    lines = list(LineReader(path))
    assert [json.loads(x)["id"] for x in lines] == [f"p{i}" for i in range(6)]
    intact, last = _damaged(lines)
    _write_damaged(path, intact, last)

    with caplog.at_level(logging.WARNING):
        s = await run_synthesis(inp, out, agents=fake_agents(), **run)
    assert (s.done, s.skipped, s.failed) == (2, 4, 0)  # only p2 and p5 run again
    assert "2 unreadable record line(s) kept in place" in caplog.text
    assert "(line 3, 5)" in caplog.text
    assert ("torn tail" if compress is None else "unfinished frame") in caplog.text
    reader = LineReader(path)
    after = b"".join(reader)
    assert reader.clean  # a compressed file's frames are whole again
    assert after.startswith(intact)  # every intact record byte-identical, in place
    assert [json.loads(x)["id"] for x in after[len(intact) :].splitlines()] == ["p2", "p5"]
    ids = [r["id"] for r in read_records(out)]
    assert sorted(ids) == [f"p{i}" for i in range(6)]  # every prompt readable, once

    sft = tmp_path / "sft.jsonl"
    assert cli.main(["export", "sft", "--input", str(out), "--output", str(sft)]) == 0
    rows = [json.loads(x) for x in sft.read_text().splitlines()]
    assert len(rows) == 6

    s = await run_synthesis(inp, out, agents=fake_agents(), **run)  # nothing left to do
    assert (s.done, s.skipped) == (0, 6) and b"".join(LineReader(path)) == after
