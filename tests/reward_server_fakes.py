"""Fake rewards for the reward-server tests (imported by the server process by path) and
a helper that starts ``toa-graph serve-reward`` on a free 127.0.0.1 port."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from toa_graph.process import free_port
from toa_graph.rewards.base import RewardError

REPO = Path(__file__).resolve().parent.parent


def _text(prompt: Any) -> str:
    return prompt if isinstance(prompt, str) else "|".join(m["content"] for m in prompt)


def fake_scores(
    prompt: Any, responses: Sequence[str], references: Sequence[str] | None = None
) -> list[float]:
    """Instant and deterministic: the response length, +100 when the reference is in it,
    + a thousandth of the prompt length; a response containing FAIL fails its call."""
    if any("FAIL" in r for r in responses):
        raise RewardError("fake reward: FAIL in a response")
    ref = references[0] if references else None
    return [
        float(len(r)) + (100.0 if ref and ref in r else 0.0) + len(_text(prompt)) / 1000
        for r in responses
    ]


async def instant_scores(
    prompt: Any, responses: Sequence[str], references: Sequence[str] | None = None
) -> list[float]:
    """An instant async reward (no worker thread): for the latency benchmark."""
    return [float(len(r)) for r in responses]


def write_config(tmp: Path, target: str = "tests.reward_server_fakes:fake_scores") -> Path:
    path = tmp / "reward.yaml"
    path.write_text(f"reward:\n  kind: python\n  target: {target}\n", encoding="utf-8")
    return path


@contextmanager
def reward_server(config: Path, *args: str, timeout: float = 60.0) -> Iterator[str]:
    """Run ``toa-graph serve-reward`` until the block ends (stopped by its PID); yields
    its base URL once ``/health`` answers 200."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "toa_graph.cli", "serve-reward", "--config", str(config),
         "--port", str(port), *args],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"serve-reward exited with {proc.returncode}")
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("serve-reward did not become healthy")
            time.sleep(0.1)
        yield url
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
