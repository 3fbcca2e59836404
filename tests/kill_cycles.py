"""SIGKILL cycles of ``toa-graph synthesize`` run as a real process against a
:class:`~tests.fake_servers.FakeServer` (127.0.0.1), for the fault suite and
``benchmarks/kill_trials.py``.

:func:`kill_when_quiet` measures what a kill may cost: it holds the server's replies back,
lets the client settle (every reply it already got is stored), SIGKILLs it and reads the
server's gauges. The requests received and never answered are exactly those in flight at
the kill, the most a resume may pay for again.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.fake_servers import FakeServer

REPO = Path(__file__).resolve().parent.parent

SETTLE_S = 0.3
"""How long a held client gets to store the replies it already has before the kill."""


def write_config(path: Path, port: int, *, supports_n: bool | None = None) -> Path:
    """Two agents (alpha, beta) on the fake server and a deterministic local reward.
    ``supports_n=False``: an answer of ``n`` is ``n`` identical requests (random and
    ensemble then send one request many times)."""
    n = "" if supports_n is None else f", supports_n: {str(supports_n).lower()}"
    path.write_text(
        "agents:\n"
        + "".join(
            f"  - {{name: {a}, model: {a}-model, base_url: 'http://127.0.0.1:{port}/v1', "
            f"max_retries: 1, timeout_s: 20{n}}}\n"
            for a in ("alpha", "beta")
        )
        + "reward: {kind: python, target: 'tests.fakes:hash_reward'}\n"
    )
    return path


def write_prompts(path: Path, n: int) -> Path:
    path.write_text(
        "".join(
            json.dumps({"id": f"q{i}", "question": f"What is {i} + 1?"}) + "\n" for i in range(n)
        )
    )
    return path


def cli(*args: str) -> list[str]:
    """``toa-graph synthesize ARGS`` as a command line."""
    return [sys.executable, "-m", "toa_graph.cli", "synthesize", *args]


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO)}


def spawn(args: list[str], cwd: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        args, cwd=cwd, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def comparable(path: Path) -> dict[str, Any]:
    """What a resumed record must share with an uninterrupted run's (not latencies):
    per id, each sample's id, agent, kind, parent, text and reward."""
    out = {}
    for line in path.read_bytes().splitlines():
        r = json.loads(line)
        out[r["id"]] = [
            (s["id"], s["agent"], s["kind"], s.get("parent"), s["text"], s["reward"])
            for s in r["samples"]
        ]
    return out


def record_ids(path: Path) -> list[str]:
    return [json.loads(line)["id"] for line in path.read_bytes().splitlines()]


def wait_for_arrivals(
    proc: subprocess.Popen[bytes], server: FakeServer, target: int, rng: random.Random
) -> bool:
    """Poll (at random short intervals) until the server has received ``target`` requests
    in all; False when ``proc`` ended first."""
    while server.gauges()["arrived"] < target:
        if proc.poll() is not None:
            return False
        time.sleep(rng.uniform(0, 0.01))
    return proc.poll() is None


def kill_when_quiet(
    proc: subprocess.Popen[bytes],
    server: FakeServer,
    *,
    settle_s: float = SETTLE_S,
    want: Callable[[], bool] | None = None,
    tries: int = 20,
    rng: random.Random | None = None,
) -> int | None:
    """Hold the server's replies, give ``proc`` ``settle_s`` to store what it got,
    SIGKILL it (our own child) and return how many requests were in flight at the kill
    (received, never answered); ``None`` when it ended before the kill.

    With ``want``, a held state where ``want()`` is false is let go until 1-6 replies
    more than those held have gone out, then held again, up to ``tries`` times. The
    server is released and settled (every request answered) on return, as it must be on
    the call: the count is the server's received-minus-answered total."""
    rng = rng or random.Random()
    try:
        for attempt in range(tries):
            if attempt:
                let_go(proc, server, rng.randint(1, 6))
            server.hold()
            time.sleep(settle_s)
            if proc.poll() is not None:
                return None
            if want is None or attempt == tries - 1 or want():
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
                time.sleep(0.1)  # a request sent just before the kill reaches the server
                g = server.gauges()
                return int(g["arrived"] - g["released"])
        return None  # pragma: no cover - the last try always kills
    finally:
        server.release()
        if proc.poll() is not None:
            settle(server)


def let_go(
    proc: subprocess.Popen[bytes], server: FakeServer, more: int, timeout_s: float = 10.0
) -> None:
    """Release held replies and wait until ``more`` replies beyond them have gone out."""
    target = server.gauges()["arrived"] + more
    server.release()
    deadline = time.monotonic() + timeout_s
    while server.gauges()["released"] < target and proc.poll() is None:
        if time.monotonic() > deadline:
            break
        time.sleep(0.005)


def settle(server: FakeServer, timeout_s: float = 10.0) -> None:
    """Wait until every request the server received is answered."""
    deadline = time.monotonic() + timeout_s
    while (g := server.gauges())["arrived"] != g["released"]:
        if time.monotonic() > deadline:
            raise RuntimeError(f"fake server did not settle: {g}")
        time.sleep(0.02)


def kill_instantly(proc: subprocess.Popen[bytes]) -> bool:
    """SIGKILL ``proc`` (our own child) now, whatever it is doing; whether it was running."""
    if proc.poll() is not None:
        return False
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return True


def stored_generations(out_dir: Path) -> int:
    """Answers the output's generation store holds (those of prompts not yet recorded)."""
    path = out_dir / "generations.sqlite"
    if not path.exists():
        return 0
    db = sqlite3.connect(path)
    try:
        return int(db.execute("SELECT COUNT(*) FROM gens").fetchone()[0])
    finally:
        db.close()
