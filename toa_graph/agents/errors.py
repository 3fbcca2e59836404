"""How a failed agent call is described and classified.

The classification (is this failure the server's, the request's, worth another try?) is
:mod:`toa_graph.retry`'s, shared with the reward clients; it is re-exported here because
the agent pool is where most callers meet it.
"""

from __future__ import annotations

from typing import Any

from toa_graph.retry import is_bad_response, is_replica_error, is_retryable

__all__ = [
    "EMPTY_RESPONSE",
    "EmptyResponseError",
    "describe_error",
    "is_bad_response",
    "is_replica_error",
    "is_retryable",
]

EMPTY_RESPONSE = "empty response"
"""The error of a generation whose completion came back with no text."""


class EmptyResponseError(Exception):
    """A completion came back with no text (asked again like a malformed answer);
    ``generations`` are the failed generations, kept with their usage."""

    def __init__(self, generations: list[Any]) -> None:
        super().__init__(EMPTY_RESPONSE)
        self.generations = generations


def describe_error(exc: BaseException) -> str:
    """A one-line error for records and logs. Never includes request headers (API keys)."""
    name = type(exc).__name__
    status = getattr(exc, "status_code", None)
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if len(text) > 300:
        text = text[:300] + "..."
    return f"{name}{f' (HTTP {status})' if status else ''}: {text}" if text else name
