"""The OpenAI-compatible server, driven by the official ``openai`` client over real HTTP
(uvicorn on a free 127.0.0.1 port in a thread), with fake agents and a hash reward."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
import uvicorn

from tests.fakes import fake_agents, generations_ok, hash_reward
from toa_graph.methods import METHODS
from toa_graph.server import ServerSettings, build_app

TOKEN = "test-token-123"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Server:
    def __init__(self, app: Any) -> None:
        self.port = _free_port()
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> _Server:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"


def _echo(name: str, k: int, messages: list[Any]) -> str:
    """The whole last message (fresh: the question; refine: the template around it)."""
    return f"{name}#{k}: " + " ".join(str(messages[-1].content).split())


@pytest.fixture(scope="module")
def server() -> Iterator[_Server]:
    settings = ServerSettings(
        api_key=TOKEN, default_context={"budget": 6}, max_budget=64, max_body_bytes=20_000
    )
    agents = fake_agents(("a", "b", "c"), delay_s=0.05, reply=_echo)
    app = build_app(agents, hash_reward, settings=settings)
    with _Server(app) as s:
        yield s


@pytest.fixture
def client(server: _Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key=TOKEN, max_retries=0)


def test_models_lists_every_method(client: openai.OpenAI) -> None:
    ids = [m.id for m in client.models.list().data]
    assert set(ids) == set(METHODS)
    assert ids[0] == "toa"  # the default method first
    assert client.models.retrieve("toa").id == "toa"


def test_plain_completion(client: openai.OpenAI) -> None:
    resp = client.chat.completions.create(
        model="toa", messages=[{"role": "user", "content": "Why is the sky blue?"}]
    )
    assert resp.object == "chat.completion"
    assert len(resp.choices) == 1
    choice = resp.choices[0]
    assert choice.finish_reason == "stop" and choice.message.role == "assistant"
    extra = resp.model_extra["x_toa"]
    assert extra["method"] == "toa" and extra["samples"] == 6 and extra["budget"] == 6
    assert extra["best_agent"] in ("a", "b", "c")
    assert choice.message.content.startswith(f"{extra['best_agent']}#")
    # usage = sum over the 6 samples (fake agents count words)
    assert resp.usage.completion_tokens > 0
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens


def test_budget_via_extra_body_and_model_suffix(client: openai.OpenAI) -> None:
    messages = [{"role": "user", "content": "hi"}]
    r1 = client.chat.completions.create(model="toa", messages=messages, extra_body={"budget": 3})
    assert r1.model_extra["x_toa"]["samples"] == 3
    r2 = client.chat.completions.create(model="toa@4", messages=messages)
    assert r2.model_extra["x_toa"]["samples"] == 4
    r3 = client.chat.completions.create(model="default", messages=messages)
    assert r3.model_extra["x_toa"]["method"] == "toa"


def test_multi_turn_conversation_is_the_prompt(client: openai.OpenAI) -> None:
    resp = client.chat.completions.create(
        model="toa",
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "What is 2+2?"},
            {"role": "assistant", "content": "4"},
            {"role": "user", "content": "And times three?"},
        ],
        extra_body={"budget": 2},
    )
    # fresh answers echo the tail of the last user message
    assert "And times three?" in resp.choices[0].message.content


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_serves(client: openai.OpenAI, method: str) -> None:
    # Debate & Reflect: an open prompt needs the reward-threshold knob, and the budget must
    # hold one full round (answers plus the worst-case feedback and reflections)
    knobs: dict[str, Any] = {"budget": 4}
    if method == "debate":
        knobs = {"budget": 16, "context": {"correct_threshold": 0.0}}
    resp = client.chat.completions.create(
        model=method,
        messages=[{"role": "user", "content": "Name a prime number."}],
        extra_body=knobs,
    )
    extra = resp.model_extra["x_toa"]
    assert extra["method"] == method and generations_ok(method, extra["samples"], knobs["budget"])
    assert resp.choices[0].message.content


def test_self_moa_seq_serves(client: openai.OpenAI) -> None:
    resp = client.chat.completions.create(
        model="moa",
        messages=[{"role": "user", "content": "Name a prime number."}],
        extra_body={"budget": 7, "context": {"proposers": "self", "seq_window": 2}},
    )
    extra = resp.model_extra["x_toa"]
    assert extra["method"] == "moa" and extra["samples"] == 7 and resp.choices[0].message.content


def test_debate_with_a_gold_answer_needs_no_threshold(client: openai.OpenAI) -> None:
    resp = client.chat.completions.create(
        model="debate",
        messages=[{"role": "user", "content": "What is 2 + 3?"}],
        extra_body={"budget": 16, "reference": "5"},
    )
    assert resp.model_extra["x_toa"]["method"] == "debate" and resp.choices[0].message.content


def test_streaming_parses_with_openai_client(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="toa",
        messages=[{"role": "user", "content": "Tell me a fact."}],
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"budget": 5},
    )
    chunks = list(stream)
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    progress = [
        c.model_extra["x_toa"]
        for c in chunks
        if (c.model_extra or {}).get("x_toa", {}).get("event") == "progress"
    ]
    assert progress and progress[-1]["generations"] == 5
    assert [p["generations"] for p in progress] == sorted(p["generations"] for p in progress)
    finals = [c for c in chunks if c.choices and c.choices[0].finish_reason == "stop"]
    assert len(finals) == 1
    info = finals[0].model_extra["x_toa"]
    assert text.startswith(f"{info['best_agent']}#")
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    assert chunks[-1].choices == []


def test_stream_without_usage_has_no_usage_chunk(client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model="moa",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            extra_body={"budget": 3},
        )
    )
    assert all(c.choices for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"


def test_missing_or_wrong_token_is_401(server: _Server) -> None:
    for key in ("wrong", ""):
        c = openai.OpenAI(base_url=server.base_url, api_key=key or "x", max_retries=0)
        with pytest.raises(openai.AuthenticationError) as ei:
            c.models.list()
        assert ei.value.status_code == 401
        assert ei.value.body["code"] == "invalid_api_key"  # type: ignore[index]
    r = httpx.post(f"{server.base_url}/chat/completions", json={})
    assert r.status_code == 401 and r.json()["error"]["type"] == "invalid_request_error"
    # the health check needs no token
    assert httpx.get(f"http://127.0.0.1:{server.port}/health").json() == {"status": "ok"}


@pytest.mark.parametrize(
    ("kwargs", "status", "param"),
    [
        ({"model": "nope"}, 404, "model"),
        ({"messages": []}, 400, "messages"),
        ({"messages": [{"role": "assistant", "content": "x"}]}, 400, "messages[0].role"),
        ({"messages": [{"role": "user", "content": "  "}]}, 400, "messages[0].content"),
        ({"n": 2}, 400, "n"),
        ({"extra_body": {"budget": 0}}, 400, "budget"),
        ({"extra_body": {"budget": 10_000}}, 400, "budget"),
        ({"model": "toa@x"}, 400, "model"),
        ({"extra_body": {"context": {"bogus": 1}}}, 400, "context"),
        ({"extra_body": {"context": {"tau": -1}}}, 400, "context"),
        ({"extra_body": {"context": {"agent": "zed"}}}, 400, "context.agent"),
        ({"temperature": 5}, 400, "temperature"),
        ({"model": "moa", "extra_body": {"context": {"seq_window": 1}}}, 400, "context"),
        ({"model": "moa", "extra_body": {"context": {"proposers": "best"}}}, 400, "context"),
        (
            {"model": "moa", "extra_body": {"context": {"proposers": "self", "agent": "zed"}}},
            400,
            "context.agent",
        ),
        ({"model": "abmcts", "extra_body": {"context": {"score_transform": "x"}}}, 400, "context"),
        ({"model": "abmcts", "extra_body": {"options": {"algorithm": "mcts"}}}, 400, "options"),
        ({"model": "debate"}, 400, "context.correct_threshold"),  # open prompt, no threshold
        ({"model": "debate", "extra_body": {"reference": "  "}}, 400, "context.correct_threshold"),
    ],
)
def test_bad_requests_are_rejected(
    client: openai.OpenAI, kwargs: dict[str, Any], status: int, param: str
) -> None:
    args: dict[str, Any] = {"model": "toa", "messages": [{"role": "user", "content": "hi"}]}
    args.update(kwargs)
    with pytest.raises(openai.APIStatusError) as ei:
        client.chat.completions.create(**args)
    assert ei.value.status_code == status
    body = ei.value.body
    assert isinstance(body, dict) and body["param"] == param and body["message"]


def test_bad_stream_request_gets_status_not_stream(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(
            model="nope", messages=[{"role": "user", "content": "hi"}], stream=True
        )


def test_body_too_large_and_malformed(server: _Server) -> None:
    h = {"Authorization": f"Bearer {TOKEN}"}
    big = {"model": "toa", "messages": [{"role": "user", "content": "x" * 30_000}]}
    r = httpx.post(f"{server.base_url}/chat/completions", json=big, headers=h)
    assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"
    r = httpx.post(
        f"{server.base_url}/chat/completions",
        content=b"{not json",
        headers={**h, "Content-Type": "application/json"},
    )
    assert r.status_code == 400 and "JSON" in r.json()["error"]["message"]
    r = httpx.post(f"{server.base_url}/chat/completions", json=[1, 2], headers=h)
    assert r.status_code == 400
    r = httpx.post(f"{server.base_url}/chat/completions", json={"model": "toa"}, headers=h)
    assert r.status_code == 400 and r.json()["error"]["param"] == "messages"
    r = httpx.get(f"{server.base_url}/nowhere", headers=h)
    assert r.status_code == 404 and "error" in r.json()


def test_concurrent_requests_run_in_parallel(server: _Server) -> None:
    """8 requests x 6 sequential TOA plays x 50 ms: ~0.3 s when concurrent, 2.4 s if not."""

    async def main() -> list[Any]:
        c = openai.AsyncOpenAI(base_url=server.base_url, api_key=TOKEN, max_retries=0)
        return await asyncio.gather(
            *(
                c.chat.completions.create(
                    model="toa", messages=[{"role": "user", "content": f"question {i}"}]
                )
                for i in range(8)
            )
        )

    t0 = time.perf_counter()
    results = asyncio.run(main())
    elapsed = time.perf_counter() - t0
    assert all(r.model_extra["x_toa"]["samples"] == 6 for r in results)
    for i, r in enumerate(results):
        assert f"question {i}" in r.choices[0].message.content
    assert elapsed < 1.8, elapsed


def test_all_generations_failing_is_502() -> None:
    from tests.fakes import FakeAgent

    agents = {"a": FakeAgent(name="a", fail_on=frozenset(range(100)))}
    app = build_app(agents, hash_reward, methods=["toa"])
    with _Server(app) as s:
        c = openai.OpenAI(base_url=s.base_url, api_key="x", max_retries=0)
        with pytest.raises(openai.InternalServerError) as ei:
            c.chat.completions.create(
                model="toa", messages=[{"role": "user", "content": "hi"}], extra_body={"budget": 2}
            )
        assert ei.value.status_code == 502
        assert "injected failure" in ei.value.body["message"]  # type: ignore[index]
        # streamed: the error arrives inside the stream; the client raises it
        with pytest.raises(openai.APIError):
            list(
                c.chat.completions.create(
                    model="toa",
                    messages=[{"role": "user", "content": "hi"}],
                    stream=True,
                    extra_body={"budget": 2},
                )
            )


def test_sse_wire_format(server: _Server) -> None:
    body = {
        "model": "toa",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
        "budget": 2,
    }
    with httpx.stream(
        "POST",
        f"{server.base_url}/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {TOKEN}"},
    ) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = [ln for ln in r.iter_lines() if ln]
    assert lines[-1] == "data: [DONE]"
    for ln in lines[:-1]:
        assert ln.startswith("data: ")
        json.loads(ln[len("data: ") :])


def test_usage_carries_the_cost_and_an_unpriced_money_budget_is_400(
    client: openai.OpenAI,
) -> None:
    from toa_graph.agents import AgentPool
    from toa_graph.cost import Prices

    # the module's server has no prices: a money budget cannot be kept, refused up front
    with pytest.raises(openai.BadRequestError) as ei:
        client.chat.completions.create(
            model="toa", messages=[{"role": "user", "content": "hi"}],
            extra_body={"context": {"max_cost_per_prompt": 1.0, "max_tokens": 8}},
        )  # fmt: skip
    assert "max_cost_per_prompt needs prices" in ei.value.body["message"]  # type: ignore[index]
    price = Prices(input=2.0, output=8.0)
    pool = AgentPool(fake_agents(("a", "b")), prices={"a": price, "b": price})
    with _Server(build_app(pool, hash_reward, methods=["toa"])) as s:
        c = openai.OpenAI(base_url=s.base_url, api_key="x", max_retries=0)
        resp = c.chat.completions.create(
            model="toa", messages=[{"role": "user", "content": "hi"}], extra_body={"budget": 4}
        )
    usage = resp.usage.model_dump()  # type: ignore[union-attr]
    bill = (usage["prompt_tokens"] * 2.0 + usage["completion_tokens"] * 8.0) / 1e6
    assert usage["completion_tokens"] > 0 and usage["cost"] == pytest.approx(bill, rel=1e-12)
