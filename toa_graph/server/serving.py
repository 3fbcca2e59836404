"""The chat completions handler: an OpenAI request -> one method run -> an OpenAI response.

The request's ``model`` names the method (``toa``, ``moa``, ...; ``METHOD@N`` also sets
the budget); the whole conversation is the prompt; the answer is the best-rewarded
sample. Streaming sends the search's progress as ``x_toa`` fields on empty-delta chunks
and then the answer as content, so the official OpenAI clients parse every chunk.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from toa_graph.agents import AgentPool, AgentsLike, as_agent_pool
from toa_graph.context import BaseContext
from toa_graph.cost import check_limits, ledger
from toa_graph.errors import ToaGraphError, UserError, one_line
from toa_graph.progress import Progress, RunResult, astream_run
from toa_graph.registry import (
    InputRejected,
    RunSettings,
    compile_method,
    get_method,
    method_names,
)
from toa_graph.rewards.base import RewardLike, as_reward_model
from toa_graph.server.protocol import (
    AssistantMessage,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    Choice,
    ChunkChoice,
    DeltaMessage,
    ErrorInfo,
    ErrorResponse,
    ModelCard,
    ModelList,
    UsageInfo,
    completion_id,
    now,
)

logger = logging.getLogger(__name__)

DEFAULT_MODEL_ALIAS = "default"
"""A ``model`` name that selects the server's default method."""


class ServingError(ToaGraphError):
    """A request the server refuses or cannot serve; becomes an OpenAI-style error body."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = ErrorResponse(
            error=ErrorInfo(message=message, type=type, param=param, code=code)
        )


@dataclass(kw_only=True)
class ServerSettings:
    """Limits and defaults of one server."""

    api_key: str | None = field(default=None, repr=False)
    """Bearer token clients must send; ``None``: no authentication (bind 127.0.0.1 then)."""
    default_method: str = "toa"
    """Method used for ``model: "default"``; listed first in /v1/models."""
    default_context: dict[str, Any] = field(default_factory=dict)
    """Context knobs applied to every request before its own (e.g. the config's); each
    method takes those it has."""
    default_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Method -> factory options used when a request gives none (e.g. the config's
    ``method.options`` for its method)."""
    max_budget: int = 512
    """Largest ``budget`` a request may ask for."""
    max_body_bytes: int = 1 << 20
    """Largest request body accepted (HTTP 413 above it)."""
    max_messages: int = 512
    max_concurrent_runs: int = 32
    """Method runs in flight at once; further requests wait their turn."""
    request_timeout_s: float | None = None
    """Give up on a run after this long (HTTP 504); ``None``: no limit."""
    keepalive_s: float = 10.0
    """Seconds between SSE keep-alive comments while a streamed search is running."""


@dataclass
class _Run:
    method: str
    model: str
    inp: dict[str, Any]
    context: BaseContext
    include_usage: bool
    options: dict[str, Any] = field(default_factory=dict)


class ChatServing:
    """Runs chat completion requests through the method graphs (compiled once each).

    ``agents`` and ``reward`` are whatever the method factories accept (agent configs or
    LangChain chat models; a reward model or callable), so tests can serve fakes.
    """

    def __init__(
        self,
        agents: AgentsLike | AgentPool,
        reward: RewardLike,
        *,
        methods: Sequence[str] | None = None,
        settings: ServerSettings | None = None,
    ) -> None:
        self.pool = as_agent_pool(agents)
        self.reward = as_reward_model(reward)
        self.settings = settings or ServerSettings()
        names = list(methods) if methods else method_names()
        unknown = [m for m in names if m not in method_names()]
        if unknown:
            raise ValueError(f"unknown method(s) {unknown}; known: {method_names()}")
        if self.settings.default_method not in names:
            raise ValueError(
                f"default method {self.settings.default_method!r} is not served ({names})"
            )
        default = self.settings.default_method
        self.methods = [default, *(m for m in names if m != default)]
        # Fail at start-up, not on the first request, on bad default knobs or options.
        stray = set(self.settings.default_context).difference(
            *(get_method(m).knobs for m in self.methods)
        )
        if stray:
            raise ValueError(f"default context knob(s) {sorted(stray)} belong to no served method")
        for m in dict.fromkeys([default, *self.settings.default_options]):
            self._settings(m, {}, None)
        self._graphs: dict[tuple[str, str], Any] = {}
        self._slots: asyncio.Semaphore | None = None

    # ------------------------------------------------------------------ models

    def graph(self, method: str, options: Mapping[str, Any] | None = None) -> Any:
        """The compiled graph of ``method`` with ``options`` (compiled once per pair)."""
        key = (method, json.dumps(dict(options or {}), sort_keys=True))
        if key not in self._graphs:
            self._graphs[key] = compile_method(
                method, agents=self.pool, reward=self.reward, options=options
            )
        return self._graphs[key]

    def list_models(self) -> ModelList:
        budget = self._settings(self.settings.default_method, {}, None).budget
        cards = [
            ModelCard(
                id=m,
                x_toa={
                    "method": m,
                    "default": m == self.settings.default_method,
                    "budget": budget,
                    "agents": self.pool.names,
                },
            )
            for m in self.methods
        ]
        return ModelList(data=cards)

    def model_card(self, model: str) -> ModelCard:
        method, _ = self._resolve_model(model)
        return next(c for c in self.list_models().data if c.id == method)

    def _resolve_model(self, model: str) -> tuple[str, int | None]:
        name, sep, budget_s = model.partition("@")
        name = self.settings.default_method if name == DEFAULT_MODEL_ALIAS else name
        if name not in self.methods:
            raise ServingError(
                404,
                f"The model '{model}' does not exist. Served models (methods): "
                f"{', '.join(self.methods)}; 'METHOD@N' also sets the budget to N.",
                param="model",
                code="model_not_found",
            )
        if not sep:
            return name, None
        try:
            return name, int(budget_s)
        except ValueError:
            raise ServingError(
                400,
                f"model '{model}': the part after '@' must be the budget, an integer",
                param="model",
            ) from None

    # ------------------------------------------------------------------ requests

    def _settings(
        self,
        method: str,
        knobs: Mapping[str, Any],
        budget: int | None,
        options: Mapping[str, Any] | None = None,
    ) -> RunSettings:
        """A request's run settings: the server's default knobs that the method has, the
        request's knobs and budget, the method's default options then the request's,
        resolved once (:meth:`RunSettings.resolve`); what is wrong is a 400 naming the
        request field. The server adds its own limits: the budget cap, served agents."""
        spec = get_method(method)
        merged = RunSettings.own_knobs(method, self.settings.default_context)
        merged.update(knobs)
        if budget is not None:
            merged["budget"] = budget
        unknown = sorted(set(merged) - set(spec.knobs))
        if unknown:
            raise ServingError(
                400,
                f"unknown context knob(s) {unknown} for method {method!r}; "
                f"its knobs: {', '.join(spec.knobs)}",
                param="context",
            )
        b = merged.get("budget", spec.knobs["budget"])
        if not isinstance(b, int) or isinstance(b, bool) or not 1 <= b <= self.settings.max_budget:
            raise ServingError(
                400,
                f"budget must be an integer from 1 to {self.settings.max_budget}, got {b!r}",
                param="budget",
                code="invalid_budget",
            )
        agent = merged.get("agent")
        if agent is not None and agent not in self.pool:
            raise ServingError(
                400, f"unknown agent {agent!r}; agents: {self.pool.names}", param="context.agent"
            )
        opts = {**self.settings.default_options.get(method, {}), **(options or {})}
        try:
            return RunSettings.resolve(
                method=method, knobs=merged, options=opts, agents=self.pool.names
            )
        except InputRejected as exc:
            message = f"invalid context: {exc}" if exc.param == "context" else str(exc)
            raise ServingError(400, message, param=exc.param) from None

    def prepare(self, req: ChatCompletionRequest) -> _Run:
        """Validate a request into a run; raises :class:`ServingError` (4xx)."""
        method, name_budget = self._resolve_model(req.model)
        if req.n != 1:
            raise ServingError(
                400,
                f"n={req.n} is not supported: each request returns the single best answer "
                "of the search (use a larger budget for more candidates)",
                param="n",
            )
        if not req.messages:
            raise ServingError(400, "messages must not be empty", param="messages")
        if len(req.messages) > self.settings.max_messages:
            raise ServingError(
                400,
                f"too many messages ({len(req.messages)} > {self.settings.max_messages})",
                param="messages",
            )
        if req.messages[-1].role != "user":
            raise ServingError(
                400,
                f"the last message must have role 'user', got '{req.messages[-1].role}'",
                param=f"messages[{len(req.messages) - 1}].role",
            )
        if not req.messages[-1].text().strip():
            raise ServingError(
                400,
                "the last user message is empty",
                param=f"messages[{len(req.messages) - 1}].content",
            )
        knobs = dict(req.context or {})
        if req.temperature is not None:
            knobs["temperature"] = req.temperature
        max_tokens = req.max_completion_tokens or req.max_tokens
        if max_tokens is not None:
            knobs["max_tokens"] = max_tokens
        budget = req.budget if req.budget is not None else name_budget
        run = self._settings(method, knobs, budget, req.options)
        try:  # a limit that cannot be kept (no prices, no max_tokens): a 400 before any call
            check_limits(
                {a: (self.pool.prices(a), self.pool.max_tokens(a)) for a in self.pool.names},
                run.context,
            )
        except ValueError as exc:
            raise ServingError(400, str(exc), param="context") from exc
        try:  # what the graph would raise as it starts: a 400, not a 500
            run.spec.check_input({"reference": req.reference}, run.context, self.pool.names)
        except InputRejected as exc:
            raise ServingError(400, str(exc), param=exc.param or "context") from None
        prompt = [
            {"role": "system" if m.role == "developer" else m.role, "content": m.text()}
            for m in req.messages
        ]
        inp: dict[str, Any] = {"prompt": prompt}
        if req.reference is not None:
            inp["reference"] = req.reference
        include_usage = bool(req.stream_options and req.stream_options.include_usage)
        return _Run(method, req.model, inp, run.context, include_usage, run.options)

    @contextlib.asynccontextmanager
    async def _slot(self) -> AsyncIterator[None]:
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.settings.max_concurrent_runs)
        async with self._slots:
            yield

    async def _events(self, run: _Run) -> AsyncIterator[Progress | RunResult]:
        graph = self.graph(run.method, run.options)
        async with self._slot():
            try:
                async with asyncio.timeout(self.settings.request_timeout_s):
                    async for item in astream_run(
                        graph, run.inp, run.context, budget=run.context.budget
                    ):
                        yield item
            except TimeoutError:
                raise ServingError(
                    504,
                    f"the {run.method} run did not finish within "
                    f"{self.settings.request_timeout_s:g} s",
                    type="server_error",
                    code="timeout",
                ) from None

    def _finish(
        self, run: _Run, output: dict[str, Any], seconds: float
    ) -> tuple[str, UsageInfo, dict[str, Any]]:
        samples = output.get("samples") or []
        best = output.get("best")
        errors = [s["error"] for s in samples if s.get("error")]
        if not best:
            first = f" First error: {errors[0]}" if errors else ""
            raise ServingError(
                502,
                f"none of the {len(samples)} generations of {run.method} could be scored.{first}",
                type="server_error",
                code="no_scored_sample",
            )
        usage = UsageInfo(
            prompt_tokens=sum(s["usage"]["input_tokens"] for s in samples),
            completion_tokens=sum(s["usage"]["output_tokens"] for s in samples),
        )
        usage.total_tokens = usage.prompt_tokens + usage.completion_tokens
        usage.cost = ledger(samples)["cost"]
        info = {
            "method": run.method,
            "best_agent": best["agent"],
            "best_reward": best["reward"],
            "best_id": best["id"],
            "samples": len(samples),
            "errors": len(errors),
            "budget": run.context.budget,
            "stopped_by": output.get("stopped_by"),
            "seconds": round(seconds, 3),
        }
        logger.info(
            "%s budget=%d samples=%d best=%s (%.3f) in %.2f s",
            run.method, run.context.budget, len(samples), best["agent"], best["reward"], seconds,
        )  # fmt: skip
        return str(best["text"]), usage, info

    async def complete(self, req: ChatCompletionRequest) -> ChatCompletionResponse:
        run = self.prepare(req)
        start = time.perf_counter()
        output: dict[str, Any] = {}
        async for item in self._events(run):
            if isinstance(item, RunResult):
                output = item.output
        text, usage, info = self._finish(run, output, time.perf_counter() - start)
        return ChatCompletionResponse(
            model=run.model,
            choices=[Choice(message=AssistantMessage(content=text))],
            usage=usage,
            x_toa=info,
        )

    def stream(self, req: ChatCompletionRequest) -> AsyncIterator[str]:
        """Server-sent events for ``stream: true``. Call :meth:`prepare` first so that bad
        requests get a 4xx status instead of an error inside a 200 stream."""
        run = self.prepare(req)
        return self._stream(run)

    async def _stream(self, run: _Run) -> AsyncIterator[str]:
        cid, created = completion_id(), now()

        def chunk(
            delta: DeltaMessage,
            finish: Any = None,
            *,
            x_toa: dict[str, Any] | None = None,
            usage: UsageInfo | None = None,
            choices: bool = True,
        ) -> str:
            body = ChatCompletionChunk(
                id=cid,
                created=created,
                model=run.model,
                choices=[ChunkChoice(delta=delta, finish_reason=finish)] if choices else [],
                x_toa=x_toa,
                usage=usage,
            )
            data = body.model_dump(
                mode="json", exclude={k for k in ("x_toa", "usage") if getattr(body, k) is None}
            )
            for c in data["choices"]:  # OpenAI sends only the delta fields that are set
                c["delta"] = {k: v for k, v in c["delta"].items() if v is not None}
            return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"

        yield chunk(DeltaMessage(role="assistant", content=""))
        start = time.perf_counter()
        queue: asyncio.Queue[Progress | RunResult | BaseException] = asyncio.Queue()

        async def pump() -> None:
            try:
                async for item in self._events(run):
                    await queue.put(item)
            except BaseException as exc:  # handed to the stream below
                await queue.put(exc)
                if isinstance(exc, asyncio.CancelledError):
                    raise

        task = asyncio.create_task(pump())
        try:
            while True:
                try:
                    item = await asyncio.wait_for(queue.get(), self.settings.keepalive_s)
                except TimeoutError:
                    yield ": keep-alive\n\n"
                    continue
                if isinstance(item, BaseException):
                    raise item
                if isinstance(item, Progress):
                    yield chunk(DeltaMessage(), x_toa={"event": "progress", **item.to_json()})
                    continue
                text, usage, info = self._finish(run, item.output, time.perf_counter() - start)
                yield chunk(DeltaMessage(content=text))
                yield chunk(DeltaMessage(), "stop", x_toa=info)
                if run.include_usage:
                    yield chunk(DeltaMessage(), usage=usage, choices=False)
                break
        except ServingError as exc:
            yield f"data: {exc.body.model_dump_json()}\n\n"
        except UserError as exc:  # found by the graph as it started: the caller's to fix
            yield f"data: {ServingError(400, one_line(exc)).body.model_dump_json()}\n\n"
        except Exception as exc:
            logger.exception("streamed %s run failed", run.method)
            err = ErrorResponse(
                error=ErrorInfo(
                    message=f"{type(exc).__name__}: {exc}", type="server_error", code="internal"
                )
            )
            yield f"data: {err.model_dump_json()}\n\n"
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        yield "data: [DONE]\n\n"


def error_json(status: int, message: str, **kwargs: Any) -> tuple[int, dict[str, Any]]:
    """Status and OpenAI-style body for an error raised outside the handler."""
    err = ServingError(status, message, **kwargs)
    return status, json.loads(err.body.model_dump_json())
