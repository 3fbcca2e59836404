"""``toa-graph chat`` driven through a pseudo-terminal (pexpect) for two turns, against the
fake OpenAI-compatible server (tests/fake_openai_server.py) with a python reward."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pexpect
import pytest

from tests.fake_servers import spawn, stop_process

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def fake_endpoint() -> Iterator[str]:
    proc, port = spawn("tests.fake_openai_server", "--delay", "0.01", "--capacity", "8")
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        stop_process(proc)


@pytest.fixture
def config_path(tmp_path: Path, fake_endpoint: str) -> Path:
    path = tmp_path / "fake.yaml"
    path.write_text(
        f"""
agents:
  - name: alpha
    model: fake-alpha
    base_url: {fake_endpoint}
    max_retries: 0
  - name: beta
    model: fake-beta
    base_url: {fake_endpoint}
    max_retries: 0
reward:
  kind: python
  target: tests.fakes:length_reward
method:
  name: toa
  context:
    budget: 4
"""
    )
    return path


def _spawn(config: Path, *extra: str, history: Path | None = None) -> pexpect.spawn:
    history = history or config.parent / "history"
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "COLUMNS": "200",
        "TOA_GRAPH_HISTORY": str(history),
    }
    child = pexpect.spawn(
        sys.executable,
        ["-m", "toa_graph.cli", "chat", "--config", str(config), *extra],
        cwd=str(ROOT),
        env=env,
        encoding="utf-8",
        timeout=60,
        dimensions=(40, 200),
    )
    child.expect("/help for commands")
    return child


def test_two_turns_with_progress_and_history(config_path: Path) -> None:
    child = _spawn(config_path)
    try:
        child.expect("you> ")
        child.sendline("What is the capital of France?")
        child.expect(r"searching: 4/4 generations, best [\d.]+ \((alpha|beta)\)")
        child.expect(r"\[(alpha|beta) \| reward ([\d.]+) \| 4 samples, toa, [\d.]+ s\]")
        agent = child.match.group(1)
        child.expect(r"\r\n(.+?)\r\n")
        first = child.match.group(1)
        assert first.startswith(f"fake-{agent} answer")
        child.expect("you> ")

        child.sendline("/budget 3")
        child.expect("budget: 3")
        child.sendline("/method ensemble")
        child.expect("method: ensemble")
        child.sendline("/agents beta")
        child.expect(r"\* beta")
        child.expect("you> ")
        child.sendline("And of Spain?")
        child.expect(r"\[beta \| reward [\d.]+ \| 3 samples, ensemble, [\d.]+ s\]")
        child.expect(r"\r\n(.+?)\r\n")
        assert child.match.group(1).startswith("fake-beta answer")
        child.expect("you> ")
        child.sendline("/quit")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0


def test_lines_are_kept_in_the_readline_history(config_path: Path) -> None:
    history = config_path.parent / "chat-history"
    child = _spawn(config_path, "--method", "random", "--budget", "1", history=history)
    try:
        child.expect("you> ")
        child.sendline("first question")
        child.expect(r"\| 1 samples, random")
        child.expect("you> ")
        child.sendline("/budget 1")
        child.expect("you> ")
        child.sendline("/quit")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0
    assert history.read_text().splitlines()[-3:] == ["first question", "/budget 1", "/quit"]

    child = _spawn(config_path, "--method", "random", "--budget", "1", history=history)
    try:
        child.expect("you> ")
        child.send("\x1b[A\x1b[A")  # up twice: the previous session's "/budget 1"
        child.send("\r")
        child.expect("budget: 1")
        child.sendeof()
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)


def test_reset_unknown_command_and_eof(config_path: Path, fake_endpoint: str) -> None:
    import httpx

    stats = fake_endpoint.removesuffix("/v1") + "/stats"
    child = _spawn(config_path, "--method", "random", "--budget", "1")
    try:
        child.expect("you> ")
        child.sendline("one two three")
        child.expect(r"\| 1 samples, random")
        child.expect("you> ")
        httpx.post(stats + "/reset")
        child.sendline("/reset")
        child.expect("conversation cleared")
        child.sendline("four")
        child.expect(r"\| 1 samples, random")
        child.expect("you> ")
        child.sendline("five")
        child.expect(r"\| 1 samples, random")
        child.expect("you> ")
        assert httpx.get(stats).json()["requests"] >= 2
        child.sendline("/unknown")
        child.expect("unknown command")
        child.sendeof()
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0


def test_session_sends_history_as_the_prompt() -> None:
    import asyncio

    from tests.fakes import fake_agents, length_reward
    from toa_graph.commands.chat import ChatSession
    from toa_graph.rewards.base import as_reward_model

    agents = fake_agents(("a", "b"))
    session = ChatSession(
        all_agents=dict(agents),
        reward=as_reward_model(length_reward),
        method="random",
        knobs={"budget": 2},
        agents=["a", "b"],
    )
    reports: list[object] = []

    async def turn(text: str) -> dict[str, object]:
        out = await session.answer(text, reports.append)
        best = out["best"]
        assert isinstance(best, dict)
        session.history += [
            {"role": "user", "content": text},
            {"role": "assistant", "content": best["text"]},
        ]
        return out

    async def main() -> None:
        await turn("first question")
        await turn("second question")

    asyncio.run(main())
    last_call = agents["a"].calls[-1]
    contents = [str(m.content) for m in last_call]
    assert contents[0] == "first question" and contents[-1] == "second question"
    assert len(contents) == 3  # user, assistant, user
    assert reports  # progress was reported for the non-TOA method through "updates"
    assert session.command("/agents b") and session.agents == ["b"]
    assert session.command("/method toa") and session.method == "toa"
    assert not session.command("/quit")


def test_serve_command_end_to_end(config_path: Path) -> None:
    """``toa-graph serve --config ... --api-key-env`` as a process: token from the env var,
    127.0.0.1 by default, the config's method as "default"; stopped by PID."""
    import time

    import httpx
    import openai

    from tests.test_server import _free_port

    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TOA_TEST_SERVE_KEY": "s3cret"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "toa_graph.cli", "serve", "--config", str(config_path),
         "--port", str(port), "--api-key-env", "TOA_TEST_SERVE_KEY"],
        cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline
            time.sleep(0.1)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="s3cret")
        resp = client.chat.completions.create(
            model="default", messages=[{"role": "user", "content": "hello there"}]
        )
        info = resp.model_extra["x_toa"]
        assert info["method"] == "toa" and info["samples"] == 4
        assert resp.choices[0].message.content.startswith(f"fake-{info['best_agent']} answer")
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(
                base_url=f"http://127.0.0.1:{port}/v1", api_key="wrong", max_retries=0
            ).models.list()
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(20)
    assert proc.stderr is not None
    assert "s3cret" not in proc.stderr.read()  # the token is never logged
