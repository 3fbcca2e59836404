"""Parallel ensemble: the budget split over the agents, every agent asked at once
(reference: ``sample_N_thread`` in oceanypt/TOA ``code/ensemble_methods.py``).

    START --> dispatch --Send--> agent (one per agent, concurrently) --> reward --> finish

``dispatch`` splits ``budget`` over the agents as evenly as possible in agent order (the
first ``budget % n_agents`` agents get one more; agents with a share of 0 are not called)
and sends each agent its share ``k``: one request with ``n=k`` where the endpoint supports
it, else ``k`` concurrent requests. ``reward`` scores all answers in one call.

Budget: exactly ``budget`` generations. Ids follow agent order then choice order (agent 0
gets ``s0 .. s{k0-1}``, agent 1 the next ``k1`` ...); all ``kind="fresh"``, ``parent=None``,
``layer=0``.

Under a token or money limit (``max_tokens_per_prompt`` / ``max_cost_per_prompt``) the
answers go out in waves: each wave is as many of the remaining answers (taken round-robin
over the agents, so the split stays even) as fit the limit at their worst case given what
the earlier waves really spent; the run stops when the next answer does not fit
(``stopped_by``) or the budget is spent.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, cast

from langgraph.graph import StateGraph
from langgraph.runtime import Runtime
from langgraph.types import Command, Send
from typing_extensions import TypedDict

from toa_graph.agents import AgentPool, AgentsLike, as_agent_pool
from toa_graph.context import SamplingContext
from toa_graph.cost import has_limits, step_fits
from toa_graph.rewards.base import RewardLike, as_reward_model
from toa_graph.sampling import (
    FINISH,
    ContextReader,
    another_wave,
    answer_messages,
    generate_samples,
    method_builder,
    sample_id,
    score_inbox,
    validate_prompt,
)
from toa_graph.state import Prompt, SamplingState

__all__ = ["create_ensemble_graph"]


class AgentTask(TypedDict):
    """One agent's share of the budget."""

    agent: str
    prompt: Prompt
    sample_ids: list[str]


def create_ensemble_graph(
    agents: AgentsLike | AgentPool,
    reward: RewardLike,
    *,
    defaults: Mapping[str, Any] | None = None,
) -> StateGraph[Any, Any, Any, Any]:
    """Build the (uncompiled) parallel-ensemble graph over every agent in ``agents``."""
    pool = as_agent_pool(agents)
    reward_model = as_reward_model(reward, agents=agents)
    read_context = ContextReader("ensemble", defaults)

    def dispatch(
        state: SamplingState, runtime: Runtime[SamplingContext]
    ) -> Command[Literal["agent", "finish"]]:
        ctx = read_context(runtime)
        prompt = validate_prompt(state["prompt"])
        samples = state.get("samples") or []
        done = len(samples)
        # the budget round-robin over the agents: its counts are even_split(budget, n)
        order = [pool.names[i % len(pool)] for i in range(done, ctx.budget)]
        if has_limits(ctx):
            msgs = {a: answer_messages(prompt, pool.system_prompt(a)) for a in set(order)}
            k, stop = step_fits(pool, ctx, samples, [(a, msgs[a]) for a in order])
            if k == 0:
                return Command(update={"stopped_by": stop}, goto=FINISH)
            order = order[:k]
        sends, start = [], done
        for name in pool.names:
            k = order.count(name)
            if k:
                ids = [sample_id(start + j) for j in range(k)]
                sends.append(Send("agent", AgentTask(agent=name, prompt=prompt, sample_ids=ids)))
                start += k
        return Command(goto=sends)

    async def agent(task: AgentTask, runtime: Runtime[SamplingContext]) -> dict[str, Any]:
        name = task["agent"]
        samples = await generate_samples(
            pool, name, answer_messages(task["prompt"], pool.system_prompt(name)), read_context(runtime),
            sample_ids=task["sample_ids"], kind="fresh", parent=None, layer=0,
        )  # fmt: skip
        return {"inbox": samples}

    async def reward_node(
        state: SamplingState, runtime: Runtime[SamplingContext]
    ) -> Command[Literal["dispatch", "finish"]]:
        ctx = read_context(runtime)
        update = await score_inbox(reward_model, state, ctx)
        return Command(
            update=update, goto="dispatch" if another_wave(state, update, ctx) else FINISH
        )

    builder = method_builder("dispatch", read_context)
    builder.add_node("dispatch", dispatch)
    builder.add_node("agent", cast(Any, agent))  # a Send target: takes an AgentTask
    builder.add_node("reward", reward_node)
    builder.add_edge("agent", "reward")
    return builder
