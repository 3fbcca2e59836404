"""Sequential refinement: the agents take turns, each improving the previous answer.

    START --> step --> step --> ... --> reward --> END

The agent order is the agents shuffled once with ``random.Random(context.seed)`` (the same
seed always gives the same order), then cycled. Step 0's agent answers the prompt
(``kind="fresh"``); step ``t > 0``'s agent refines step ``t-1``'s answer (``kind="refine"``,
``parent`` = that sample's id). A failed step is skipped over: the next agent refines the
latest answer that has text (or answers fresh if none has yet).

The chain is inherently sequential, and nothing in it depends on rewards, so the
generations are scored once at the end in a single reward call (no reward latency inside
the chain). Budget: exactly ``budget`` generations, one per step, ``layer`` = step index.
"""

from __future__ import annotations

import random
from typing import Any, Literal

from langgraph.graph import END, StateGraph
from langgraph.runtime import Runtime
from langgraph.types import Command

from toa_graph.agents import AgentPool, AgentsLike, as_agent_pool
from toa_graph.context import SamplingContext
from toa_graph.rewards.base import RewardLike, as_reward_model
from toa_graph.sampling import (
    answer_messages,
    context_of,
    generate_sample,
    has_text,
    method_builder,
    refine_messages,
    sample_id,
    score_inbox,
    validate_prompt,
)
from toa_graph.state import SamplingState

__all__ = ["agent_order", "create_seq_refine_graph"]


def agent_order(names: list[str], seed: int) -> list[str]:
    """The turn order: ``names`` shuffled by ``seed`` (deterministic), cycled by the graph."""
    order = list(names)
    random.Random(seed).shuffle(order)
    return order


def create_seq_refine_graph(
    agents: AgentsLike | AgentPool,
    reward: RewardLike,
) -> StateGraph[Any, Any, Any, Any]:
    """Build the (uncompiled) sequential-refinement graph over every agent in ``agents``."""
    pool = as_agent_pool(agents)
    reward_model = as_reward_model(reward)

    async def step(
        state: SamplingState, runtime: Runtime[SamplingContext]
    ) -> Command[Literal["step", "reward"]]:
        ctx = context_of(runtime)
        prompt = validate_prompt(state["prompt"])
        done = state.get("inbox") or []
        t = len(done)
        name = agent_order(pool.names, ctx.seed)[t % len(pool)]
        system = pool.system_prompt(name)
        previous = next((s for s in reversed(done) if has_text(s)), None)
        if previous is None:
            sample = await generate_sample(
                pool, name, answer_messages(prompt, system), ctx,
                sample_id=sample_id(t), kind="fresh", parent=None, layer=t,
            )  # fmt: skip
        else:
            sample = await generate_sample(
                pool, name, refine_messages(prompt, previous["text"], system), ctx,
                sample_id=sample_id(t), kind="refine", parent=previous["id"], layer=t,
            )  # fmt: skip
        return Command(update={"inbox": [sample]}, goto="step" if t + 1 < ctx.budget else "reward")

    async def reward_node(state: SamplingState) -> dict[str, Any]:
        return await score_inbox(reward_model, state)

    builder = method_builder("step")
    builder.add_node("step", step)
    builder.add_node("reward", reward_node)
    builder.add_edge("reward", END)
    return builder
