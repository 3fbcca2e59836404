"""Start, kill and restart :mod:`tests.fake_openai_server` processes (127.0.0.1 only).

Each server is a child process of the caller, stopped by its own handle, never by name.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


def spawn(
    module: str, *args: str, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[str], int]:
    """Start ``python -m module *args``, a server that prints one JSON line with its
    ``port`` once it listens; return the process (stop it by this handle) and the port."""
    proc = subprocess.Popen(
        [sys.executable, "-m", module, *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
        env=env if env is not None else {**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        proc.kill()
        proc.wait()
        raise RuntimeError(f"{module} did not start (exit code {proc.returncode})")
    return proc, int(json.loads(line)["port"])


def stop_process(proc: subprocess.Popen[str], timeout: float = 10) -> None:
    """SIGTERM our own child, then SIGKILL if it does not exit in ``timeout``."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class FakeServer:
    """One fake OpenAI-compatible server process; ``kill()`` then ``start()`` brings it back
    on the same port (a replica going down and returning)."""

    def __init__(
        self, *, delay: float = 0.02, capacity: int = 64, deterministic: bool = True
    ) -> None:
        self.delay = delay
        self.capacity = capacity
        self.deterministic = deterministic
        self.port = 0
        self.proc: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> FakeServer:
        if self.proc is not None and self.proc.poll() is None:
            return self
        args = [
            "--delay", str(self.delay), "--capacity", str(self.capacity), "--port", str(self.port),
        ]  # fmt: skip
        if self.deterministic:
            args.append("--deterministic")
        for _ in range(50):  # the old socket may linger for a moment after a kill
            try:
                self.proc, self.port = spawn("tests.fake_openai_server", *args)
                return self
            except RuntimeError:
                time.sleep(0.1)
        raise RuntimeError(f"fake OpenAI server did not start on port {self.port}")

    def kill(self) -> None:
        """SIGKILL: in-flight requests see their connections reset, new ones are refused."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/stats", timeout=5) as r:
            return dict(json.loads(r.read()))

    def reset_stats(self) -> None:
        self._post("/stats/reset")

    def gauges(self) -> dict[str, Any]:
        """``arrived`` (requests received) and ``released`` (replies let go), never reset:
        ``arrived - released`` requests are unanswered."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/stats/gauges", timeout=5) as r:
            return dict(json.loads(r.read()))

    def hold(self) -> None:
        """Hold every reply back (requests still arrive) until :meth:`release`."""
        self._post("/stats/hold")

    def release(self) -> None:
        self._post("/stats/release")

    def _post(self, path: str) -> None:
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", method="POST")
        urllib.request.urlopen(req, timeout=5).close()

    def __enter__(self) -> FakeServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
