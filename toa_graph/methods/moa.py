"""Mixture-of-Agents (arXiv 2406.04692): layers of agents, each reading the previous layer.

    START --> dispatch --Send--> propose (one per agent, concurrently) --> reward --> dispatch
                       --Send--> aggregate (final aggregator, optional) --> reward --> dispatch
              dispatch --> END once the plan is done

Layer 0: every agent answers the prompt (``kind="fresh"``). Layer ``l > 0``: every agent
answers again with the previous layer's answers injected into the system message as
"## Response i" blocks (``AGGREGATE_SYSTEM``): ``kind="aggregate"``, ``references`` = the
ids shown, ``parent`` = the highest-reward one of them. Shown are the previous layer's
answers that have text, best first by reward, the first ``context.num_references`` of
them (default: all). A layer whose predecessor produced nothing usable reads the latest
earlier layer that did (or answers fresh if none did). ``reward`` scores each layer in one
call, so the next layer can put the best answers first.

Budget (exactly ``budget`` generations; ``P = budget``, or ``budget - 1`` with a final
aggregator, which takes the last generation):

- ``context.layers`` unset: layers of ``n_agents`` answers until ``P`` is spent; a partial
  last layer uses the first ``P % n_agents`` agents.
- ``context.layers = L``: ``P`` is spread over ``min(L, P)`` layers as evenly as possible
  (earlier layers get the extra); inside a layer the share is split over the agents the
  same way, an agent with ``k > 1`` answers being asked once with ``n=k``.

With ``aggregator="name"`` (a factory argument), that agent writes one final answer from
the last layer's answers (``kind="aggregate"``, ``layer`` = number of proposer layers).
With ``budget=1`` and an aggregator there is no proposer layer and the aggregator simply
answers (``kind="fresh"``).
"""

from __future__ import annotations

from typing import Any, Literal, cast

from langgraph.graph import StateGraph
from langgraph.runtime import Runtime
from langgraph.types import Command, Send
from typing_extensions import TypedDict

from toa_graph.agents import AgentPool, AgentsLike, as_agent_pool
from toa_graph.context import SamplingContext
from toa_graph.rewards.base import RewardLike, as_reward_model
from toa_graph.sampling import (
    aggregate_messages,
    answer_messages,
    context_of,
    even_split,
    generate_samples,
    has_text,
    method_builder,
    ranked,
    sample_id,
    score_inbox,
    validate_prompt,
)
from toa_graph.state import (
    Prompt,
    Sample,
    SamplingState,
)

__all__ = ["create_moa_graph", "moa_plan"]


class LayerTask(TypedDict):
    """One agent's answers in one layer, with the earlier answers it is shown."""

    agent: str
    prompt: Prompt
    sample_ids: list[str]
    layer: int
    references: list[dict[str, str]]
    """``{"id", "text"}`` of every answer shown, best first."""


def moa_plan(
    budget: int, n_agents: int, layers: int | None = None, aggregator: bool = False
) -> list[int]:
    """Generations per proposer layer for a budget (the aggregator's one is not listed).

    >>> moa_plan(10, 4)
    [4, 4, 2]
    >>> moa_plan(10, 4, layers=3, aggregator=True)
    [3, 3, 3]
    """
    if layers is not None and layers < 1:
        raise ValueError(f"context.layers must be >= 1, got {layers}")
    proposers = budget - 1 if aggregator else budget
    if proposers <= 0:
        return []
    if layers is None:
        full, rest = divmod(proposers, n_agents)
        return [n_agents] * full + ([rest] if rest else [])
    return even_split(proposers, min(layers, proposers))


def _references(samples: list[Sample], layer: int, num_references: int | None) -> list[Sample]:
    """The answers shown at ``layer``: the latest earlier layer's usable ones, best first."""
    for prev in range(layer - 1, -1, -1):
        usable = [s for s in samples if s["layer"] == prev and has_text(s)]
        if usable:
            return ranked(usable)[:num_references]
    return []


def create_moa_graph(
    agents: AgentsLike | AgentPool,
    reward: RewardLike,
    *,
    aggregator: str | None = None,
) -> StateGraph[Any, Any, Any, Any]:
    """Build the (uncompiled) MoA graph.

    Args:
        agents: the proposers, in order (a partial layer uses the first ones).
        reward: a RewardModel or any sync/async ``(prompt, responses[, references])`` callable.
        aggregator: name of an agent (one of ``agents``) that writes a final aggregated
            answer from the last layer; it costs one generation of the budget.

    Per-run knobs: ``budget``, ``layers``, ``num_references``, ``temperature``, ``max_tokens``.
    """
    pool = as_agent_pool(agents)
    reward_model = as_reward_model(reward)
    if aggregator is not None and aggregator not in pool:
        raise ValueError(f"aggregator {aggregator!r} is not one of the agents {pool.names}")

    def dispatch(
        state: SamplingState, runtime: Runtime[SamplingContext]
    ) -> Command[Literal["propose", "aggregate", "__end__"]]:
        ctx = context_of(runtime)
        prompt = validate_prompt(state["prompt"])
        plan = moa_plan(ctx.budget, len(pool), ctx.layers, aggregator is not None)
        layer = state.get("round", 0)
        samples = state.get("samples") or []
        refs = [
            {"id": s["id"], "text": s["text"]}
            for s in _references(samples, layer, ctx.num_references)
        ]
        start = len(samples)
        if layer < len(plan):
            sends = []
            for name, k in zip(pool.names, even_split(plan[layer], len(pool)), strict=True):
                if k:
                    ids = [sample_id(start + j) for j in range(k)]
                    task = LayerTask(
                        agent=name, prompt=prompt, sample_ids=ids, layer=layer, references=refs
                    )
                    sends.append(Send("propose", task))
                    start += k
            return Command(update={"round": layer + 1}, goto=sends)
        if aggregator is not None and layer == len(plan):
            task = LayerTask(
                agent=aggregator,
                prompt=prompt,
                sample_ids=[sample_id(start)],
                layer=layer,
                references=refs,
            )
            return Command(update={"round": layer + 1}, goto=Send("aggregate", task))
        return Command(goto="__end__")

    async def _answer(task: LayerTask, ctx: SamplingContext) -> dict[str, Any]:
        name, refs = task["agent"], task["references"]
        system = pool.system_prompt(name)
        if not refs:
            samples = await generate_samples(
                pool, name, answer_messages(task["prompt"], system), ctx,
                sample_ids=task["sample_ids"], kind="fresh", parent=None, layer=task["layer"],
            )  # fmt: skip
        else:
            msgs = aggregate_messages(task["prompt"], [r["text"] for r in refs], system)
            samples = await generate_samples(
                pool, name, msgs, ctx,
                sample_ids=task["sample_ids"], kind="aggregate", parent=refs[0]["id"],
                layer=task["layer"], references=[r["id"] for r in refs],
            )  # fmt: skip
        return {"inbox": samples}

    async def propose(task: LayerTask, runtime: Runtime[SamplingContext]) -> dict[str, Any]:
        return await _answer(task, context_of(runtime))

    async def aggregate(task: LayerTask, runtime: Runtime[SamplingContext]) -> dict[str, Any]:
        return await _answer(task, context_of(runtime))

    async def reward_node(state: SamplingState) -> dict[str, Any]:
        return await score_inbox(reward_model, state)

    builder = method_builder("dispatch")
    builder.add_node("dispatch", dispatch)
    builder.add_node("propose", cast(Any, propose))  # a Send target: takes a LayerTask
    builder.add_node("aggregate", cast(Any, aggregate))
    builder.add_node("reward", reward_node)
    builder.add_edge("propose", "reward")
    builder.add_edge("aggregate", "reward")
    builder.add_edge("reward", "dispatch")
    return builder
