"""The agent pool over real HTTP (ChatOpenAI against a local OpenAI-compatible fake)."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fake_servers import spawn, stop_process
from toa_graph import create_toa_graph
from toa_graph.agents import AgentPool
from toa_graph.config import AgentConfig

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def fake_server() -> Iterator[str]:
    proc, port = spawn("tests.fake_openai_server", "--delay", "0", "--capacity", "16")
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        stop_process(proc)


def agent(url: str, **kw: object) -> AgentConfig:
    return AgentConfig(name="m", model="m", base_url=url, max_retries=0, timeout_s=5, **kw)  # type: ignore[arg-type]


async def test_one_generation_records_text_usage_latency(fake_server: str) -> None:
    pool = AgentPool([agent(fake_server)])
    (g,) = await pool.generate("m", [{"role": "user", "content": "hello there"}])
    assert g.error is None and g.text.startswith("m answer")
    assert g.usage["input_tokens"] == 2 and g.usage["output_tokens"] == len(g.text.split())
    assert g.latency_s > 0


async def test_n_choices_in_one_request_split_the_request_usage(fake_server: str) -> None:
    pool = AgentPool([agent(fake_server)])
    gens = await pool.generate("m", [{"role": "user", "content": "one two three"}], n=3)
    assert len(gens) == 3 and all(g.error is None for g in gens)
    # the server counts the prompt once and sums completions; the samples must add up to it
    assert sum(g.usage["input_tokens"] for g in gens) == 3
    assert sum(g.usage["output_tokens"] for g in gens) == sum(len(g.text.split()) for g in gens)


async def test_n_without_server_support_makes_n_requests(fake_server: str) -> None:
    pool = AgentPool([agent(fake_server, supports_n=False)])
    gens = await pool.generate("m", [{"role": "user", "content": "x"}], n=3)
    assert len({g.text for g in gens}) == 3  # three separate requests, three answers
    assert all(g.usage["input_tokens"] == 1 for g in gens)


async def test_unreachable_endpoint_becomes_an_error_not_an_exception() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    pool = AgentPool([agent(f"http://127.0.0.1:{port}/v1")])
    (g,) = await pool.generate("m", [{"role": "user", "content": "x"}])
    assert g.text == "" and g.error and "Connection" in g.error


async def test_toa_over_http_with_an_api_key_from_env(fake_server: str, monkeypatch) -> None:
    monkeypatch.setenv("TOA_TEST_KEY", "sk-test-not-logged")
    agents = [
        AgentConfig(name=n, model=n, base_url=fake_server, api_key_env="TOA_TEST_KEY")
        for n in ("a", "b")
    ]
    graph = create_toa_graph(agents, lambda p, rs: [len(r) / 100 for r in rs]).compile()
    out = await graph.ainvoke({"prompt": "Say hi"}, context={"budget": 6})
    assert len(out["samples"]) == 6 and all(not s["error"] for s in out["samples"])
    assert "sk-test-not-logged" not in json.dumps(out)


def test_unknown_agent_and_bad_agent_types() -> None:
    pool = AgentPool([AgentConfig(name="m", model="m", base_url="http://127.0.0.1:1/v1")])
    with pytest.raises(KeyError, match="unknown agent"):
        pool.config("nope")
    with pytest.raises(TypeError, match="chat model or an AgentConfig"):
        AgentPool({"x": object()})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="does not match"):
        AgentPool({"x": AgentConfig(name="y", model="m", base_url="http://h/v1")})


def test_a_pool_and_a_graph_work_across_event_loops(fake_server: str) -> None:
    """Notebooks and repeated synthesize() calls run several asyncio loops in one process."""
    import asyncio

    pool = AgentPool([agent(fake_server)])
    graph = create_toa_graph(pool, lambda p, rs: [1.0] * len(rs)).compile()
    for _ in range(2):
        (g,) = asyncio.run(pool.generate("m", [{"role": "user", "content": "hi"}]))
        assert g.error is None, g.error
        out = asyncio.run(graph.ainvoke({"prompt": "hi"}, context={"budget": 2}))
        assert all(s["error"] is None for s in out["samples"]), out["samples"]
    # a fresh pool in yet another loop (langchain-openai's shared client cache)
    (g,) = asyncio.run(
        AgentPool([agent(fake_server)]).generate("m", [{"role": "user", "content": "x"}])
    )
    assert g.error is None, g.error
