"""Where a finished prompt goes: the one interface between running prompts and keeping
their results.

The single-process runner and the Ray driver write through a
:class:`~toa_graph.synthesis.rundir.RunDirectory`; a Ray worker, which writes nothing,
runs the same prompt loop into a :class:`StreamSink` whose entries the worker streams
to the driver, which hands them to its ``RunDirectory``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, Literal, Protocol

SinkEntry = tuple[Literal["record", "failed"], dict[str, Any]]


class RecordSink(Protocol):
    """Receives each prompt's outcome: exactly one ``record`` or one ``failed`` call."""

    def record(self, record: dict[str, Any]) -> bool:
        """A finished prompt's record; returns whether it was kept (not a duplicate id)."""
        ...

    def failed(self, entry: dict[str, Any], wall_s: float = 0.0) -> None:
        """A prompt that failed: ``{"id", "line", "error"}`` (the failed.jsonl entry)."""
        ...


class StreamSink:
    """A :class:`RecordSink` that queues ``("record", record)`` / ``("failed", entry)``
    for someone else to deliver (a Ray worker's stream to its driver)."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[SinkEntry | None] = asyncio.Queue()

    def record(self, record: dict[str, Any]) -> bool:
        self.queue.put_nowait(("record", record))
        return True

    def failed(self, entry: dict[str, Any], wall_s: float = 0.0) -> None:
        self.queue.put_nowait(("failed", entry))

    def close(self) -> None:
        """No more entries: :meth:`batches` ends once it has delivered the queued ones."""
        self.queue.put_nowait(None)

    async def batches(self) -> AsyncIterator[list[SinkEntry]]:
        """Everything queued so far as one list per wake-up, until :meth:`close`."""
        finished = False
        while not finished:
            first = await self.queue.get()
            batch: list[SinkEntry] = [] if first is None else [first]
            finished = first is None
            while not finished and not self.queue.empty():
                nxt = self.queue.get_nowait()
                if nxt is None:
                    finished = True
                else:
                    batch.append(nxt)
            if batch:
                yield batch
