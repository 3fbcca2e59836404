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

Self-MoA (``proposers="self"``, :mod:`toa_graph.methods.self_moa`): the proposer slots (one
per agent) are all filled by ``context.agent`` (default: the first); a slot's own earlier
answer is found by its position, not its agent's name. Self-MoA-Seq (``seq_window``): each
stack is one proposer layer, then a chain of aggregations over sliding windows (by the
``aggregator`` option, else the first slot's agent); ``final`` is the best-rewarded chain end.

Under a token or money limit a layer (one superstep: that layer of every stack, or the
final aggregators) starts only when all its calls fit at their worst case after what the
layers before it spent; MoA cannot stop mid-layer, so it stops at the last whole layer it
can pay for (``stopped_by``) and scores what it has.

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
from toa_graph.cost import has_limits, step_fits
from toa_graph.methods.self_moa import proposer_slots, seq_offsets, seq_plan, seq_windows
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
    sample_index,
    score_inbox,
    shown_text,
    validate_prompt,
)
from toa_graph.state import Prompt, Sample, SamplingState, best_sample

__all__ = ["StackPlan", "create_moa_graph", "final_ids", "moa_plan", "seq_final_ids"]


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


def _by_slot(stack_samples: list[Sample], st: StackPlan, offset: int) -> dict[int, list[Sample]]:
    """A stack's proposer answers by slot (a layer's j-th call is slot j), in layer order."""
    slots: dict[int, list[Sample]] = {}
    for s in stack_samples:
        layer = s["layer"]
        if layer < len(st.layers):
            slot = sample_index(s["id"]) - offset - sum(st.layers[:layer])
            slots.setdefault(slot, []).append(s)
    return slots


def _latest(by_slot: dict[int, list[Sample]], slot: int, before_layer: int) -> Sample | None:
    """Slot ``slot``'s latest answer with text in a stack, below ``before_layer``."""
    own = [s for s in by_slot.get(slot, []) if s["layer"] < before_layer and has_text(s)]
    return own[-1] if own else None


def _shown(
    by_slot: dict[int, list[Sample]], slots: int, layer: int, k: int | None, rng: random.Random
) -> list[Sample]:
    """The references at ``layer``: each slot's latest answer, in slot (agent) order, or a
    random subset of ``k`` of them (still in that order)."""
    latest = [s for s in (_latest(by_slot, j, layer) for j in range(slots)) if s is not None]
    if k is None or k >= len(latest):
        return latest
    keep = set(rng.sample(range(len(latest)), k))
    return [s for i, s in enumerate(latest) if i in keep]


def _reference(sample: Sample) -> dict[str, Any]:
    """A reference as a layer task carries it: id, answer and (when any) its trace,
    shown only under ``show_reasoning``."""
    ref = {"id": sample["id"], "text": sample["text"]}
    if sample.get("reasoning"):
        ref["reasoning"] = sample["reasoning"]
    return ref


def _layer_task(
    agent: str, prompt: Prompt, index: int, stack: int, layer: int, final: bool,
    parent: Sample | None, refs: list[Sample],
) -> LayerTask:  # fmt: skip
    return LayerTask(
        agent=agent, prompt=prompt, sample_id=sample_id(index), stack=stack, layer=layer,
        final=final, parent=parent["id"] if parent else None,
        references=[_reference(s) for s in refs],
    )  # fmt: skip


def _seq_tasks(
    prompt: Prompt, done: list[Sample], slots: list[str], aggregator: str, budget: int,
    window: int, step: int,
) -> list[LayerTask]:  # fmt: skip
    """Self-MoA-Seq's calls of superstep ``step``: every stack's proposals (step 0), then
    each stack's aggregation ``step - 1``: the previous aggregate and its window."""
    plan = seq_plan(budget, len(slots), window)
    offsets = seq_offsets(plan, window)
    by_id = {s["id"]: s for s in done}
    tasks = []
    for i, p in enumerate(plan):
        if step == 0:
            tasks += [_layer_task(slots[j], prompt, offsets[i] + j, i, 0, False, None, [])
                      for j in range(p)]  # fmt: skip
            continue
        windows = seq_windows(p, window)
        if step > len(windows):
            continue
        shown = [by_id.get(sample_id(offsets[i] + j)) for j in windows[step - 1]]
        last = by_id.get(sample_id(offsets[i] + p + step - 2)) if step > 1 else None
        refs = [s for s in (last, *shown) if s is not None and has_text(s)]
        parent = last if last in refs else (refs[0] if refs else None)
        tasks.append(_layer_task(aggregator, prompt, offsets[i] + p + step - 1, i, step, True,
                                 parent, refs))  # fmt: skip
    return tasks


def seq_final_ids(budget: int, slots: int, window: int) -> list[str]:
    """Self-MoA-Seq: each stack's last aggregation (the stack's answer)."""
    plan = seq_plan(budget, slots, window)
    offsets = seq_offsets(plan, window)
    return [sample_id(offsets[i + 1] - 1) for i, p in enumerate(plan) if seq_windows(p, window)]


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
        slots = proposer_slots(pool.names, ctx)
        done = in_generation_order(state.get("inbox") or [])
        if ctx.seq_window is not None:
            chain = aggregator or slots[0]
            return _seq_tasks(prompt, done, slots, chain, ctx.budget, ctx.seq_window, step)
        plan = moa_plan(ctx.budget, len(pool), ctx.layers, aggregator is not None)
        offsets = _stack_offsets(plan)
        tasks = []
        for i, st in enumerate(plan):
            by_slot = _by_slot([s for s in done if s.get("stack") == i], st, offsets[i])
            if step < len(st.layers):
                callers, final = slots[: st.layers[step]], False
                first = offsets[i] + sum(st.layers[:step])
            elif step == len(st.layers) and st.aggregate and aggregator is not None:
                callers, final, first = [aggregator], True, offsets[i] + sum(st.layers)
            else:
                continue
            layer = step
            for j, name in enumerate(callers):
                key = f"{name}:{j}" if ctx.proposers == "self" else name
                rng = random.Random(f"moa:{ctx.seed}:{i}:{layer}:{key}")
                refs = _shown(by_slot, len(slots), layer, ctx.num_references, rng) if layer else []
                own = None if final else _latest(by_slot, j, layer)
                parent = own if own in refs else (refs[0] if refs else None)
                tasks.append(_layer_task(name, prompt, first + j, i, layer, final, parent, refs))
        return tasks

    def dispatch(
        state: SamplingState, runtime: Runtime[SamplingContext]
    ) -> Command[Literal["propose", "aggregate", "reward"]]:
        ctx = read_context(runtime)
        step = state.get("round", 0)
        update: dict[str, Any] = {"round": step + 1}
        if step == 0 and (aggregator is not None or ctx.seq_window is not None):
            update["final"] = None  # one fresh run per invocation, also on a reused thread
        tasks = _tasks(state, ctx, step)
        if not tasks:
            return Command(goto="reward")
        if has_limits(ctx):
            k, stop = step_fits(
                pool, ctx, state.get("inbox") or [], [_play(t, ctx.show_reasoning) for t in tasks]
            )
            if k < len(tasks):
                return Command(update={"stopped_by": stop}, goto="reward")
        sends = [Send("aggregate" if t["final"] else "propose", t) for t in tasks]
        return Command(update=update, goto=sends)

    def _play(task: LayerTask, trace: bool) -> tuple[str, list[dict[str, Any]]]:
        """The task's agent and the messages it sends (``trace``: ``show_reasoning``)."""
        name, refs = task["agent"], task["references"]
        system = pool.system_prompt(name)
        if not refs:
            return name, answer_messages(task["prompt"], system)
        shown = [shown_text(r, trace) for r in refs]
        return name, aggregate_messages(task["prompt"], shown, system)

    async def _answer(task: LayerTask, runtime: Runtime[SamplingContext]) -> dict[str, Any]:
        name, refs, ctx = task["agent"], task["references"], read_context(runtime)
        sid, layer, stack = task["sample_id"], task["layer"], task["stack"]
        _, msgs = _play(task, ctx.show_reasoning)
        if not refs:
            sample = await generate_sample(
                pool, name, msgs, ctx,
                sample_id=sid, kind="fresh", parent=None, layer=layer, stack=stack,
            )  # fmt: skip
        else:
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
        ctx = read_context(runtime)
        update = await score_inbox(reward_model, state, ctx)
        if ctx.seq_window is not None:
            ids = set(seq_final_ids(ctx.budget, len(pool), ctx.seq_window))
        elif aggregator is not None:
            ids = set(final_ids(moa_plan(ctx.budget, len(pool), ctx.layers, True)))
        else:
            return update
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
