"""Replica failover: two fake OpenAI-compatible replicas of one agent on 127.0.0.1, one is
killed mid-run and restarted; the run completes on the other with every record present,
and the failed replica is probed back in once it returns."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fake_servers import FakeServer
from tests.fakes import hash_reward
from toa_graph.agents import AgentPool, is_replica_error, is_retryable
from toa_graph.config import AgentConfig
from toa_graph.synthesis import read_records, run_synthesis


@pytest.fixture
def replicas() -> Iterator[tuple[FakeServer, FakeServer]]:
    a = FakeServer(delay=0.02, capacity=64).start()
    b = FakeServer(delay=0.02, capacity=64).start()
    try:
        yield a, b
    finally:
        a.stop()
        b.stop()


def agent(urls: list[str], name: str = "m") -> AgentConfig:
    return AgentConfig(
        name=name, model=f"{name}-model", base_urls=urls, max_retries=2, timeout_s=10,
        supports_n=False,
    )  # fmt: skip


def test_error_classes() -> None:
    import httpx
    import openai

    req = httpx.Request("POST", "http://127.0.0.1:1/v1/chat/completions")
    assert is_replica_error(openai.APIConnectionError(request=req))
    assert is_replica_error(openai.APITimeoutError(request=req))
    assert is_replica_error(httpx.ConnectError("refused"))
    assert is_replica_error(ConnectionRefusedError())

    def status(code: int) -> openai.APIStatusError:
        return openai.APIStatusError("x", response=httpx.Response(code, request=req), body=None)

    assert is_replica_error(status(503)) and is_replica_error(status(500))
    assert not is_replica_error(status(400)) and not is_retryable(status(400))
    assert not is_replica_error(status(429)) and is_retryable(status(429))
    assert not is_retryable(ValueError("bad"))


async def test_least_outstanding_spreads_over_healthy_replicas(replicas) -> None:
    a, b = replicas
    pool = AgentPool([agent([a.url, b.url])])
    outs = await asyncio.gather(*(pool.generate("m", [("user", f"q{i}")]) for i in range(40)))
    assert all(g[0].error is None for g in outs)
    stats = pool.replica_stats("m")
    assert [s["requests"] for s in stats] == [20, 20]
    assert all(s["healthy"] and s["outstanding"] == 0 for s in stats)


async def test_dead_replica_is_skipped_and_probed_back(replicas) -> None:
    a, b = replicas
    b.kill()
    pool = AgentPool([agent([a.url, b.url])], cooldown_s=0.3, max_cooldown_s=0.3)
    outs = await asyncio.gather(*(pool.generate("m", [("user", f"q{i}")]) for i in range(10)))
    assert all(g[0].error is None for g in outs)
    sa, sb = pool.replica_stats("m")
    assert sa["requests"] == 10 and sb["requests"] == 0
    assert not sb["healthy"] and sb["outages"] == 1
    # still down after the cool-down: the probe fails and it stays out
    await asyncio.sleep(0.35)
    await pool.generate("m", [("user", "x")])
    await asyncio.sleep(0.2)
    assert not pool.replica_stats("m")[1]["healthy"]
    b.start()  # same port
    for _ in range(40):
        await asyncio.sleep(0.1)
        await pool.generate("m", [("user", "y")])
        if pool.replica_stats("m")[1]["healthy"]:
            break
    sb = pool.replica_stats("m")[1]
    assert sb["healthy"] and sb["recoveries"] == 1
    outs = await asyncio.gather(*(pool.generate("m", [("user", f"z{i}")]) for i in range(10)))
    assert all(g[0].error is None for g in outs)
    assert pool.replica_stats("m")[1]["requests"] >= 4


async def test_all_replicas_down_returns_errors_not_exceptions(replicas) -> None:
    a, b = replicas
    a.kill()
    b.kill()
    pool = AgentPool([agent([a.url, b.url])], cooldown_s=0.1, max_cooldown_s=0.2)
    out = await pool.generate("m", [("user", "q")])
    assert out[0].error and "Connection" in out[0].error


@pytest.mark.slow
async def test_replica_killed_mid_run_completes_on_the_other(replicas, tmp_path: Path) -> None:
    a, b = replicas
    n = 40
    inp = tmp_path / "in.jsonl"
    inp.write_text(
        "".join(json.dumps({"id": f"p{i}", "prompt": f"Q{i}?"}) + "\n" for i in range(n))
    )
    pool = AgentPool(
        [agent([a.url, b.url], "x"), agent([a.url, b.url], "y")], cooldown_s=0.3, max_cooldown_s=1
    )
    events: dict[str, int] = {}

    async def chaos() -> None:
        # kill replica b once it has served some requests, bring it back half a second later
        while sum(s["requests"] for s in pool.replica_stats("x")[1:]) < 15:
            await asyncio.sleep(0.01)
        b.kill()
        events["killed_at"] = sum(s["requests"] for s in pool.replica_stats("x"))
        await asyncio.sleep(0.5)
        await asyncio.to_thread(b.start)
        while not all(pool.replica_stats(x)[1]["healthy"] for x in "xy"):
            await asyncio.sleep(0.02)
        events["back_requests"] = pool.replica_stats("x")[1]["requests"]

    chaos_task = asyncio.create_task(chaos())
    summary = await run_synthesis(
        inp, tmp_path / "out", method="toa", agents=pool, reward=hash_reward,
        context={"budget": 8}, concurrency=4, progress=False,
    )  # fmt: skip
    await asyncio.wait_for(chaos_task, 5)
    recs = list(read_records(tmp_path / "out"))
    assert sorted(r["id"] for r in recs) == sorted(f"p{i}" for i in range(n))
    assert summary.failed == 0 and summary.failed_generations == 0
    assert all(not s["error"] for r in recs for s in r["samples"])
    for name in "xy":
        sb = pool.replica_stats(name)[1]
        assert sb["outages"] >= 1 and sb["recoveries"] >= 1 and sb["healthy"]
    # and it served again after coming back
    assert pool.replica_stats("x")[1]["requests"] > events["back_requests"]
