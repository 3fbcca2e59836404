"""A tiny OpenAI-compatible chat server for tests and benchmarks (127.0.0.1 only).

Answers ``POST /v1/chat/completions`` after a fixed delay, serving at most ``capacity``
requests at once (a semaphore; the rest wait in line), and measures its busy time: the
sum over requests of the time each held a slot. ``GET /stats`` returns the counters
(with each request's arrival time and the last request's fields but its messages),
``POST /stats/reset`` zeroes them.

``POST /stats/hold`` holds every reply back (each request still gets its delay, then
waits) until ``POST /stats/release``; ``GET /stats/gauges`` returns ``arrived`` (requests
received) and ``released`` (replies let go), never reset, so ``arrived - released`` is
the requests a client has sent and not been answered: those in flight. A test that holds,
lets the client settle (it stores every reply it got), kills it and reads the gauges knows
exactly how many requests were in flight at the kill.

Run as a process (prints one JSON line ``{"port": N, "pid": P}`` once listening)::

    python -m tests.fake_openai_server --delay 0.05 --capacity 8 [--port 0]

Replies are deterministic: ``"<model> answer <k>: <tail of the last user message>"``
plus a pseudo-random amount of filler, so rewards based on the text vary. ``k`` counts
requests; with ``--deterministic`` it is instead a hash of the request (model, messages,
temperature, choice index), so a reply depends only on the request, not on the order the
server saw requests in (several processes get the same answers as one).

A request with ``"fake_reasoning": SHAPE`` (an agent's ``extra_body``) is answered as a
reasoning model would: the same answer, with a thinking trace (:func:`fake_trace`) in
SHAPE: ``tags`` (``<think>`` in the content), ``open-tag-missing`` (content starts inside
the thinking, as R1 distills), ``reasoning_content``, ``reasoning``, ``reasoning_details``
(OpenRouter), or ``cutoff-tags`` / ``cutoff-field`` (the tokens ran out inside the
thinking: ``finish_reason: length``, no answer). Field shapes count the trace's words as
``completion_tokens_details.reasoning_tokens``; tag shapes send no count (vLLM without a
reasoning parser).

A request's ``max_tokens`` (or ``max_completion_tokens``) caps the words of a plain
answer (``finish_reason: length``), as a real server stops at its token limit; the usage
counts words (prompt: the messages' words, never more than their bytes).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import socket
import sys
import time
from collections import deque
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

FILLER = [
    "lorem",
    "ipsum",
    "dolor",
    "sit",
    "amet",
    "consectetur",
    "adipiscing",
    "elit",
    "sed",
    "do",
    "eiusmod",
    "tempor",
]


class Stats:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.arrived = 0
        """Requests received (never reset; with ``released``: those unanswered)."""
        self.released = 0
        """Replies let go (past the delay and any hold; never reset)."""
        self.reset()

    def reset(self) -> None:
        self.requests = 0
        self.choices = 0
        self.busy_s = 0.0
        self.inflight = 0
        self.max_inflight = 0
        self.waiting = 0
        self.max_waiting = 0
        self.first_start: float | None = None
        self.last_end: float | None = None
        self.arrivals: deque[float] = deque(maxlen=100_000)
        """``time.monotonic()`` of each request's arrival (rate measurements)."""
        self.last_body: dict[str, Any] | None = None
        """The last request body without its messages (which fields a client sends)."""
        # free slot-seconds, split by whether requests were waiting (server-side delay)
        # or none were (the client had nothing to send: client-side shortfall)
        self.free_no_queue_s = 0.0
        self.free_with_queue_s = 0.0
        self._t: float | None = None

    def tick(self) -> None:
        """Account the time since the last state change (call before changing state)."""
        now = time.monotonic()
        if self._t is not None and self.first_start is not None:
            free = (self.capacity - self.inflight) * (now - self._t)
            if self.waiting:
                self.free_with_queue_s += free
            else:
                self.free_no_queue_s += free
        self._t = now

    def to_json(self) -> dict[str, Any]:
        window = (self.last_end - self.first_start) if self.first_start and self.last_end else 0.0
        return {
            "capacity": self.capacity,
            "requests": self.requests,
            "choices": self.choices,
            "busy_s": self.busy_s,
            "window_s": window,
            "utilization": self.busy_s / (self.capacity * window) if window > 0 else None,
            "inflight": self.inflight,
            "max_inflight": self.max_inflight,
            "max_waiting": self.max_waiting,
            "free_no_queue_s": self.free_no_queue_s,
            "free_with_queue_s": self.free_with_queue_s,
            "first_start": self.first_start,
            "arrivals": list(self.arrivals),
            "last_body": self.last_body,
            "last_end": self.last_end,
            "now": time.monotonic(),
        }


def _text_of(content: Any) -> str:
    if isinstance(content, list):
        return "".join(c.get("text", "") for c in content if isinstance(c, dict))
    return str(content or "")


def completion_body(
    cid: str, model: str, choices: list[dict[str, Any]], prompt_tokens: int, completion_tokens: int
) -> dict[str, Any]:
    """An OpenAI ``chat.completion`` response body."""
    return {
        "id": cid,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": choices,
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def fake_trace(answer: str) -> str:
    """The thinking trace a reasoning reply carries before ``answer``."""
    return f"Let me think. The question wants a short reply, so I will say: {answer}"


def reasoning_choice(shape: str, answer: str) -> tuple[dict[str, Any], str, int]:
    """(message, finish_reason, reasoning tokens) of a reply with a trace in ``shape``."""
    trace = fake_trace(answer)
    words = len(trace.split())
    message: dict[str, Any] = {"role": "assistant", "content": answer}
    if shape == "tags":
        message["content"] = f"<think>\n{trace}\n</think>\n\n{answer}"
        return message, "stop", 0
    if shape == "open-tag-missing":
        message["content"] = f"{trace}\n</think>\n\n{answer}"
        return message, "stop", 0
    if shape == "cutoff-tags":
        message["content"] = f"<think>\n{trace[:30]}"
        return message, "length", 0
    if shape == "cutoff-field":
        message.update(content=None, reasoning_content=trace[:30])
        return message, "length", len(trace[:30].split())
    if shape == "reasoning_details":
        message["reasoning_details"] = [
            {"type": "reasoning.text", "text": trace, "format": "unknown", "index": 0}
        ]
    elif shape in ("reasoning_content", "reasoning"):
        message[shape] = trace
    else:
        raise ValueError(f"unknown fake_reasoning shape {shape!r}")
    return message, "stop", words


def make_app(
    delay_s: float, capacity: int, *, deterministic: bool = False
) -> tuple[Starlette, Stats]:
    stats = Stats(capacity)
    sem = asyncio.Semaphore(capacity)
    counter = {"k": 0}
    gate = asyncio.Event()  # cleared: replies are held (POST /stats/hold)
    gate.set()

    async def chat(request: Request) -> JSONResponse:
        body = await request.json()
        messages = body.get("messages") or []
        model = body.get("model", "fake")
        n = int(body.get("n") or 1)
        stats.arrivals.append(time.monotonic())
        stats.arrived += 1
        stats.last_body = {k: v for k, v in body.items() if k != "messages"}
        stats.tick()
        stats.waiting += 1
        stats.max_waiting = max(stats.max_waiting, stats.waiting)
        async with sem:
            stats.tick()
            stats.waiting -= 1
            start = time.monotonic()
            if stats.first_start is None:
                stats.first_start = start
            stats.inflight += 1
            stats.max_inflight = max(stats.max_inflight, stats.inflight)
            try:
                await asyncio.sleep(delay_s)
            finally:
                stats.tick()
                end = time.monotonic()
                stats.inflight -= 1
                stats.busy_s += end - start
                stats.last_end = end
                stats.requests += 1
                stats.choices += n
        await gate.wait()
        stats.released += 1
        last = _text_of(messages[-1].get("content")) if messages else ""
        prompt_tokens = sum(len(_text_of(m.get("content")).split()) for m in messages)
        cap = body.get("max_completion_tokens") or body.get("max_tokens")
        choices = []
        completion_tokens = reasoning_tokens = 0
        for i in range(n):
            counter["k"] += 1
            k = counter["k"]
            if deterministic:
                key = json.dumps([model, messages, body.get("temperature"), i], sort_keys=True)
                k = int(hashlib.sha256(key.encode()).hexdigest()[:6], 16)
            h = int(hashlib.sha256(f"{model}|{last}|{k}".encode()).hexdigest()[:8], 16)
            filler = " ".join(FILLER[: h % len(FILLER)])
            text = f"{model} answer {k}: {last[-40:]} {filler}".strip()
            finish = "stop"
            if cap and not body.get("fake_reasoning") and len(text.split()) > cap:
                text, finish = " ".join(text.split()[:cap]), "length"  # as a server stops
            completion_tokens += len(text.split())
            message = {"role": "assistant", "content": text}
            if shape := body.get("fake_reasoning"):
                message, finish, thought = reasoning_choice(shape, text)
                completion_tokens += thought or len(fake_trace(text).split())
                reasoning_tokens += thought
            choices.append(
                {"index": i, "message": message, "finish_reason": finish, "logprobs": None}
            )
        out = completion_body(
            f"chatcmpl-{counter['k']}", model, choices, prompt_tokens, completion_tokens
        )
        if reasoning_tokens:
            out["usage"]["completion_tokens_details"] = {"reasoning_tokens": reasoning_tokens}
        return JSONResponse(out)

    async def get_stats(request: Request) -> JSONResponse:
        return JSONResponse(stats.to_json())

    async def reset_stats(request: Request) -> JSONResponse:
        stats.reset()
        return JSONResponse(stats.to_json())

    async def hold(request: Request) -> JSONResponse:
        gate.clear()
        return JSONResponse(gauges())

    async def release(request: Request) -> JSONResponse:
        gate.set()
        return JSONResponse(gauges())

    def gauges() -> dict[str, Any]:
        return {"arrived": stats.arrived, "released": stats.released, "held": not gate.is_set()}

    async def get_gauges(request: Request) -> JSONResponse:
        return JSONResponse(gauges())

    async def models(request: Request) -> JSONResponse:
        return JSONResponse({"object": "list", "data": [{"id": "fake", "object": "model"}]})

    app = Starlette(
        routes=[
            Route("/v1/chat/completions", chat, methods=["POST"]),
            Route("/v1/models", models, methods=["GET"]),
            Route("/stats", get_stats, methods=["GET"]),
            Route("/stats/reset", reset_stats, methods=["POST"]),
            Route("/stats/hold", hold, methods=["POST"]),
            Route("/stats/release", release, methods=["POST"]),
            Route("/stats/gauges", get_gauges, methods=["GET"]),
        ]
    )
    return app, stats


def main(argv: list[str] | None = None) -> int:
    import uvicorn

    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--port", type=int, default=0, help="0: any free port (printed)")
    ap.add_argument("--delay", type=float, default=0.05, help="seconds per request")
    ap.add_argument("--capacity", type=int, default=8, help="requests served at once")
    ap.add_argument(
        "--deterministic", action="store_true", help="replies depend only on the request"
    )
    args = ap.parse_args(argv)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", args.port))
    sock.listen(2048)
    app, _ = make_app(args.delay, args.capacity, deterministic=args.deterministic)
    config = uvicorn.Config(
        app, log_level="warning", access_log=False, lifespan="off", backlog=2048
    )
    server = uvicorn.Server(config)

    async def serve() -> None:
        task = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started:
            await asyncio.sleep(0.01)
        print(json.dumps({"port": sock.getsockname()[1], "pid": os.getpid()}), flush=True)
        await task

    asyncio.run(serve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
