"""PRS (preference-guided reflective sampling) baseline: sample, pick the best, refine it
(reference: ``PRS_thread`` in oceanypt/TOA ``code/ensemble_methods.py``).

    START --> sample --> reward --> refine --> reward --> finish
                                 \\-----------------------> finish  (nothing left to refine)

With one agent (``context.agent``, default the first):

1. ``sample``: ``ceil(budget / 2)`` fresh answers (one request with ``n`` where supported).
2. ``reward`` scores them in one call.
3. ``refine``: the best fresh answer is refined ``floor(budget / 2)`` times, all from the
   same parent and concurrently (one request with ``n``): ``kind="refine"``, ``parent`` =
   the best fresh sample's id, ``layer=1``.
4. ``reward`` scores the refinements in one call.

Budget: exactly ``budget`` generations; an odd budget gives the extra one to the fresh
half (budget 1 = one fresh answer, no refinement). If every fresh answer failed there is
nothing to refine, so the second half is spent on fresh answers (``kind="fresh"``).
If the reward failed for every fresh answer, the first one with text is refined.

Under a token or money limit each half is cut to the answers that fit at their worst case
(the refinements: after what the fresh half really spent); a cut half ends the run with
``stopped_by``.
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
    answer_messages,
    generate_samples,
    has_text,
    method_builder,
    refine_messages,
    sample_id,
    score_inbox,
    shown_text,
    single_agent,
    stopped,
    validate_prompt,
)
from toa_graph.state import SamplingState, ranked

__all__ = ["create_prs_graph", "prs_split"]


def prs_split(budget: int) -> tuple[int, int]:
    """``(fresh, refine)`` generations for a budget: the fresh half takes the odd one.

    >>> prs_split(7)
    (4, 3)
    """
    return budget - budget // 2, budget // 2


def create_prs_graph(
    agents: AgentsLike | AgentPool,
    reward: RewardLike,
    *,
    defaults: Mapping[str, Any] | None = None,
) -> StateGraph[Any, Any, Any, Any]:
    """Build the (uncompiled) PRS graph (single agent: ``context.agent``, default the first)."""
    pool = as_agent_pool(agents)
    reward_model = as_reward_model(reward, agents=agents)
    read_context = ContextReader("prs", defaults)

    async def sample(state: SamplingState, runtime: Runtime[SamplingContext]) -> dict[str, Any]:
        ctx = read_context(runtime)
        prompt = validate_prompt(state["prompt"])
        name = single_agent(pool, ctx)
        n_fresh, _ = prs_split(ctx.budget)
        msgs = answer_messages(prompt, pool.system_prompt(name))
        k, stop = step_fits(pool, ctx, [], [(name, msgs)] * n_fresh)
        samples = await generate_samples(
            pool, name, msgs, ctx, sample_ids=[sample_id(i) for i in range(k)],
            kind="fresh", parent=None, layer=0,
        ) if k else []  # fmt: skip
        return {"inbox": samples, "round": 1, **stopped(stop)}

    async def reward_node(
        state: SamplingState, runtime: Runtime[SamplingContext]
    ) -> Command[Literal["refine", "finish"]]:
        ctx = read_context(runtime)
        update = await score_inbox(reward_model, state, ctx)
        _, n_refine = prs_split(ctx.budget)
        refining = state.get("round", 0) == 1 and n_refine > 0 and not state.get("stopped_by")
        goto: Literal["refine", "finish"] = "refine" if refining else FINISH
        return Command(update=update, goto=goto)

    async def refine(state: SamplingState, runtime: Runtime[SamplingContext]) -> dict[str, Any]:
        ctx = read_context(runtime)
        prompt = state["prompt"]
        name = single_agent(pool, ctx)
        fresh = state.get("samples") or []
        _, n_refine = prs_split(ctx.budget)
        parent = next((s for s in ranked(fresh) if has_text(s)), None)
        if parent is None:  # nothing to refine: spend the rest on fresh answers
            msgs = answer_messages(prompt, pool.system_prompt(name))
        else:
            shown = shown_text(parent, ctx.show_reasoning)
            msgs = refine_messages(prompt, shown, pool.system_prompt(name))
        k, stop = step_fits(pool, ctx, fresh, [(name, msgs)] * n_refine)
        ids = [sample_id(len(fresh) + i) for i in range(k)]
        if not k:
            samples = []
        elif parent is None:
            samples = await generate_samples(
                pool, name, msgs, ctx, sample_ids=ids, kind="fresh", parent=None, layer=0
            )
        else:
            samples = await generate_samples(
                pool, name, msgs, ctx, sample_ids=ids, kind="refine", parent=parent["id"], layer=1
            )
        return {"inbox": samples, "round": 2, **stopped(stop)}

    builder = method_builder("sample", read_context)
    builder.add_node("sample", sample)
    builder.add_node("reward", reward_node)
    builder.add_node("refine", refine)
    builder.add_edge("sample", "reward")
    builder.add_edge("refine", "reward")
    return builder
