"""Per-agent request limits: a rate (:class:`TokenBucket`, langchain-core's
``InMemoryRateLimiter`` with exact wake-ups) and a cap on requests in flight, one
:class:`AgentLimits` per agent of a pool.

Both are shared by every graph run using the pool, whatever event loop it runs on (a
notebook's second ``asyncio.run``, a server's thread): the rate limiter's bucket is
guarded by a thread lock, and :class:`CrossLoopSemaphore` hands slots to waiters on any
loop. Every HTTP request (retries and failover included) takes a slot, then a token.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from langchain_core.rate_limiters import InMemoryRateLimiter

__all__ = ["AgentLimits", "CrossLoopSemaphore", "TokenBucket"]


@dataclass(eq=False)
class _Waiter:
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[None]
    granted: bool = False


class CrossLoopSemaphore:
    """A counting semaphore for coroutines on any event loop (``asyncio.Semaphore`` is
    bound to the first loop that waits on it). First come, first served."""

    def __init__(self, value: int) -> None:
        if value < 1:
            raise ValueError(f"a semaphore needs at least one slot, got {value}")
        self.value = value
        self._free = value
        self._lock = threading.Lock()
        self._waiters: deque[_Waiter] = deque()
        self.in_use = 0
        self.max_in_use = 0
        """The most slots held at once so far (for tests and stats)."""

    async def acquire(self) -> None:
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._free > 0 and not self._waiters:
                self._take()
                return
            waiter = _Waiter(loop, loop.create_future())
            self._waiters.append(waiter)
        try:
            await waiter.future
        except asyncio.CancelledError:
            with self._lock:
                if not waiter.granted:
                    self._waiters.remove(waiter)
                    raise
            self.release()  # granted as we were cancelled: pass the slot on
            raise

    def _take(self) -> None:
        self._free -= 1
        self.in_use += 1
        self.max_in_use = max(self.max_in_use, self.in_use)

    def release(self) -> None:
        with self._lock:
            self.in_use -= 1
            self._free += 1
            while self._waiters:
                waiter = self._waiters.popleft()
                try:
                    waiter.loop.call_soon_threadsafe(_wake, waiter.future)
                except RuntimeError:  # its loop is closed: nobody waits there any more
                    continue
                waiter.granted = True
                self._take()
                break

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        await self.acquire()
        try:
            yield
        finally:
            self.release()


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class TokenBucket(InMemoryRateLimiter):
    """langchain-core's ``InMemoryRateLimiter`` whose waiters sleep until the next token is
    due instead of polling at a fixed period: polling loses the time between a token's
    arrival and the next poll (a few percent of the rate, more on a busy machine). The
    bucket holds two tokens, so time a waiter woke late is credited to the next request
    (the long-run rate is exact; at most two requests go back to back)."""

    def __init__(self, requests_per_second: float) -> None:
        super().__init__(
            requests_per_second=requests_per_second,
            check_every_n_seconds=min(0.1, 1.0 / requests_per_second),
            max_bucket_size=2,
        )

    def _due_in(self) -> float:
        """Seconds until the bucket is next refilled (its refill adds ``elapsed * rate``
        once a whole token's time has passed since the last one)."""
        with self._consume_lock:
            last = self.last
        if last is None:
            return 0.0
        return last + 1.0 / self.requests_per_second - time.monotonic()

    async def aacquire(self, *, blocking: bool = True) -> bool:
        while not self._consume():
            if not blocking:
                return False
            await asyncio.sleep(min(self.check_every_n_seconds, max(0.0005, self._due_in())))
        return True


@dataclass(eq=False)
class AgentLimits:
    """The limits of one agent in one pool. ``share`` scales both (a Ray worker of N
    gets ``1/N``; concurrency is at least 1 per pool)."""

    requests_per_second: float | None = None
    max_concurrency: int | None = None
    rate: TokenBucket | None = field(init=False, default=None)
    slots: CrossLoopSemaphore | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        if self.requests_per_second is not None:
            self.rate = TokenBucket(self.requests_per_second)
        if self.max_concurrency is not None:
            self.slots = CrossLoopSemaphore(self.max_concurrency)

    @classmethod
    def scaled(
        cls, requests_per_second: float | None, max_concurrency: int | None, share: float
    ) -> AgentLimits:
        if not 0 < share <= 1:
            raise ValueError(f"limit share must be in (0, 1], got {share}")
        rps = requests_per_second * share if requests_per_second is not None else None
        conc = max(1, math.floor(max_concurrency * share)) if max_concurrency else None
        return cls(rps, conc)

    @property
    def active(self) -> bool:
        return self.rate is not None or self.slots is not None

    @contextlib.asynccontextmanager
    async def request(self) -> AsyncIterator[None]:
        """Hold a slot (if capped) and take a rate token (if limited) for one request."""
        if self.slots is None:
            if self.rate is not None:
                await self.rate.aacquire()
            yield
            return
        async with self.slots.slot():
            if self.rate is not None:
                await self.rate.aacquire()
            yield
