"""One dynamic batcher in front of any reward model, shared by every client of the server.

Each request puts its (prompt, response, reference) items in one queue. A batch is taken
when ``max_batch_size`` items wait or ``max_wait_ms`` after the first of them arrived,
whichever comes first, so 64 clients sending one item each are scored together instead of
one by one; a batch is also taken once no item arrived for ``idle_ms``, so a lone client
does not wait the whole window. A batch is scored with one ``ascore`` call per distinct
(prompt, reference) (concurrently: a batching reward such as ``hf`` joins them into its own
forward passes);
when such a call fails, its items are retried one by one, so one bad item fails alone.

Nothing here knows HTTP: :mod:`toa_graph.reward_server.serving` maps the outcomes.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from toa_graph.rewards.base import RewardModel, check_scores
from toa_graph.state import Prompt

__all__ = ["BatcherMetrics", "ItemBatcher", "QueueFull", "ScoredItem"]

logger = logging.getLogger(__name__)


class QueueFull(Exception):
    """More items are waiting than ``max_queue``; the caller should retry later."""


@dataclass(frozen=True)
class ScoredItem:
    """One item's outcome: its score, or why it has none, and the batch it was scored in."""

    score: float | None
    error: str | None
    batch_size: int


@dataclass
class BatcherMetrics:
    """Counters of the batcher (``/metrics`` shows them with derived means)."""

    items: int = 0
    batches: int = 0
    failed_items: int = 0
    max_batch: int = 0
    queue_s_total: float = 0.0
    queue_s_max: float = 0.0
    score_s_total: float = 0.0
    batch_sizes: dict[int, int] = field(default_factory=dict)
    """Histogram: batch size -> batches of that size."""

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.__dict__)
        out["batch_sizes"] = {str(k): v for k, v in sorted(self.batch_sizes.items())}
        out["mean_batch_size"] = round(self.items / self.batches, 3) if self.batches else None
        out["mean_queue_ms"] = (
            round(1000 * self.queue_s_total / self.items, 3) if self.items else None
        )
        out["max_queue_ms"] = round(1000 * self.queue_s_max, 3)
        return out


@dataclass(eq=False)
class _Item:
    prompt: Prompt
    response: str
    reference: str | None
    future: asyncio.Future[ScoredItem]
    enqueued: float


def _group_key(item: _Item) -> str:
    return json.dumps([item.prompt, item.reference], sort_keys=True, default=str)


class ItemBatcher:
    """Gathers items from every caller and scores them in batches with ``reward``.

    Args:
        reward: the loaded reward model.
        max_batch_size: most items in one batch.
        max_wait_ms: how long the first waiting item waits for company at most.
        idle_ms: a batch is also taken when no item arrived for this long (``None``:
            always wait ``max_wait_ms``), so a lone client does not wait the whole window
            while a burst of clients still lands in one batch.
        max_queue: most items waiting or being scored; :meth:`score` raises
            :class:`QueueFull` beyond it.
        max_concurrent_batches: batches scored at once (a batch in flight does not stop
            the next one from being gathered).
    """

    def __init__(
        self,
        reward: RewardModel,
        *,
        max_batch_size: int = 64,
        max_wait_ms: float = 10.0,
        idle_ms: float | None = 1.0,
        max_queue: int = 4096,
        max_concurrent_batches: int = 4,
    ) -> None:
        if max_batch_size < 1 or max_wait_ms < 0 or max_queue < 1 or max_concurrent_batches < 1:
            raise ValueError("batch size, queue and concurrency must be >= 1, max_wait_ms >= 0")
        self.reward = reward
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_ms / 1000.0
        self.idle_s = None if idle_ms is None else idle_ms / 1000.0
        self._last_arrival = 0.0
        self.max_queue = max_queue
        self.metrics = BatcherMetrics()
        self._queue: list[_Item] = []
        self._in_flight = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wakeup: asyncio.Event | None = None
        self._collector: asyncio.Task[None] | None = None
        self._slots: asyncio.Semaphore | None = None
        self._max_concurrent = max_concurrent_batches
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def pending(self) -> int:
        """Items waiting or being scored."""
        return len(self._queue) + self._in_flight

    async def score(self, items: Sequence[tuple[Prompt, str, str | None]]) -> list[ScoredItem]:
        """Score ``(prompt, response, reference)`` items; one outcome each, in order."""
        if not items:
            return []
        if self.pending + len(items) > self.max_queue:
            raise QueueFull(f"{self.pending} items queued (max_queue {self.max_queue})")
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # first use, or a new event loop: start afresh
            self._loop, self._queue, self._in_flight = loop, [], 0
            self._wakeup = asyncio.Event()
            self._slots = asyncio.Semaphore(self._max_concurrent)
            self._collector = None
        assert self._wakeup is not None
        now = loop.time()
        mine = [_Item(p, r, ref, loop.create_future(), now) for p, r, ref in items]
        self._queue.extend(mine)
        self._last_arrival = now
        self._wakeup.set()
        if self._collector is None or self._collector.done():
            self._collector = loop.create_task(self._collect(), name="reward-batcher")
        return list(await asyncio.gather(*(i.future for i in mine)))

    async def aclose(self) -> None:
        """Cancel the collector and any batch in flight; their callers and those still
        queued get an error."""
        tasks = [t for t in (self._collector, *self._tasks) if t is not None]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for item in self._queue:
            if not item.future.done():
                item.future.set_exception(RuntimeError("scoring stopped: the server is closing"))
        self._queue = []

    # ---------------------------------------------------------------- internals

    async def _collect(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._wakeup is not None and self._slots is not None
        while self._queue:
            deadline = self._queue[0].enqueued + self.max_wait_s
            while len(self._queue) < self.max_batch_size:
                until = deadline
                if self.idle_s is not None:
                    until = min(until, self._last_arrival + self.idle_s)
                remaining = until - loop.time()
                if remaining <= 0:
                    break
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), remaining)
                except TimeoutError:
                    break
            batch = self._queue[: self.max_batch_size]
            del self._queue[: self.max_batch_size]
            batch = [i for i in batch if not i.future.done()]  # callers that gave up
            if not batch:
                continue
            await self._slots.acquire()
            self._in_flight += len(batch)
            task = loop.create_task(self._run(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run(self, batch: list[_Item]) -> None:
        assert self._slots is not None
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            groups: dict[str, list[_Item]] = {}
            for item in batch:
                groups.setdefault(_group_key(item), []).append(item)
            results = await asyncio.gather(*(self._score_group(g) for g in groups.values()))
            outcome = {id(i): r for g, rs in zip(groups.values(), results, strict=True)
                       for i, r in zip(g, rs, strict=True)}  # fmt: skip
        except BaseException as exc:  # cancelled (server stopping): no caller waits forever
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(RuntimeError(f"scoring stopped: {exc!r}"))
            raise
        finally:
            self._in_flight -= len(batch)
            self._slots.release()
        self._record(batch, started, loop.time(), outcome)
        for item in batch:
            score, error = outcome[id(item)]
            if not item.future.done():
                item.future.set_result(ScoredItem(score, error, len(batch)))

    async def _score_group(self, group: list[_Item]) -> list[tuple[float | None, str | None]]:
        first = group[0]
        refs = [first.reference] if first.reference is not None else None
        try:
            scores = await self.reward.ascore(first.prompt, [i.response for i in group], refs)
            return [(s, None) for s in check_scores(scores, len(group))]
        except Exception as exc:
            if len(group) > 1:  # find the item(s) that fail; the others keep their scores
                parts = await asyncio.gather(*(self._score_group([i]) for i in group))
                return [p[0] for p in parts]
            logger.warning("reward failed for one item: %s", exc)
            return [(None, f"{type(exc).__name__}: {exc}")]

    def _record(
        self,
        batch: list[_Item],
        started: float,
        done: float,
        outcome: dict[int, tuple[float | None, str | None]],
    ) -> None:
        m = self.metrics
        n = len(batch)
        m.items += n
        m.batches += 1
        m.max_batch = max(m.max_batch, n)
        m.batch_sizes[n] = m.batch_sizes.get(n, 0) + 1
        m.failed_items += sum(1 for i in batch if outcome[id(i)][1] is not None)
        m.score_s_total += done - started
        for i in batch:
            waited = started - i.enqueued
            m.queue_s_total += waited
            m.queue_s_max = max(m.queue_s_max, waited)
