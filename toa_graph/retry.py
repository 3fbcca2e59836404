"""One retry policy for every remote call: chat agents, the LLM judge, the vLLM reward.

A :class:`RetryPolicy` says how many attempts a request gets, how long to wait between
them (exponential backoff with jitter, honouring ``Retry-After``) and which failures are
worth another attempt (:func:`is_retryable`). Exactly one layer retries a request: the
HTTP clients underneath are built with their own retries off, and nothing above the
client (``score_samples``, the sampling methods) retries a call again, so a request that
keeps failing is sent ``attempts`` times, never ``attempts`` times ``attempts``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

__all__ = [
    "RetryPolicy",
    "is_bad_response",
    "is_replica_error",
    "is_retryable",
    "retry_after_s",
    "status_of",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")

MAX_RETRY_AFTER_S = 60.0
"""A server's ``Retry-After`` is honoured up to this many seconds."""


def status_of(exc: BaseException) -> int | None:
    """The HTTP status of a failed request (openai errors carry ``status_code``; httpx
    ``HTTPStatusError`` its ``response``), or ``None`` when there was no answer."""
    status = getattr(exc, "status_code", None)
    if isinstance(status, int):
        return status
    status = getattr(getattr(exc, "response", None), "status_code", None)
    return status if isinstance(status, int) else None


def is_replica_error(exc: BaseException) -> bool:
    """Whether a failed request says the server is unwell (connection refused or reset,
    timeout, HTTP 5xx) rather than that the request itself is bad (4xx)."""
    status = status_of(exc)
    if status is not None:
        return status >= 500
    if isinstance(exc, ConnectionError | TimeoutError):
        return True
    names = {c.__name__ for c in type(exc).__mro__}
    # openai.APIConnectionError / APITimeoutError, httpx.TransportError (connect, read,
    # remote protocol errors), without importing either here.
    return bool(names & {"APIConnectionError", "APITimeoutError", "TransportError"})


def is_bad_response(exc: BaseException) -> bool:
    """An HTTP 200 whose body is not the expected JSON: empty, truncated or not JSON (a
    proxy's error page, a server dying mid-write)."""
    if isinstance(exc, json.JSONDecodeError):
        return True
    names = {c.__name__ for c in type(exc).__mro__}
    if names & {"APIResponseValidationError"}:
        return True
    # langchain-openai, given the text of a non-JSON 200 body instead of a completion
    return isinstance(exc, ValueError) and str(exc).startswith("Unexpected response type")


def is_retryable(exc: BaseException) -> bool:
    """Worth sending again: server errors (5xx, connection, timeout), 408/409/429 and
    malformed answers. Other 4xx are the request's fault and fail at once."""
    return is_replica_error(exc) or status_of(exc) in (408, 409, 429) or is_bad_response(exc)


def retry_after_s(exc: BaseException) -> float | None:
    """The wait a server asked for (``retry-after-ms`` or numeric ``Retry-After``)."""
    headers = getattr(getattr(exc, "response", None), "headers", None)
    if headers is None:
        return None
    for name, scale in (("retry-after-ms", 1e-3), ("retry-after", 1.0)):
        raw = headers.get(name)
        if raw is None:
            continue
        try:
            value = float(raw) * scale
        except (TypeError, ValueError):
            continue  # an HTTP date: fall back to our own backoff
        if 0 <= value <= MAX_RETRY_AFTER_S:
            return value
    return None


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """How a request is retried. ``attempts`` counts every try (1 = no retry)."""

    attempts: int = 5
    """Tries in all, the first included."""
    backoff_s: float = 0.5
    """Wait before the second try; doubles per try."""
    max_backoff_s: float = 8.0
    """Cap of the backoff (a server's ``Retry-After`` may ask for longer, up to 60 s)."""
    jitter: float = 0.5
    """Each wait is drawn from ``[1 - jitter, 1] * backoff`` so clients do not retry in step."""
    retry_on: Callable[[BaseException], bool] = field(default=is_retryable, compare=False)
    """Which failures get another try."""

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.backoff_s < 0 or not 0 <= self.jitter <= 1:
            raise ValueError("need attempts >= 1, backoff_s >= 0 and 0 <= jitter <= 1")

    @classmethod
    def from_retries(cls, max_retries: int, **kwargs: Any) -> RetryPolicy:
        """The policy of a config's ``max_retries`` (retries after the first try)."""
        return cls(attempts=max_retries + 1, **kwargs)

    def delay(self, attempt: int, exc: BaseException | None = None) -> float:
        """Seconds to wait after failed try number ``attempt`` (0-based)."""
        base = min(self.max_backoff_s, self.backoff_s * 2**attempt)
        wait = base * (1 - self.jitter * random.random())
        asked = retry_after_s(exc) if exc is not None else None
        return max(wait, asked) if asked is not None else wait

    def should_retry(self, exc: BaseException, attempt: int) -> bool:
        """Whether failed try number ``attempt`` (0-based) gets another."""
        return attempt + 1 < self.attempts and self.retry_on(exc)

    async def call(
        self,
        fn: Callable[[], Awaitable[T]],
        *,
        what: str = "request",
        on_retry: Callable[[BaseException], None] | None = None,
    ) -> T:
        """``await fn()``, again after a wait while it fails with a retryable error; the
        last failure propagates. ``on_retry`` is called with each failure that is retried."""
        attempt = 0
        while True:
            try:
                return await fn()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not self.should_retry(exc, attempt):
                    raise
                wait = self.delay(attempt, exc)
                if on_retry is not None:
                    on_retry(exc)
                logger.info(
                    "%s failed (%s: %s); retrying request in %.2f s (%d/%d)",
                    what, type(exc).__name__, str(exc)[:200], wait, attempt + 1,
                    self.attempts - 1,
                )  # fmt: skip
                await asyncio.sleep(wait)
                attempt += 1
