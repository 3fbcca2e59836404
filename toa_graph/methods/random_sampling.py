"""Random sampling: ``budget`` answers from one agent, the best by reward (the TOA paper's
single-agent baseline).

    START --> sample --> reward --> finish

``sample`` asks the agent (``context.agent``, default the first) for ``budget`` answers in
one request with ``n=budget`` where the endpoint supports it, else ``budget`` concurrent
requests. ``reward`` scores them in one call. Budget: exactly ``budget`` generations,
ids ``s0 .. s{budget-1}``, all ``kind="fresh"``, ``parent=None``, ``layer=0``.

Under a token or money limit the answers go out in waves, as in the ensemble
(:mod:`toa_graph.methods.ensemble`): each as many as fit at their worst case after what
the earlier waves spent, until the next one does not fit (``stopped_by``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from langgraph.graph import StateGraph
from langgraph.runtime import Runtime
from langgraph.types import Command

from toa_graph.agents import AgentPool, AgentsLike, as_agent_pool
from toa_graph.context import SamplingContext
from toa_graph.cost import step_fits
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
    single_agent,
    validate_prompt,
)
from toa_graph.state import SamplingState

__all__ = ["create_random_sampling_graph"]


def create_random_sampling_graph(
    agents: AgentsLike | AgentPool,
    reward: RewardLike,
    *,
    defaults: Mapping[str, Any] | None = None,
) -> StateGraph[Any, Any, Any, Any]:
    """Build the (uncompiled) random-sampling graph.

    Args:
        agents: ordered mapping name -> LangChain chat model or AgentConfig (or an
            AgentPool). Only ``context.agent`` (default: the first) is called.
        reward: a RewardModel or any sync/async ``(prompt, responses[, references])`` callable.
    """
    pool = as_agent_pool(agents)
    reward_model = as_reward_model(reward, agents=agents)
    read_context = ContextReader("random", defaults)

    async def sample(state: SamplingState, runtime: Runtime[SamplingContext]) -> dict[str, Any]:
        ctx = read_context(runtime)
        prompt = validate_prompt(state["prompt"])
        name = single_agent(pool, ctx)
        msgs = answer_messages(prompt, pool.system_prompt(name))
        done = state.get("samples") or []
        k, stop = step_fits(pool, ctx, done, [(name, msgs)] * (ctx.budget - len(done)))
        if k == 0:
            return {"stopped_by": stop}
        samples = await generate_samples(
            pool, name, msgs, ctx, sample_ids=[sample_id(len(done) + i) for i in range(k)],
            kind="fresh", parent=None, layer=0,
        )  # fmt: skip
        return {"inbox": samples}

    async def reward_node(
        state: SamplingState, runtime: Runtime[SamplingContext]
    ) -> Command[Literal["sample", "finish"]]:
        ctx = read_context(runtime)
        update = await score_inbox(reward_model, state, ctx)
        return Command(update=update, goto="sample" if another_wave(state, update, ctx) else FINISH)

    builder = method_builder("sample", read_context)
    builder.add_node("sample", sample)
    builder.add_node("reward", reward_node)
    builder.add_edge("sample", "reward")
    return builder
