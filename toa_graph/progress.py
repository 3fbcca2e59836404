"""Live progress of one method run, the same for every method.

TOA reports each backed-up step as a custom stream event (``{"event": "toa_step", ...}``
from ``get_stream_writer``); the other methods are followed through their ``updates``
stream (each node update that appends ``samples``). :func:`astream_run` merges both into
one sequence of :class:`Progress` reports and ends with the run's output, so the chat
REPL and the OpenAI-compatible server show the search the same way.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from toa_graph.state import Sample, best_sample

__all__ = ["Progress", "RunResult", "astream_run"]

_OUTPUT_KEYS = ("samples", "best", "tree")


@dataclass(frozen=True)
class Progress:
    """Where a run stands: generations done out of the budget, and the best so far."""

    generations: int
    budget: int | None
    best_reward: float | None
    best_agent: str | None
    new: list[dict[str, Any]] = field(default_factory=list)
    """The samples (id, agent, kind, parent, reward) finished since the last report."""

    def to_json(self) -> dict[str, Any]:
        return {
            "generations": self.generations,
            "budget": self.budget,
            "best_reward": self.best_reward,
            "best_agent": self.best_agent,
            "new": self.new,
        }


@dataclass(frozen=True)
class RunResult:
    """The final output of a run (``samples``, ``best``, ``tree``)."""

    output: dict[str, Any]


def _brief(s: Sample) -> dict[str, Any]:
    return {k: s.get(k) for k in ("id", "agent", "kind", "parent", "reward")}


async def astream_run(
    graph: Any, inp: dict[str, Any], context: Any, *, budget: int | None = None
) -> AsyncIterator[Progress | RunResult]:
    """Run ``graph`` on ``inp``; yield a :class:`Progress` whenever the count of finished
    generations or the best reward changes, then one :class:`RunResult`."""
    samples: list[Sample] = []
    last_values: dict[str, Any] = {}
    reported: tuple[int, float | None] = (0, None)
    async for mode, chunk in graph.astream(
        inp, context=context, stream_mode=["custom", "updates", "values"]
    ):
        report: Progress | None = None
        if mode == "values":
            last_values = chunk
            continue
        if mode == "custom":
            if isinstance(chunk, dict) and chunk.get("event") == "toa_step":
                report = Progress(
                    generations=int(chunk.get("plays") or 0),
                    budget=chunk.get("budget", budget),
                    best_reward=chunk.get("best_reward"),
                    best_agent=chunk.get("best_agent"),
                    new=list(chunk.get("new") or []),
                )
        elif mode == "updates" and isinstance(chunk, dict):
            new: list[Sample] = []
            for update in chunk.values():
                got = update.get("samples") if isinstance(update, dict) else None
                if isinstance(got, list):
                    new.extend(got)
            if new:
                samples.extend(new)
                best = best_sample(samples)
                report = Progress(
                    generations=len(samples),
                    budget=budget,
                    best_reward=best["reward"] if best else None,
                    best_agent=best["agent"] if best else None,
                    new=[_brief(s) for s in new],
                )
        if report is not None and (report.generations, report.best_reward) != reported:
            reported = (report.generations, report.best_reward)
            yield report
    yield RunResult({k: last_values.get(k) for k in _OUTPUT_KEYS})
