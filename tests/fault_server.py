"""An OpenAI-compatible chat server on 127.0.0.1 that fails in controlled ways.

Every ``POST /v1/chat/completions`` is answered according to a *fault* chosen per request:

==================  ===========================================================================
``ok``              a correct chat completion (``n`` choices, usage)
``reset``           the connection is closed without a response (RST): a connection error
``500`` / ``503``   an OpenAI-style error body; 503 also sends ``Retry-After``
``429``             rate limited, with ``Retry-After`` / ``retry-after-ms``
``timeout``         no answer for ``hang_s`` seconds (past the client's timeout)
``empty_body``      HTTP 200 with an empty body
``truncated_json``  HTTP 200 with the first half of a correct JSON body
``non_json``        HTTP 200 with an HTML page
``empty_completion`` HTTP 200, a well-formed completion whose content is ``""``
``context_length``  HTTP 400 with vLLM's "maximum context length" message
==================  ===========================================================================

Connection *refused* (nothing listening) is :meth:`FaultServer.down` (the port stops
listening; :meth:`FaultServer.up` listens again on the same port).

The fault for a request is decided, first match wins, by:

1. ``per_model``: ``{model: fault}`` (always) or ``{model: [fault, ...]}`` (a script
   consumed one per request to that model, then ``ok``);
2. ``when``: ``[(substring, fault), ...]``: the first substring found in the request's
   messages (e.g. a marker put in some prompts, to make "all agents down" for them);
3. ``script``: ``[fault, ...]`` consumed one per request, then ``ok``;
4. ``probabilities``: ``{fault: p}``, drawn from ``random.Random(seed)``;
5. ``ok``.

With ``api_key`` set, a request without ``Authorization: Bearer <api_key>`` gets 401 (and
the key is never echoed). Every request is logged (:attr:`FaultServer.log`), so tests
count retries at the server.

In-process (a thread with its own event loop, a free port)::

    with FaultServer(per_model={"beta": "503"}) as srv:
        srv.url  # http://127.0.0.1:PORT/v1

As a process (prints one JSON line ``{"port": N, "pid": P}`` once listening)::

    python -m tests.fault_server --per-model beta=503 --when DOWN=reset \
        --prob 500=0.1 --seed 1 --api-key-env MY_KEY
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import random
import socket
import sys
import threading
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tests.fake_openai_server import FILLER, completion_body

FAULTS = (
    "ok",
    "reset",
    "500",
    "503",
    "429",
    "timeout",
    "empty_body",
    "truncated_json",
    "non_json",
    "empty_completion",
    "context_length",
)
"""Every fault a request can be given."""

CONTEXT_LENGTH_MESSAGE = (
    "This model's maximum context length is 4096 tokens. However, you requested 6144 "
    "tokens (4096 in the messages, 2048 in the completion). Please reduce the length of "
    "the messages or completion."
)
"""vLLM's message (400 BadRequestError) for a prompt plus max_tokens over max_model_len."""


_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


@dataclass
class Logged:
    """One request the server saw."""

    t: float
    """``time.monotonic()`` when its body was read."""
    path: str
    model: str | None
    fault: str
    authorized: bool
    last_user: str = ""


def _text_of(content: Any) -> str:
    if isinstance(content, list):
        return "".join(c.get("text", "") for c in content if isinstance(c, dict))
    return str(content or "")


@dataclass
class FaultServer:
    """A scripted faulty OpenAI-compatible server (see the module docstring)."""

    script: Sequence[str] = ()
    per_model: Mapping[str, str | Sequence[str]] = field(default_factory=dict)
    when: Sequence[tuple[str, str]] = ()
    probabilities: Mapping[str, float] = field(default_factory=dict)
    seed: int = 0
    api_key: str | None = None
    retry_after_s: float = 0.05
    """Sent with 429 and 503 (as ``retry-after-ms`` and a rounded-up ``Retry-After``)."""
    hang_s: float = 30.0
    """How long a ``timeout`` request is left unanswered."""
    delay_s: float = 0.0
    """Added before every answer."""
    port: int = 0

    def __post_init__(self) -> None:
        for f in [*self.script, *(f for _, f in self.when), *self.probabilities]:
            self._check(f)
        for v in self.per_model.values():
            for f in [v] if isinstance(v, str) else v:
                self._check(f)
        self.log: list[Logged] = []
        self._script = list(self.script)
        self._model_scripts = {
            m: list(v) for m, v in self.per_model.items() if not isinstance(v, str)
        }
        self._rng = random.Random(self.seed)
        self._seen: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.AbstractServer | None = None
        self._conns: set[asyncio.Task[None]] = set()

    @staticmethod
    def _check(fault: str) -> None:
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}; known: {', '.join(FAULTS)}")

    # ------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> FaultServer:
        """Serve from a daemon thread; returns once listening."""
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            loop.run_until_complete(self._listen())
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._close_all())
            loop.close()

        self._thread = threading.Thread(target=run, name="fault-server", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("fault server did not start")
        return self

    def stop(self) -> None:
        if self._loop is None or self._thread is None:
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop = None
        self._thread = None

    def down(self) -> None:
        """Stop listening and drop open connections: new requests get connection refused."""
        self._call(self._close_all())

    def up(self) -> None:
        """Listen again on the same port."""
        self._call(self._listen())

    def __enter__(self) -> FaultServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _call(self, coro: Any) -> Any:
        assert self._loop is not None, "server not started"
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    async def _listen(self) -> None:
        for _ in range(100):  # a just-closed port can linger for a moment
            try:
                self._server = await asyncio.start_server(
                    self._serve_conn, "127.0.0.1", self.port, reuse_address=True
                )
                break
            except OSError:
                if not self.port:
                    raise
                await asyncio.sleep(0.05)
        else:
            raise RuntimeError(f"cannot listen on 127.0.0.1:{self.port}")
        self.port = self._server.sockets[0].getsockname()[1]

    async def _close_all(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for t in list(self._conns):
            t.cancel()
        with contextlib.suppress(BaseException):
            await asyncio.gather(*self._conns, return_exceptions=True)

    # ------------------------------------------------------------ accounting

    def requests(self, *, model: str | None = None, fault: str | None = None) -> int:
        """Chat requests seen (optionally of one model and/or one fault)."""
        with self._lock:
            return sum(
                1
                for r in self.log
                if r.path.endswith("/chat/completions")
                and (model is None or r.model == model)
                and (fault is None or r.fault == fault)
            )

    def faults(self) -> dict[str, int]:
        with self._lock:
            return dict(Counter(r.fault for r in self.log if r.path.endswith("/chat/completions")))

    def set_script(self, faults: Sequence[str]) -> None:
        for f in faults:
            self._check(f)
        with self._lock:
            self._script = list(faults)

    def stats(self) -> dict[str, Any]:
        return {"requests": self.requests(), "faults": self.faults()}

    # ------------------------------------------------------------ deciding

    def decide(self, body: Mapping[str, Any]) -> str:
        model = str(body.get("model"))
        with self._lock:
            if model in self.per_model:
                v = self.per_model[model]
                if isinstance(v, str):
                    return v
                queue = self._model_scripts[model]
                if queue:
                    return queue.pop(0)
            text = " ".join(_text_of(m.get("content")) for m in body.get("messages") or [])
            for needle, f in self.when:
                if needle in text:
                    return f
            if self._script:
                return self._script.pop(0)
            x = self._rng.random()
            for f, p in self.probabilities.items():
                if x < p:
                    return f
                x -= p
        return "ok"

    def completion(self, body: Mapping[str, Any], *, empty: bool = False) -> dict[str, Any]:
        messages = body.get("messages") or []
        model = str(body.get("model", "fault"))
        n = int(body.get("n") or 1)
        last = _text_of(messages[-1].get("content")) if messages else ""
        key = json.dumps([model, messages, body.get("temperature")], sort_keys=True)
        with self._lock:
            self._seen[key] += 1
            visit = self._seen[key]
        prompt_tokens = sum(len(_text_of(m.get("content")).split()) for m in messages)
        choices, completion_tokens = [], 0
        for i in range(n):
            h = int(hashlib.sha256(f"{key}|{visit}|{i}".encode()).hexdigest()[:8], 16)
            text = "" if empty else f"{model} answer {h % 10007}: {last[-40:]} "
            text += "" if empty else " ".join(FILLER[: h % len(FILLER)])
            completion_tokens += len(text.split())
            choices.append(
                {
                    "index": i,
                    "message": {"role": "assistant", "content": text.strip()},
                    "finish_reason": "stop",
                    "logprobs": None,
                }
            )
        return completion_body(
            f"chatcmpl-{len(self.log)}", model, choices, prompt_tokens, completion_tokens
        )

    # ------------------------------------------------------------ HTTP/1.1

    async def _serve_conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._conns.add(task)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = ([*lines[0].split(" ", 2), "", ""])[:3]
                headers = {}
                for ln in lines[1:]:
                    if ":" in ln:
                        k, v = ln.split(":", 1)
                        headers[k.strip().lower()] = v.strip()
                body = await reader.readexactly(int(headers.get("content-length") or 0))
                keep = await self._handle(method, path, headers, body, writer)
                if not keep:
                    return
        except (asyncio.CancelledError, ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._conns.discard(task)
            with contextlib.suppress(Exception):
                writer.transport.abort()

    async def _handle(
        self,
        method: str,
        path: str,
        headers: Mapping[str, str],
        raw: bytes,
        writer: asyncio.StreamWriter,
    ) -> bool:
        authorized = self.api_key is None or headers.get("authorization") == (
            f"Bearer {self.api_key}"
        )
        if method == "GET" and path.rstrip("/").endswith("/models"):
            self._log(path, None, "ok" if authorized else "auth", authorized)
            if not authorized:
                return await self._error(writer, 401, "invalid or missing API key", "auth")
            data = {"object": "list", "data": [{"id": "fault", "object": "model"}]}
            return await self._send(writer, 200, json.dumps(data).encode())
        if method == "GET" and path == "/stats":
            return await self._send(writer, 200, json.dumps(self.stats()).encode())
        if not (method == "POST" and path.rstrip("/").endswith("/chat/completions")):
            return await self._error(writer, 404, f"no route {method} {path}", "not_found")
        try:
            body = json.loads(raw)
            assert isinstance(body, dict)
        except Exception:
            return await self._error(writer, 400, "request body is not a JSON object", "bad")
        msgs = body.get("messages") or [{}]
        last = _text_of(msgs[-1].get("content")) if isinstance(msgs[-1], dict) else ""
        if not authorized:
            self._log(path, body.get("model"), "auth", False, last)
            return await self._error(writer, 401, "invalid or missing API key", "auth")
        fault = self.decide(body)
        self._log(path, body.get("model"), fault, True, last)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        retry = {
            "retry-after-ms": str(int(self.retry_after_s * 1000)),
            "retry-after": str(max(1, int(self.retry_after_s + 0.999))),
        }
        if fault == "ok":
            return await self._send(writer, 200, json.dumps(self.completion(body)).encode())
        if fault == "empty_completion":
            data = self.completion(body, empty=True)
            return await self._send(writer, 200, json.dumps(data).encode())
        if fault == "reset":
            writer.transport.abort()
            return False
        if fault == "500":
            return await self._error(writer, 500, "internal error (injected)", "server_error")
        if fault == "503":
            return await self._error(writer, 503, "overloaded (injected)", "server_error", retry)
        if fault == "429":
            return await self._error(writer, 429, "rate limited (injected)", "rate_limit", retry)
        if fault == "timeout":
            await asyncio.sleep(self.hang_s)
            return await self._send(writer, 200, json.dumps(self.completion(body)).encode())
        if fault == "empty_body":
            return await self._send(writer, 200, b"")
        if fault == "truncated_json":
            full = json.dumps(self.completion(body)).encode()
            return await self._send(writer, 200, full[: len(full) // 2])
        if fault == "non_json":
            page = b"<html><body><h1>Bad gateway</h1>upstream hiccup</body></html>"
            return await self._send(writer, 200, page, content_type="text/html")
        if fault == "context_length":
            return await self._error(writer, 400, CONTEXT_LENGTH_MESSAGE, "BadRequestError")
        raise AssertionError(fault)

    def _log(
        self, path: str, model: Any, fault: str, authorized: bool, last_user: str = ""
    ) -> None:
        with self._lock:
            self.log.append(
                Logged(
                    time.monotonic(),
                    path,
                    None if model is None else str(model),
                    fault,
                    authorized,
                    last_user[-80:],
                )
            )

    async def _error(
        self,
        writer: asyncio.StreamWriter,
        status: int,
        message: str,
        kind: str,
        extra: Mapping[str, str] | None = None,
    ) -> bool:
        body = {
            "error": {"message": message, "type": kind, "param": None, "code": status},
            "object": "error",
        }
        return await self._send(writer, status, json.dumps(body).encode(), extra=extra)

    async def _send(
        self,
        writer: asyncio.StreamWriter,
        status: int,
        body: bytes,
        *,
        content_type: str = "application/json",
        extra: Mapping[str, str] | None = None,
    ) -> bool:
        head = [
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}",
            f"content-type: {content_type}",
            f"content-length: {len(body)}",
            "connection: keep-alive",
            *(f"{k}: {v}" for k, v in (extra or {}).items()),
        ]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
        await writer.drain()
        return True


def _pairs(items: Sequence[str], what: str) -> list[tuple[str, str]]:
    out = []
    for it in items:
        if "=" not in it:
            raise SystemExit(f"{what}: expected KEY=VALUE, got {it!r}")
        k, v = it.split("=", 1)
        out.append((k, v))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--port", type=int, default=0, help="0: any free port (printed)")
    ap.add_argument("--script", default="", help="comma-separated faults, one per request")
    ap.add_argument("--per-model", nargs="*", default=[], metavar="MODEL=FAULT[,FAULT..]")
    ap.add_argument("--when", nargs="*", default=[], metavar="SUBSTRING=FAULT")
    ap.add_argument("--prob", nargs="*", default=[], metavar="FAULT=P")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--api-key-env", default=None, help="env var with the required bearer token")
    ap.add_argument("--retry-after", type=float, default=0.05)
    ap.add_argument("--hang", type=float, default=30.0)
    ap.add_argument("--delay", type=float, default=0.0)
    args = ap.parse_args(argv)
    per_model: dict[str, str | list[str]] = {}
    for m, v in _pairs(args.per_model, "--per-model"):
        per_model[m] = v.split(",") if "," in v else v
    srv = FaultServer(
        script=[f for f in args.script.split(",") if f],
        per_model=per_model,
        when=_pairs(args.when, "--when"),
        probabilities={f: float(p) for f, p in _pairs(args.prob, "--prob")},
        seed=args.seed,
        api_key=os.environ[args.api_key_env] if args.api_key_env else None,
        retry_after_s=args.retry_after,
        hang_s=args.hang,
        delay_s=args.delay,
        port=args.port,
    )

    async def serve() -> None:
        srv._loop = asyncio.get_running_loop()
        await srv._listen()
        print(json.dumps({"port": srv.port, "pid": os.getpid()}), flush=True)
        await asyncio.Event().wait()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())
    return 0


def free_port() -> int:
    """A port nothing listens on (for connection-refused endpoints)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


if __name__ == "__main__":
    sys.exit(main())
