"""Sequential refinement as the TOA paper's baseline ran it (reference: ``Seq_thread`` in
oceanypt/TOA ``code/ensemble_methods.py``): independent chains of one step per agent.

    START --> plan --Send--> chain (one per chain, concurrently) --> reward --> finish

A budget of ``n x n_agents`` generations is ``n`` chains; a last partial chain is cut at the
budget. Each chain orders the agents by its own shuffle; its first step answers the prompt
(``kind="fresh"``), each next step refines the previous step's answer (``kind="refine"``,
``parent`` = that sample's id). A failed step is skipped over: the next step refines the
chain's latest answer that has text (or answers fresh if none has yet).

Deviation from the reference, on purpose: the reference draws every chain's shuffle from one
global RNG and runs the chains one after the other. Here chain ``c``'s shuffle comes from
``random.Random(f"seq_refine:{seed}:{c}")`` and sample ids from ``(c, step)``, so the chains
run concurrently and, for a given ``context.seed``, the samples and their parent links are the
same whatever order the chains finish in.

Nothing depends on rewards, so all generations are scored once at the end in one reward
call. ``layer`` = the step within the chain, ``chain`` = the chain index.

Under a token or money limit the plan is cut before any call, chain by chain and step by
step, at the first step that does not fit at its worst case. A refine step's prompt is
bounded by its template and question plus the previous step's ``max_tokens`` (the answer
it shows, counted as the tokens it was written in): the chains run at once, so the
answers' real lengths are not known when the plan is made.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any, cast

from langgraph.graph import StateGraph
from langgraph.runtime import Runtime
from langgraph.types import Command, Send
from typing_extensions import TypedDict

from toa_graph.agents import AgentPool, AgentsLike, as_agent_pool
from toa_graph.context import SamplingContext
from toa_graph.cost import fit, has_limits, play_bounds
from toa_graph.rewards.base import RewardLike, as_reward_model
from toa_graph.sampling import (
    FINISH,
    ContextReader,
    answer_messages,
    generate_sample,
    has_text,
    method_builder,
    refine_messages,
    sample_id,
    score_inbox,
    shown_text,
    stopped,
    validate_prompt,
)
from toa_graph.state import Prompt, Sample, SampleKind, SamplingState

__all__ = ["agent_order", "chain_lengths", "create_seq_refine_graph"]


def agent_order(names: list[str], seed: int, chain: int = 0) -> list[str]:
    """Chain ``chain``'s agent order: ``names`` shuffled by ``(seed, chain)`` (deterministic)."""
    order = list(names)
    random.Random(f"seq_refine:{seed}:{chain}").shuffle(order)
    return order


def chain_lengths(budget: int, n_agents: int) -> list[int]:
    """Steps per chain: full chains of ``n_agents``, the last one cut at the budget.

    >>> chain_lengths(7, 3)
    [3, 3, 1]
    """
    full, rest = divmod(budget, n_agents)
    return [n_agents] * full + ([rest] if rest else [])


class ChainTask(TypedDict):
    """One chain: its agents in order and the ids its steps will carry."""

    prompt: Prompt
    chain: int
    agents: list[str]
    sample_ids: list[str]


def create_seq_refine_graph(
    agents: AgentsLike | AgentPool,
    reward: RewardLike,
    *,
    defaults: Mapping[str, Any] | None = None,
) -> StateGraph[Any, Any, Any, Any]:
    """Build the (uncompiled) sequential-refinement graph over every agent in ``agents``.

    Per-run knobs: ``budget``, ``seed``, ``temperature``, ``max_tokens``.
    """
    pool = as_agent_pool(agents)
    reward_model = as_reward_model(reward, agents=agents)
    read_context = ContextReader("seq_refine", defaults)

    def _cut(prompt: Prompt, ctx: SamplingContext, chains: list[list[str]]) -> str | None:
        """Cut ``chains`` (in place) at the first step that does not fit the limits."""
        steps = [(c, j, a) for c, agents in enumerate(chains) for j, a in enumerate(agents)]
        plays = []
        for _, j, a in steps:  # a refine step's answer shown is added below
            system = pool.system_prompt(a)
            msgs = refine_messages(prompt, "", system) if j else answer_messages(prompt, system)
            plays.append((a, msgs))
        bounds = play_bounds(pool, ctx, plays)
        for i, (c, j, _) in enumerate(steps):
            if j:  # the previous step's answer, shown
                before = chains[c][j - 1]
                extra = ctx.max_tokens or pool.max_tokens(before) or 0
                prices = pool.prices(steps[i][2])
                rate = prices.input / 1_000_000 if prices else 0.0
                bounds[i] = (bounds[i][0] + extra, bounds[i][1] + extra * rate)
        k, stop = fit([], bounds, ctx)
        for c, j, _ in steps[k:]:
            del chains[c][j:]
        chains[:] = [agents for agents in chains if agents]
        return stop

    def plan(state: SamplingState, runtime: Runtime[SamplingContext]) -> Command[Any]:
        ctx = read_context(runtime)
        prompt = validate_prompt(state["prompt"])
        n = len(pool)
        chains = [
            agent_order(pool.names, ctx.seed, c)[:steps]
            for c, steps in enumerate(chain_lengths(ctx.budget, n))
        ]
        stop = _cut(prompt, ctx, chains) if has_limits(ctx) else None
        sends = [
            Send(
                "chain",
                ChainTask(
                    prompt=prompt,
                    chain=c,
                    agents=agents,
                    sample_ids=[sample_id(c * n + j) for j in range(len(agents))],
                ),
            )
            for c, agents in enumerate(chains)
        ]
        return Command(update=stopped(stop), goto=sends or "reward")

    async def chain(task: ChainTask, runtime: Runtime[SamplingContext]) -> dict[str, Any]:
        ctx = read_context(runtime)
        prompt, done = task["prompt"], cast(list[Sample], [])
        for step, (name, sid) in enumerate(zip(task["agents"], task["sample_ids"], strict=True)):
            system = pool.system_prompt(name)
            previous = next((s for s in reversed(done) if has_text(s)), None)
            kind: SampleKind = "fresh" if previous is None else "refine"
            if previous is None:
                msgs, parent = answer_messages(prompt, system), None
            else:
                shown = shown_text(previous, ctx.show_reasoning)
                msgs, parent = refine_messages(prompt, shown, system), previous["id"]
            sample = await generate_sample(
                pool, name, msgs, ctx, sample_id=sid, kind=kind, parent=parent, layer=step,
                chain=task["chain"],
            )  # fmt: skip
            done.append(sample)
        return {"inbox": done}

    async def reward_node(
        state: SamplingState, runtime: Runtime[SamplingContext]
    ) -> dict[str, Any]:
        return await score_inbox(reward_model, state, read_context(runtime))

    builder = method_builder("plan", read_context)
    builder.add_node("plan", plan, destinations=("chain", "reward"))
    builder.add_node("chain", cast(Any, chain))  # a Send target: takes a ChainTask
    builder.add_node("reward", reward_node)
    builder.add_edge("chain", "reward")
    builder.add_edge("reward", FINISH)
    return builder
