"""Durable resume (issue 27): one data config per output, a bad generation store rebuilt,
a full disk stopping the run cleanly."""

from __future__ import annotations

import errno
import json
import logging
from pathlib import Path
from typing import Any

import pytest

from tests.fake_servers import FakeServer
from tests.fakes import fake_agents, hash_reward
from toa_graph.config import AgentConfig
from toa_graph.export_io import read_record_files
from toa_graph.synthesis import read_records, run_synthesis
from toa_graph.synthesis.digest import MixedDigestError
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


async def test_export_refuses_a_mixed_directory_unless_allowed(tmp_path: Path) -> None:
    inp = write_prompts(tmp_path / "in.jsonl", 4)
    out, other = tmp_path / "out", tmp_path / "other"
    await run_synthesis(inp, out, agents=fake_agents(), limit=2, **RUN)
    await run_synthesis(inp, other, agents=fake_agents(("x", "y")), **RUN)
    assert len(list(read_record_files([out, other]))) == 4  # two directories, one digest each
    await run_synthesis(inp, out, agents=fake_agents(("x", "y")), force_mixed=True, **RUN)
    with pytest.raises(MixedDigestError, match="--allow-mixed"):
        list(read_record_files([out]))
    assert len(list(read_record_files([out], allow_mixed=True))) == 4


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
