"""The reward server's FastAPI routes (thin: auth, body parsing, status codes).

``GET /health`` (503 while the reward loads), ``GET /metrics``, ``POST /v1/score`` (the
project's API) and ``POST /get_reward`` (OpenRLHF's). All work is in
:class:`~toa_graph.reward_server.serving.RewardServing`, found on ``app.state.serving``.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import orjson
from fastapi import FastAPI, Request
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from toa_graph.reward_server.protocol import GetRewardRequest, ScoreRequest
from toa_graph.reward_server.serving import RewardServing, RewardServingError

__all__ = ["create_reward_app"]

logger = logging.getLogger(__name__)

Body = TypeVar("Body", bound=BaseModel)


def _serving(request: Request) -> RewardServing:
    serving: RewardServing = request.app.state.serving
    return serving


def _check_auth(request: Request) -> None:
    serving = _serving(request)
    key = serving.settings.api_key
    if not key:
        return
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), key.encode()):
        serving.rejected["unauthorized"] += 1
        raise RewardServingError(
            401, "invalid or missing token: send 'Authorization: Bearer <key>'"
        )


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status, headers, media_type="application/json")


async def _parse(request: Request, model: type[Body]) -> Body:
    serving = _serving(request)
    _check_auth(request)
    limit = serving.settings.max_body_bytes
    body = await request.body()
    if len(body) > limit:
        raise serving.bad_request(f"request body too large ({len(body)} > {limit} bytes)", 413)
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise serving.bad_request(f"request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise serving.bad_request("request body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"]) or "body"
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise serving.bad_request(f"{loc}: {first['msg']}{more}", 422) from None


async def health(request: Request) -> Response:
    status, body = _serving(request).health()
    return _json(body, status)


async def metrics(request: Request) -> Response:
    _check_auth(request)
    return _json(_serving(request).metrics())


async def score(request: Request) -> Response:
    req = await _parse(request, ScoreRequest)
    return _json((await _serving(request).score(req)).model_dump())


async def get_reward(request: Request) -> Response:
    req = await _parse(request, GetRewardRequest)
    return _json((await _serving(request).get_reward(req)).model_dump())


ROUTES = (
    ("/health", health, "GET"),
    ("/metrics", metrics, "GET"),
    ("/v1/score", score, "POST"),
    ("/get_reward", get_reward, "POST"),
)
"""Plain Starlette endpoints (no FastAPI dependency solving per request: this server's
requests are small and many)."""


async def _serving_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RewardServingError)
    headers = {"Retry-After": str(max(1, round(exc.retry_after)))} if exc.retry_after else None
    return _json({"error": str(exc)}, exc.status, headers)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    message = f"{request.method} {request.url.path}: {exc.detail}"
    return _json({"error": message}, exc.status_code)


async def _internal_error(request: Request, exc: Exception) -> Response:
    logger.exception("%s %s failed", request.method, request.url.path)
    return _json({"error": f"internal error: {type(exc).__name__}: {exc}"}, 500)


Loader = Callable[[RewardServing], Coroutine[Any, Any, None]]


def create_reward_app(serving: RewardServing, load: Loader | None = None) -> FastAPI:
    """A FastAPI app serving ``serving``; ``load(serving)`` runs in the background at
    startup (the reward loads while ``/health`` answers 503)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        import asyncio

        task = asyncio.create_task(load(serving)) if load is not None else None
        try:
            yield
        finally:
            if task is not None:
                task.cancel()
            await serving.aclose()

    app = FastAPI(title="toa-graph reward server", docs_url=None, redoc_url=None,
                  lifespan=lifespan)  # fmt: skip
    app.state.serving = serving
    for path, endpoint, method in ROUTES:
        app.add_route(path, endpoint, methods=[method])
    app.add_exception_handler(RewardServingError, _serving_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _internal_error)
    return app
