"""The one retry policy: attempt counts, which errors retry, backoff bounds."""

from __future__ import annotations

import time

import pytest

from toa_graph.retry import RetryPolicy, is_retryable


class Status(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status_code = status


async def _count_calls(policy: RetryPolicy, exc: Exception) -> int:
    calls = 0

    async def fail() -> None:
        nonlocal calls
        calls += 1
        raise exc

    with pytest.raises(type(exc)):
        await policy.call(fail)
    return calls


async def test_a_retryable_failure_is_tried_exactly_attempts_times() -> None:
    policy = RetryPolicy.from_retries(3, backoff_s=0.0)
    assert policy.attempts == 4
    assert await _count_calls(policy, Status(503)) == 4
    assert await _count_calls(policy, ConnectionError("refused")) == 4


async def test_a_client_error_is_tried_once() -> None:
    policy = RetryPolicy(attempts=5, backoff_s=0.0)
    assert await _count_calls(policy, Status(400)) == 1
    assert await _count_calls(policy, ValueError("bad input")) == 1


async def test_retry_on_chooses_which_errors_retry() -> None:
    policy = RetryPolicy(attempts=3, backoff_s=0.0, retry_on=lambda e: isinstance(e, KeyError))
    assert await _count_calls(policy, KeyError("x")) == 3
    assert await _count_calls(policy, Status(503)) == 1


def test_classification() -> None:
    assert is_retryable(Status(500)) and is_retryable(Status(429)) and is_retryable(Status(408))
    assert not is_retryable(Status(400)) and not is_retryable(Status(404))
    assert is_retryable(TimeoutError()) and not is_retryable(RuntimeError("x"))


def test_backoff_doubles_with_jitter_and_is_capped() -> None:
    policy = RetryPolicy(backoff_s=1.0, max_backoff_s=4.0, jitter=0.5)
    for attempt, base in [(0, 1.0), (1, 2.0), (2, 4.0), (5, 4.0)]:
        waits = [policy.delay(attempt) for _ in range(200)]
        assert all(base * 0.5 <= w <= base for w in waits), (attempt, min(waits), max(waits))
        assert max(waits) - min(waits) > 0.1 * base  # jittered, not in step
    with pytest.raises(ValueError):
        RetryPolicy(attempts=0)


async def test_retry_after_is_honoured():
    class Busy(Exception):
        def __init__(self) -> None:
            self.status_code = 429
            self.response = type("R", (), {"headers": {"retry-after": "0.2"}})()

    calls: list[float] = []

    async def once() -> str:
        calls.append(time.monotonic())
        if len(calls) < 2:
            raise Busy()
        return "ok"

    policy = RetryPolicy(attempts=3, backoff_s=0.001)
    assert await policy.call(once) == "ok"
    assert len(calls) == 2 and calls[1] - calls[0] >= 0.19
