"""toa_graph.process: spawn in its own group, wait until ready, stop by PID, log tail."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from toa_graph import process


def _sleeper(tmp_path: Path, code: str) -> tuple[list[str], Path]:
    return [sys.executable, "-c", code], tmp_path / "logs" / "child.log"


def test_spawn_wait_ready_and_stop_by_pid(tmp_path: Path) -> None:
    marker = tmp_path / "ready"
    cmd, log = _sleeper(
        tmp_path,
        f"import pathlib, time; print('hello', flush=True); "
        f"pathlib.Path({str(marker)!r}).touch(); time.sleep(60)",
    )
    proc = process.spawn(cmd, log_path=log)
    start = process.proc_start_time(proc.pid)
    try:
        process.wait_ready(proc, marker.exists, what="sleeper", log_path=log, timeout_s=30)
        assert process.is_process(proc.pid, start, ["-c"])
        assert not process.is_process(proc.pid, start, ["not-in-the-command-line"])
        assert not process.is_process(proc.pid, "0")  # another start time: a recycled PID
        assert "hello" in process.tail(log)
    finally:
        stopped = process.stop_group(proc.pid, lambda: process.is_process(proc.pid, start))
    assert stopped and proc.poll() is not None
    assert not process.is_process(proc.pid, start)
    # a second stop finds nothing of ours and signals nothing
    assert not process.stop_group(proc.pid, lambda: process.is_process(proc.pid, start))


def test_a_child_that_dies_during_start_up_raises_with_its_log_tail(tmp_path: Path) -> None:
    cmd, log = _sleeper(tmp_path, "import sys; print('boom: no model', flush=True); sys.exit(3)")
    proc = process.spawn(cmd, log_path=log)
    with pytest.raises(process.ProcessError, match=r"(?s)exited with code 3.*boom: no model"):
        process.wait_ready(proc, lambda: False, what="server", log_path=log, timeout_s=30)


def test_a_child_never_ready_times_out_and_is_stoppable(tmp_path: Path) -> None:
    cmd, log = _sleeper(tmp_path, "import time; time.sleep(60)")
    proc = process.spawn(cmd, log_path=log)
    start = process.proc_start_time(proc.pid)
    t0 = time.monotonic()
    try:
        with pytest.raises(process.ProcessError, match="not healthy after"):
            process.wait_ready(
                proc, lambda: False, what="server", log_path=log, timeout_s=0.3, poll_s=0.05
            )
        assert time.monotonic() - t0 < 10
    finally:
        assert process.stop_group(proc.pid, lambda: process.is_process(proc.pid, start))


def test_free_port_and_http_ok_and_tail(tmp_path: Path) -> None:
    port = process.free_port()
    assert 0 < port < 65536
    assert not process.http_ok(f"http://127.0.0.1:{port}/health", timeout=0.5)
    log = tmp_path / "x.log"
    log.write_text("\n".join(f"line {i}" for i in range(100)))
    assert process.tail(log, 2) == "line 98\nline 99"
    assert process.tail(tmp_path / "missing.log") == "(no log)"
