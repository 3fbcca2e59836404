"""Mixture-of-Agents as the TOA paper's baseline ran it (reference: ``MoA_thread`` in
oceanypt/TOA ``code/ensemble_methods.py``), with Together MoA's final aggregator
(togethercomputer/MoA ``generate_for_alpaca_eval.py``, ``utils.py``) as an option.

    START --> dispatch --Send--> propose (one per stack x agent, concurrently) --> dispatch
                       --Send--> aggregate (one per stack, optional) --> dispatch
              dispatch --> reward --> finish

Independent *stacks* of ``context.layers`` layers (default 4, the paper's runs). Layer 0 of a
stack: every agent answers the prompt (``kind="fresh"``). Layer ``l > 0``: every agent answers
again with the previous layer's answers of THAT stack injected as references (each agent's
latest answer with text, in agent order): the aggregator prompt in the system message, then
"## Response i:" blocks (``AGGREGATE_SYSTEM``); ``kind="aggregate"``, ``references`` = the ids
shown, ``parent`` = the agent's own previous answer (else the first reference). With
``context.num_references`` below the number of agents, each call sees a random subset of that
many, drawn from ``(seed, stack, layer, agent)`` and kept in agent order. Stacks repeat until
the budget is spent: ``budget = stacks x layers x n_agents``, the last stack cut at the
budget (a partial last layer uses the first agents). The stacks run side by side: layer ``l``
of every stack is one superstep.

Rewards play no part inside MoA: every answer is scored once at the end and the best wins.

Together-MoA option: ``aggregator="name"`` (a factory argument) makes that agent write one
final answer from the last layer of each stack (``kind="aggregate"``);
each such answer counts against the budget (a stack then costs ``layers x n_agents + 1``;
``layer`` = the stack's number of proposer layers)
and the output's ``final`` is the aggregator answer with the highest reward.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, cast

from langgraph.graph import StateGraph
from langgraph.runtime import Runtime
from langgraph.types import Command, Send
from typing_extensions import TypedDict

from toa_graph.agents import AgentPool, AgentsLike, as_agent_pool
from toa_graph.context import SamplingContext
from toa_graph.rewards.base import RewardLike, as_reward_model
from toa_graph.sampling import (
    FINISH,
    ContextReader,
    aggregate_messages,
    answer_messages,
    generate_sample,
    has_text,
    in_generation_order,
    method_builder,
    sample_id,
    score_inbox,
    validate_prompt,
)
from toa_graph.state import Prompt, Sample, SamplingState, best_sample

__all__ = ["StackPlan", "create_moa_graph", "final_ids", "moa_plan"]


@dataclass(frozen=True)
class StackPlan:
    """One stack: answers per proposer layer, and whether the final aggregator runs."""

    layers: list[int]
    aggregate: bool


def moa_plan(
    budget: int, n_agents: int, layers: int = 4, aggregator: bool = False
) -> list[StackPlan]:
    """The stacks a budget pays for; the last one cut at the budget.

    >>> [s.layers for s in moa_plan(12, 3, layers=2)]
    [[3, 3], [3, 3]]
    >>> [(s.layers, s.aggregate) for s in moa_plan(10, 3, layers=2, aggregator=True)]
    [([3, 3], True), ([2], True)]
    """
    if layers < 1:
        raise ValueError(f"context.layers must be >= 1, got {layers}")
    stacks: list[StackPlan] = []
    left = budget
    while left > 0:
        proposers = min(left - 1, layers * n_agents) if aggregator else min(left, layers * n_agents)
        full, rest = divmod(proposers, n_agents)
        stacks.append(StackPlan([n_agents] * full + ([rest] if rest else []), aggregator))
        left -= proposers + (1 if aggregator else 0)
    return stacks


def _stack_offsets(plan: list[StackPlan]) -> list[int]:
    """Index of each stack's first generation (ids are issued stack by stack)."""
    offsets = [0]
    for st in plan:
        offsets.append(offsets[-1] + sum(st.layers) + int(st.aggregate))
    return offsets


def final_ids(plan: list[StackPlan]) -> list[str]:
    """Ids of the final aggregator's answers, one per stack that has one."""
    offsets = _stack_offsets(plan)
    return [sample_id(offsets[i] + sum(st.layers)) for i, st in enumerate(plan) if st.aggregate]


class LayerTask(TypedDict):
    """One agent's answer in one layer of one stack, with the answers it is shown."""

    agent: str
    prompt: Prompt
    sample_id: str
    stack: int
    layer: int
    final: bool
    """The final aggregator's call (Together MoA option)."""
    parent: str | None
    references: list[dict[str, str]]
    """``{"id", "text"}`` of every answer shown, in agent order."""


def _latest(stack_samples: list[Sample], agent: str, before_layer: int) -> Sample | None:
    """``agent``'s latest answer with text in a stack, below ``before_layer``."""
    own = [
        s
        for s in stack_samples
        if s["agent"] == agent and s["layer"] < before_layer and has_text(s)
    ]
    return own[-1] if own else None


def _shown(
    stack_samples: list[Sample], names: list[str], layer: int, k: int | None, rng: random.Random
) -> list[Sample]:
    """The references at ``layer``: each agent's latest answer, in agent order, or a random
    subset of ``k`` of them (still in agent order)."""
    latest = [s for s in (_latest(stack_samples, a, layer) for a in names) if s is not None]
    if k is None or k >= len(latest):
        return latest
    keep = set(rng.sample(range(len(latest)), k))
    return [s for i, s in enumerate(latest) if i in keep]


def create_moa_graph(
    agents: AgentsLike | AgentPool,
    reward: RewardLike,
    *,
    defaults: Mapping[str, Any] | None = None,
    aggregator: str | None = None,
) -> StateGraph[Any, Any, Any, Any]:
    """Build the (uncompiled) MoA graph.

    Args:
        agents: the proposers, in order (a partial layer uses the first ones).
        reward: a RewardModel or any sync/async ``(prompt, responses[, references])`` callable.
        aggregator: Together MoA's final aggregator: an agent (one of ``agents``) that answers
            from the last layer of each stack; its best-rewarded answer is the output's
            ``final``. Each costs one generation of the budget.

    Per-run knobs: ``budget``, ``layers``, ``num_references``, ``seed``, ``temperature``,
    ``max_tokens``.
    """
    pool = as_agent_pool(agents)
    reward_model = as_reward_model(reward, agents=agents)
    read_context = ContextReader("moa", defaults)
    if aggregator is not None and aggregator not in pool:
        raise ValueError(f"aggregator {aggregator!r} is not one of the agents {pool.names}")

    def _tasks(state: SamplingState, ctx: SamplingContext, step: int) -> list[LayerTask]:
        """Every call of superstep ``step`` (proposer layer ``step``, or the aggregators)."""
        prompt = validate_prompt(state["prompt"])
        plan = moa_plan(ctx.budget, len(pool), ctx.layers, aggregator is not None)
        done = in_generation_order(state.get("inbox") or [])
        offsets = _stack_offsets(plan)
        tasks = []
        for i, st in enumerate(plan):
            mine = [s for s in done if s.get("stack") == i]
            if step < len(st.layers):
                callers, final = pool.names[: st.layers[step]], False
                first = offsets[i] + sum(st.layers[:step])
            elif step == len(st.layers) and st.aggregate and aggregator is not None:
                callers, final, first = [aggregator], True, offsets[i] + sum(st.layers)
            else:
                continue
            layer = step
            for j, name in enumerate(callers):
                rng = random.Random(f"moa:{ctx.seed}:{i}:{layer}:{name}")
                refs = _shown(mine, pool.names, layer, ctx.num_references, rng) if layer else []
                own = None if final else _latest(mine, name, layer)
                parent = own if own in refs else (refs[0] if refs else None)
                tasks.append(
                    LayerTask(
                        agent=name, prompt=prompt, sample_id=sample_id(first + j), stack=i,
                        layer=layer, final=final, parent=parent["id"] if parent else None,
                        references=[{"id": s["id"], "text": s["text"]} for s in refs],
                    )
                )  # fmt: skip
        return tasks

    def dispatch(
        state: SamplingState, runtime: Runtime[SamplingContext]
    ) -> Command[Literal["propose", "aggregate", "reward"]]:
        ctx = read_context(runtime)
        step = state.get("round", 0)
        update: dict[str, Any] = {"round": step + 1}
        if step == 0 and aggregator is not None:
            update["final"] = None  # one fresh run per invocation, also on a reused thread
        tasks = _tasks(state, ctx, step)
        if not tasks:
            return Command(goto="reward")
        sends = [Send("aggregate" if t["final"] else "propose", t) for t in tasks]
        return Command(update=update, goto=sends)

    async def _answer(task: LayerTask, runtime: Runtime[SamplingContext]) -> dict[str, Any]:
        name, refs, ctx = task["agent"], task["references"], read_context(runtime)
        system = pool.system_prompt(name)
        sid, layer, stack = task["sample_id"], task["layer"], task["stack"]
        if not refs:
            sample = await generate_sample(
                pool, name, answer_messages(task["prompt"], system), ctx,
                sample_id=sid, kind="fresh", parent=None, layer=layer, stack=stack,
            )  # fmt: skip
        else:
            msgs = aggregate_messages(task["prompt"], [r["text"] for r in refs], system)
            sample = await generate_sample(
                pool, name, msgs, ctx, sample_id=sid, kind="aggregate", parent=task["parent"],
                layer=layer, stack=stack, references=[r["id"] for r in refs],
            )  # fmt: skip
        return {"inbox": [sample]}

    async def propose(task: LayerTask, runtime: Runtime[SamplingContext]) -> dict[str, Any]:
        return await _answer(task, runtime)

    async def aggregate(task: LayerTask, runtime: Runtime[SamplingContext]) -> dict[str, Any]:
        return await _answer(task, runtime)

    async def reward_node(
        state: SamplingState, runtime: Runtime[SamplingContext]
    ) -> dict[str, Any]:
        update = await score_inbox(reward_model, state)
        if aggregator is not None:
            ctx = read_context(runtime)
            ids = set(final_ids(moa_plan(ctx.budget, len(pool), ctx.layers, True)))
            finals = [s for s in update["samples"] if s["id"] in ids]
            update["final"] = best_sample(finals) or (finals[0] if finals else None)
        return update

    builder = method_builder("dispatch", read_context)
    builder.add_node("dispatch", dispatch)
    builder.add_node("propose", cast(Any, propose))  # Send targets: take a LayerTask
    builder.add_node("aggregate", cast(Any, aggregate))
    builder.add_node("reward", reward_node)
    builder.add_edge("propose", "dispatch")
    builder.add_edge("aggregate", "dispatch")
    builder.add_edge("reward", FINISH)
    return builder
