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
        cmd = [
            sys.executable, "-m", "tests.fake_openai_server",
            "--delay", str(self.delay), "--capacity", str(self.capacity),
            "--port", str(self.port),
        ]  # fmt: skip
        if self.deterministic:
            cmd.append("--deterministic")
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        for _ in range(50):  # the old socket may linger for a moment after a kill
            self.proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, text=True, env=env)
            assert self.proc.stdout is not None
            line = self.proc.stdout.readline()
            if line:
                self.port = int(json.loads(line)["port"])
                return self
            self.proc.wait()
            time.sleep(0.1)
        raise RuntimeError(f"fake OpenAI server did not start on port {self.port}")

    def kill(self) -> None:
        """SIGKILL: in-flight requests see their connections reset, new ones are refused."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/stats", timeout=5) as r:
            return dict(json.loads(r.read()))

    def reset_stats(self) -> None:
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}/stats/reset", method="POST")
        urllib.request.urlopen(req, timeout=5).close()

    def __enter__(self) -> FakeServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
