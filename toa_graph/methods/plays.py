"""The play nodes shared by the tree searches (TOA, AB-MCTS): a controller picks plays, each
play is a fresh answer (parent = the root) or a refinement of an earlier response, and the
step's plays go out as one ``Send`` per node kind (``agent`` / ``refine``).

A play is any mapping with ``index`` (its 0-based generation number: the sample id is
``s<index>``), ``agent``, ``kind`` (``"fresh"`` or ``"refine"``), ``parent_sample`` (the
sample refined, ``None`` for a fresh answer) and ``layer``.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Mapping, Sequence
from typing import Any

from langgraph.config import get_stream_writer
from langgraph.graph import StateGraph
from langgraph.runtime import Runtime
from langgraph.types import Send
from typing_extensions import TypedDict

from toa_graph.agents import AgentPool
from toa_graph.context import SamplingContext
from toa_graph.cost import fit, play_bounds
from toa_graph.sampling import (
    ContextReader,
    answer_messages,
    generate_sample,
    method_builder,
    refine_messages,
    sample_id,
    sample_index,
    shown_text,
)
from toa_graph.state import Prompt, Sample

__all__ = [
    "PlayTask",
    "affordable_plays",
    "play_node",
    "report_step",
    "route_plays",
    "search_builder",
    "text_of",
]


class PlayTask(TypedDict):
    """What a controller sends to an ``agent`` / ``refine`` node: the step's plays of
    that kind (one ``Send`` per kind, not per play: LangGraph's cost is per task) and,
    for refine plays, each parent's text."""

    plays: list[Any]
    prompt: Prompt
    parent_texts: list[str | None]


def text_of(samples: Sequence[Sample], new: Sequence[Sample], sid: str, trace: bool = False) -> str:
    """What a refinement is shown of sample ``sid`` in ``samples`` then ``new``: its
    answer (with ``trace``, its thinking too). Samples are kept in generation order, so
    ``s<N>`` is normally at index N (looked up directly, not by building an id map)."""
    i = sample_index(sid)
    j = i - len(samples)
    if i < len(samples) and samples[i]["id"] == sid:
        found = samples[i]
    elif 0 <= j < len(new) and new[j]["id"] == sid:
        found = new[j]
    else:
        found = next(s for s in itertools.chain(samples, new) if s["id"] == sid)
    return shown_text(found, trace)


def route_plays(
    plays: Sequence[Mapping[str, Any]],
    prompt: Prompt,
    samples: Sequence[Sample],
    new: Sequence[Sample] = (),
    trace: bool = False,
) -> list[Send]:
    """One ``Send`` per node kind holding that kind's plays, in selection order; ``samples``
    + ``new`` (this step's, not yet in state) hold the parents' texts (``trace``: the
    ``show_reasoning`` knob, parents' thinking shown too)."""
    tasks: dict[str, PlayTask] = {}
    for play in plays:
        parent = play["parent_sample"]
        node = "refine" if play["kind"] == "refine" else "agent"
        task = tasks.setdefault(node, PlayTask(plays=[], prompt=prompt, parent_texts=[]))
        task["plays"].append(play)
        task["parent_texts"].append(text_of(samples, new, parent, trace) if parent else None)
    return [Send(node, task) for node, task in tasks.items()]


def affordable_plays(
    pool: AgentPool,
    prompt: Prompt,
    ctx: SamplingContext,
    samples: Sequence[Sample],
    new: Sequence[Sample],
    n: int,
) -> tuple[int, str | None]:
    """How many of ``n`` plays fit the run's token / money limits, each at the worst case
    of any play a tree search could pick: any agent, fresh or refining the longest answer
    so far (TOA and AB-MCTS choose the play only after this check)."""
    done = [*samples, *new]
    longest = max(
        (shown_text(s, ctx.show_reasoning) for s in done),
        key=lambda t: len(t.encode("utf-8")),
        default=None,
    )
    candidates = []
    for name in pool.names:
        system = pool.system_prompt(name)
        candidates.append((name, answer_messages(prompt, system)))
        if longest is not None:
            candidates.append((name, refine_messages(prompt, longest, system)))
    bounds = play_bounds(pool, ctx, candidates)
    worst = (max(t for t, _ in bounds), max(c for _, c in bounds))
    return fit(done, [worst] * n, ctx)


def play_node(pool: AgentPool, read_context: ContextReader) -> Any:
    """The ``agent`` and ``refine`` nodes: run a task's plays concurrently."""

    async def play_out(
        play: Mapping[str, Any], prompt: Prompt, parent_text: str | None, ctx: SamplingContext
    ) -> Sample:
        """One play: a fresh answer, or a refinement of ``parent_text``."""
        system = pool.system_prompt(play["agent"])
        if play["kind"] == "refine":
            msgs = refine_messages(prompt, parent_text or "", system)
        else:
            msgs = answer_messages(prompt, system)
        return await generate_sample(
            pool, play["agent"], msgs, ctx,
            sample_id=sample_id(play["index"]), kind=play["kind"],
            parent=play["parent_sample"], layer=play["layer"],
        )  # fmt: skip

    async def generate(task: PlayTask, runtime: Runtime[SamplingContext]) -> dict[str, Any]:
        ctx = read_context(runtime)
        plays, texts, prompt = task["plays"], task["parent_texts"], task["prompt"]
        if len(plays) == 1:
            return {"inbox": [await play_out(plays[0], prompt, texts[0], ctx)]}
        samples = await asyncio.gather(
            *(play_out(p, prompt, t, ctx) for p, t in zip(plays, texts, strict=True))
        )
        return {"inbox": list(samples)}

    return generate


def report_step(
    played: int,
    budget: int,
    plays: Sequence[Mapping[str, Any]],
    by_id: Mapping[str, Sample],
    best: Sample | None,
) -> None:
    """Stream one backed-up step as the ``toa_step`` custom event (Studio, chat, server
    progress): plays so far, the step's new samples, the run's best."""
    get_stream_writer()(
        {
            "event": "toa_step",
            "plays": played,
            "budget": budget,
            "new": [
                {"id": sample_id(p["index"]), "agent": p["agent"], "kind": p["kind"],
                 "parent": p["parent_sample"], "reward": by_id[sample_id(p["index"])]["reward"]}
                for p in plays
            ],
            "best_reward": best["reward"] if best else None,
            "best_agent": best["agent"] if best else None,
        }
    )  # fmt: skip


def search_builder(
    pool: AgentPool, read_context: ContextReader, controller: Any, reward: Any
) -> StateGraph[Any, Any, Any, Any]:
    """A tree search's graph: ``controller`` (the first selection) sends plays to the
    ``agent`` / ``refine`` nodes, both feed ``reward`` (which scores, records and sends the
    next step, or finishes)."""
    builder = method_builder("controller", read_context)
    builder.add_node("controller", controller)
    generate = play_node(pool, read_context)
    builder.add_node("agent", generate)  # Send targets: take a PlayTask
    builder.add_node("refine", generate)
    builder.add_node("reward", reward)
    builder.add_edge("agent", "reward")
    builder.add_edge("refine", "reward")
    return builder
