"""Per-agent request limits: a rate (langchain-core's ``InMemoryRateLimiter``) and a cap on
requests in flight, one :class:`AgentLimits` per agent of a pool.

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
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from langchain_core.rate_limiters import InMemoryRateLimiter

__all__ = ["AgentLimits", "CrossLoopSemaphore"]


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


@dataclass(eq=False)
class AgentLimits:
    """The limits of one agent in one pool. ``share`` scales both (a Ray worker of N
    gets ``1/N``; concurrency is at least 1 per pool)."""

    requests_per_second: float | None = None
    max_concurrency: int | None = None
    rate: InMemoryRateLimiter | None = field(init=False, default=None)
    slots: CrossLoopSemaphore | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        rps = self.requests_per_second
        if rps is not None:
            # poll often enough that, with several waiters, little of each token's time
            # is lost between polls; the bucket holds one token: no bursts
            self.rate = InMemoryRateLimiter(
                requests_per_second=rps,
                check_every_n_seconds=min(0.1, max(0.005, 0.2 / rps)),
                max_bucket_size=1,
            )
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
