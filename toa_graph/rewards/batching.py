"""A batching layer in front of any pair scorer: one GPU forward serves many graph runs.

TOA calls the reward model once per play, and many trees grow at once. Scoring each call
on its own (as the reference code did: one example per forward pass) leaves the GPU idle
most of the time. :class:`BatchingReward` gathers the ``ascore`` calls of every concurrent
graph run for a short while (``max_wait_ms``, or until ``max_batch_size`` items or
``batch_tokens`` tokens are waiting), sorts the items by length, packs them into batches
under a padded-token budget, runs one forward per batch in a single worker thread (so the
event loop stays free) and hands each caller its scores, in order.

On CUDA out-of-memory a batch is split in halves and retried; an item that still does not
fit fails for its own caller only (:class:`RewardError`), never with a made-up score.

The scorer is anything with two methods (see :class:`PairScorer`):

- ``prepare(prompt, response, reference) -> item`` where ``item.n_tokens`` is its length
  (tokenisation; runs in a worker thread);
- ``score_batch(items) -> list[float]``: one forward over the items (runs in the single
  forward thread).
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from toa_graph.rewards.base import RewardError
from toa_graph.state import Prompt

__all__ = ["BatchingReward", "BatchingStats", "PairScorer", "is_oom_error", "pack_batches"]

logger = logging.getLogger(__name__)


@runtime_checkable
class PairScorer(Protocol):
    """What :class:`BatchingReward` needs from a model: prepare one pair, score a batch."""

    name: str

    def prepare(self, prompt: Prompt, response: str, reference: str | None = None) -> Any:
        """Tokenise one (prompt, response) pair; the result has an ``n_tokens`` attribute."""
        ...

    def score_batch(self, items: Sequence[Any]) -> list[float]:
        """One forward pass over prepared items; one float per item, in order."""
        ...


@dataclass
class BatchingStats:
    """Counters for tests and benchmarks (read them, or :meth:`BatchingReward.reset_stats`)."""

    calls: int = 0
    """``ascore`` calls served."""
    items: int = 0
    """(prompt, response) pairs scored successfully."""
    forward_passes: int = 0
    """Forward passes attempted (an OOM'd pass counts too)."""
    tokens: int = 0
    """Real (unpadded) tokens in successful forward passes."""
    padded_tokens: int = 0
    """Tokens as run, padding included (``batch size x longest item`` per pass)."""
    oom_splits: int = 0
    """Batches split in halves after an out-of-memory error."""
    failed_items: int = 0
    """Items whose caller got a RewardError."""
    flushes: int = 0
    """Times the collector took the waiting items and packed them."""
    forward_s: float = 0.0
    """Seconds spent inside forward passes."""
    max_batch: int = 0
    """Largest batch (items) run in one forward."""

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(eq=False)
class _Pending:
    item: Any
    n_tokens: int
    future: asyncio.Future[float]
    seq: int = 0


def is_oom_error(exc: BaseException) -> bool:
    """True for ``torch.cuda.OutOfMemoryError`` and RuntimeErrors that say "out of memory"."""
    if any(cls.__name__ == "OutOfMemoryError" for cls in type(exc).__mro__):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def pack_batches(
    lengths: Sequence[int],
    batch_tokens: int,
    max_batch_size: int,
    *,
    forward_cost_tokens: int = 1024,
) -> list[list[int]]:
    """Indices grouped into padded batches, longest first.

    Each batch holds at most ``max_batch_size`` items and costs ``size x longest`` padded
    tokens, within ``batch_tokens``; an item longer than the budget gets a batch of its own
    (never dropped). Among such splits of the length-sorted items into runs, the one with
    the least padded tokens plus ``forward_cost_tokens`` per forward pass is chosen
    (dynamic programming), so a mixed-length flush is not padded to its longest item.

    >>> pack_batches([10, 300, 20, 290], batch_tokens=600, max_batch_size=8)
    [[1, 3], [2, 0]]
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    n = len(order)
    if n == 0:
        return []
    lens = [max(1, int(lengths[i])) for i in order]
    inf = float("inf")
    best = [inf] * (n + 1)  # best[j]: cost of packing the first j (longest) items
    cut = [0] * (n + 1)
    best[0] = 0.0
    for j in range(1, n + 1):
        # batch = items i..j-1; its longest is lens[i] (sorted descending)
        for i in range(j - 1, max(-1, j - 1 - max_batch_size), -1):
            size = j - i
            padded = size * lens[i]
            if size > 1 and padded > batch_tokens:
                break  # earlier i only makes it longer
            c = best[i] + padded + forward_cost_tokens
            if c < best[j]:
                best[j], cut[j] = c, i
    batches: list[list[int]] = []
    j = n
    while j > 0:
        i = cut[j]
        batches.append(order[i:j])
        j = i
    batches.reverse()
    return batches


def _empty_cuda_cache() -> None:
    torch = sys.modules.get("torch")
    if torch is None:
        return
    try:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # pragma: no cover - best effort
        pass


class BatchingReward:
    """A :class:`~toa_graph.rewards.base.RewardModel` that batches across concurrent callers.

    Args:
        scorer: a :class:`PairScorer` (e.g. :class:`toa_graph.rewards.hf.HFScorer`).
        batch_tokens: padded-token budget of one forward (``items x longest``).
        max_batch_size: most items in one forward.
        max_wait_ms: how long the first waiting item waits for company before a flush.
        padded: whether the scorer pads (budget counts ``items x longest``) or packs
            (budget counts the sum of lengths); taken from ``scorer.padded`` when present.
        forward_cost_tokens: fixed cost of one forward pass, in padded-token equivalents,
            used to trade padding against the number of passes (padded scorers).
    """

    def __init__(
        self,
        scorer: PairScorer,
        *,
        batch_tokens: int = 32768,
        max_batch_size: int = 64,
        max_wait_ms: float = 5.0,
        padded: bool | None = None,
        forward_cost_tokens: int = 1024,
        name: str | None = None,
    ) -> None:
        if batch_tokens < 1 or max_batch_size < 1 or max_wait_ms < 0:
            raise ValueError("batch_tokens and max_batch_size must be >= 1, max_wait_ms >= 0")
        self.scorer = scorer
        self.batch_tokens = int(batch_tokens)
        self.max_batch_size = int(max_batch_size)
        self.max_wait_s = float(max_wait_ms) / 1000.0
        self.padded = bool(getattr(scorer, "padded", True)) if padded is None else padded
        self.forward_cost_tokens = int(forward_cost_tokens)
        self.name = name or getattr(scorer, "name", type(scorer).__name__)
        self.stats = BatchingStats()
        # One thread runs every forward (the GPU is one serial resource); it is created
        # lazily and its thread dies with the interpreter.
        self._forward_pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        # Per-event-loop state (a BatchingReward may outlive one asyncio.run()).
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: list[_Pending] = []
        self._queued_tokens = 0
        self._wakeup: asyncio.Event | None = None
        self._collector: asyncio.Task[None] | None = None
        self._seq = 0

    # ------------------------------------------------------------------ public API

    async def ascore(
        self,
        prompt: Prompt,
        responses: Sequence[str],
        references: Sequence[str] | None = None,
    ) -> list[float]:
        """Score ``responses`` to ``prompt``; waits (briefly) to share a forward with others."""
        if isinstance(responses, str):
            raise TypeError("responses must be a list of strings, not a string")
        responses = list(responses)
        if not responses:
            return []
        ref = references[0] if references else None
        try:
            items = await asyncio.to_thread(self._prepare_all, prompt, responses, ref)
        except RewardError:
            raise
        except Exception as exc:
            raise RewardError(f"{self.name}: could not prepare inputs: {exc}") from exc
        loop = asyncio.get_running_loop()
        self._bind_loop(loop)
        futures: list[asyncio.Future[float]] = []
        for item in items:
            fut: asyncio.Future[float] = loop.create_future()
            self._seq += 1
            self._queue.append(_Pending(item, int(item.n_tokens), fut, self._seq))
            self._queued_tokens += int(item.n_tokens)
            futures.append(fut)
        assert self._wakeup is not None
        self._wakeup.set()
        if self._collector is None or self._collector.done():
            self._collector = loop.create_task(self._collect(), name=f"{self.name}-batcher")
        results = await asyncio.gather(*futures, return_exceptions=True)
        self.stats.calls += 1
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            err = errors[0]
            if isinstance(err, RewardError):
                raise err
            raise RewardError(f"{self.name}: {err}") from err
        return [float(r) for r in results]  # type: ignore[arg-type]

    def counters(self) -> dict[str, int]:
        """The integer counters of :attr:`stats` (calls, items, OOM splits, ...), plus those
        of the scorer where it has ``counters()``, for run summaries."""
        out = {f"batching_{k}": v for k, v in self.stats.as_dict().items() if isinstance(v, int)}
        inner = getattr(self.scorer, "counters", None)
        return {**out, **(inner() if callable(inner) else {})}

    def reset_stats(self) -> BatchingStats:
        """Return the counters so far and start new ones."""
        old, self.stats = self.stats, BatchingStats()
        return old

    def score_pairs_sync(
        self, pairs: Sequence[tuple[Prompt, str]], *, one_at_a_time: bool = False
    ) -> list[float]:
        """Score pairs synchronously (no event loop): packed batches, or one per forward."""
        items = [self.scorer.prepare(p, r, None) for p, r in pairs]
        if one_at_a_time:
            out = []
            for it in items:
                res = self._run_with_split([it])
                if isinstance(res[0], BaseException):
                    raise RewardError(f"{self.name}: {res[0]}")
                out.append(res[0])
            return out
        return self._score_items_sync(items)

    def __repr__(self) -> str:
        return (
            f"BatchingReward({self.name}, batch_tokens={self.batch_tokens}, "
            f"max_batch_size={self.max_batch_size}, max_wait_ms={self.max_wait_s * 1000:g})"
        )

    # ------------------------------------------------------------------ internals

    def _prepare_all(self, prompt: Prompt, responses: list[str], ref: str | None) -> list[Any]:
        prepare_many = getattr(self.scorer, "prepare_many", None)
        if callable(prepare_many):
            return list(prepare_many(prompt, responses, ref))
        return [self.scorer.prepare(prompt, r, ref) for r in responses]

    def _bind_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._loop is loop:
            return
        # A new event loop (e.g. another asyncio.run): anything left from the old one is void.
        self._loop = loop
        self._queue = []
        self._queued_tokens = 0
        self._wakeup = asyncio.Event()
        self._collector = None

    def _pool(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._forward_pool is None:
                self._forward_pool = ThreadPoolExecutor(
                    max_workers=1, thread_name_prefix=f"{self.name}-forward"
                )
            return self._forward_pool

    def _full(self) -> bool:
        return len(self._queue) >= self.max_batch_size or self._queued_tokens >= self.batch_tokens

    async def _collect(self) -> None:
        """Flush waiting items until none are left, then exit (restarted on demand)."""
        loop = asyncio.get_running_loop()
        assert self._wakeup is not None
        while self._queue:
            # Wait for company: until max_wait after this round started, or until full.
            deadline = loop.time() + self.max_wait_s
            while not self._full():
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), remaining)
                except TimeoutError:
                    break
            taken, self._queue = self._queue, []
            self._queued_tokens = 0
            self.stats.flushes += 1
            taken = [p for p in taken if not p.future.done()]  # callers that gave up
            if not taken:
                continue
            for batch in self._pack(taken):
                try:
                    results = await loop.run_in_executor(
                        self._pool(), self._run_with_split, [p.item for p in batch]
                    )
                except Exception as exc:  # pragma: no cover - defensive
                    results = [exc] * len(batch)
                for p, r in zip(batch, results, strict=True):
                    if p.future.done():
                        continue
                    if isinstance(r, BaseException):
                        p.future.set_exception(r)
                    else:
                        p.future.set_result(r)

    def _pack(self, pending: list[_Pending]) -> list[list[_Pending]]:
        lengths = [p.n_tokens for p in pending]
        if self.padded:
            groups = pack_batches(
                lengths,
                self.batch_tokens,
                self.max_batch_size,
                forward_cost_tokens=self.forward_cost_tokens,
            )
        else:
            groups = _pack_sum(lengths, self.batch_tokens, self.max_batch_size)
        return [[pending[i] for i in g] for g in groups]

    def _score_items_sync(self, items: list[Any]) -> list[float]:
        lengths = [int(it.n_tokens) for it in items]
        groups = (
            pack_batches(
                lengths,
                self.batch_tokens,
                self.max_batch_size,
                forward_cost_tokens=self.forward_cost_tokens,
            )
            if self.padded
            else _pack_sum(lengths, self.batch_tokens, self.max_batch_size)
        )
        out: list[float | None] = [None] * len(items)
        for g in groups:
            res = self._run_with_split([items[i] for i in g])
            for i, r in zip(g, res, strict=True):
                if isinstance(r, BaseException):
                    raise RewardError(f"{self.name}: {r}") from r
                out[i] = r
        return [float(x) for x in out]  # type: ignore[arg-type]

    def _run_with_split(self, items: list[Any]) -> list[float | BaseException]:
        """One forward; on OOM split in halves and retry; per-item results or errors."""
        self.stats.forward_passes += 1
        t0 = time.perf_counter()
        try:
            scores = self.scorer.score_batch(items)
            if len(scores) != len(items):
                raise RewardError(
                    f"{self.name}: scorer returned {len(scores)} scores for {len(items)} items"
                )
        except Exception as exc:
            self.stats.forward_s += time.perf_counter() - t0
            if is_oom_error(exc):
                _empty_cuda_cache()
                if len(items) == 1:
                    self.stats.failed_items += 1
                    logger.warning(
                        "%s: out of memory on a single item of %d tokens",
                        self.name,
                        int(items[0].n_tokens),
                    )
                    return [
                        RewardError(
                            f"{self.name}: out of memory scoring one input of "
                            f"{int(items[0].n_tokens)} tokens: {exc}"
                        )
                    ]
                self.stats.oom_splits += 1
                mid = len(items) // 2
                logger.info(
                    "%s: out of memory on a batch of %d; splitting into %d + %d",
                    self.name,
                    len(items),
                    mid,
                    len(items) - mid,
                )
                return self._run_with_split(items[:mid]) + self._run_with_split(items[mid:])
            self.stats.failed_items += len(items)
            err = exc if isinstance(exc, RewardError) else RewardError(f"{self.name}: {exc}")
            if err is not exc:
                err.__cause__ = exc
            return [err] * len(items)
        self.stats.forward_s += time.perf_counter() - t0
        lengths = [int(it.n_tokens) for it in items]
        self.stats.items += len(items)
        self.stats.tokens += sum(lengths)
        self.stats.padded_tokens += max(lengths) * len(items) if self.padded else sum(lengths)
        self.stats.max_batch = max(self.stats.max_batch, len(items))
        return [float(s) for s in scores]


def _pack_sum(lengths: Sequence[int], batch_tokens: int, max_batch_size: int) -> list[list[int]]:
    """Like :func:`pack_batches` but the budget counts the sum of lengths (padding-free)."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    cur: list[int] = []
    total = 0
    for i in order:
        n = max(1, lengths[i])
        if cur and (len(cur) >= max_batch_size or total + n > batch_tokens):
            batches.append(cur)
            cur, total = [], 0
        cur.append(i)
        total += n
    if cur:
        batches.append(cur)
    return batches
