"""The FastAPI router of the OpenAI-compatible server (thin: parsing, auth, status codes).

All work happens in :class:`~toa_graph.server.serving.ChatServing`, found on
``app.state.serving``; nothing is kept in module globals, so several apps (tests) coexist.
"""

from __future__ import annotations

import hmac
import json
import logging
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from toa_graph.agents import AgentPool, AgentsLike
from toa_graph.errors import RunError, ToaGraphError, one_line
from toa_graph.rewards.base import RewardLike
from toa_graph.server.protocol import ChatCompletionRequest
from toa_graph.server.serving import ChatServing, ServerSettings, ServingError

logger = logging.getLogger(__name__)

router = APIRouter()


def _serving(request: Request) -> ChatServing:
    serving: ChatServing = request.app.state.serving
    return serving


def _check_auth(request: Request) -> None:
    key = _serving(request).settings.api_key
    if not key:
        return
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), key.encode()):
        raise ServingError(
            401,
            "Invalid or missing API key: send 'Authorization: Bearer <key>'.",
            code="invalid_api_key",
        )


async def _read_json(request: Request, limit: int) -> Any:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise ServingError(
            413, f"request body too large ({declared} > {limit} bytes)", code="body_too_large"
        )
    body = bytearray()
    async for part in request.stream():
        body += part
        if len(body) > limit:
            raise ServingError(
                413, f"request body too large (> {limit} bytes)", code="body_too_large"
            )
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ServingError(400, f"request body is not valid JSON: {exc}") from None


def _validation_error(exc: ValidationError) -> ServingError:
    first = exc.errors()[0]
    loc = ".".join(str(p) for p in first["loc"])
    return ServingError(
        400,
        f"{loc}: {first['msg']}"
        + (f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""),
        param=loc or None,
    )


@router.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/v1/models")
async def list_models(request: Request) -> JSONResponse:
    _check_auth(request)
    return JSONResponse(_serving(request).list_models().model_dump(mode="json"))


@router.get("/v1/models/{model}")
async def get_model(model: str, request: Request) -> JSONResponse:
    _check_auth(request)
    return JSONResponse(_serving(request).model_card(model).model_dump(mode="json"))


@router.post("/v1/chat/completions")
async def chat_completions(request: Request) -> Any:
    _check_auth(request)
    serving = _serving(request)
    raw = await _read_json(request, serving.settings.max_body_bytes)
    if not isinstance(raw, dict):
        raise ServingError(400, "request body must be a JSON object")
    try:
        req = ChatCompletionRequest.model_validate(raw)
    except ValidationError as exc:
        raise _validation_error(exc) from None
    if req.stream:
        events = serving.stream(req)  # validates first: bad requests get a 4xx, not a stream
        return StreamingResponse(
            events,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    response = await serving.complete(req)
    return JSONResponse(response.model_dump(mode="json"))


async def _serving_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServingError)
    return JSONResponse(exc.body.model_dump(mode="json"), status_code=exc.status)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    err = ServingError(
        exc.status_code,
        f"{request.method} {request.url.path}: {exc.detail}",
        code="not_found" if exc.status_code == 404 else None,
    )
    return JSONResponse(err.body.model_dump(mode="json"), status_code=exc.status_code)


async def _toa_graph_error(request: Request, exc: Exception) -> JSONResponse:
    """What the caller can fix (a knob, a prompt a method cannot run, ...), also when a
    graph raises it before spending anything: a 400 with the one-line message."""
    err = ServingError(400, one_line(exc))
    return JSONResponse(err.body.model_dump(mode="json"), status_code=400)


async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("%s %s failed", request.method, request.url.path)
    err = ServingError(500, f"internal error: {type(exc).__name__}: {exc}", type="server_error")
    return JSONResponse(err.body.model_dump(mode="json"), status_code=500)


def create_app(serving: ChatServing) -> FastAPI:
    """A FastAPI app serving ``serving`` (OpenAI routes plus ``/health``)."""
    app = FastAPI(title="toa-graph", version="0.1.0", docs_url=None, redoc_url=None)
    app.state.serving = serving
    app.include_router(router)
    app.add_exception_handler(ServingError, _serving_error)
    app.add_exception_handler(RunError, _internal_error)  # a failure while running: a 500
    app.add_exception_handler(ToaGraphError, _toa_graph_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _internal_error)
    return app


def build_app(
    agents: AgentsLike | AgentPool,
    reward: RewardLike,
    *,
    methods: list[str] | None = None,
    settings: ServerSettings | None = None,
) -> FastAPI:
    """``create_app(ChatServing(agents, reward, ...))``: agents/reward objects or configs."""
    return create_app(ChatServing(agents, reward, methods=methods, settings=settings))
