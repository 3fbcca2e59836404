"""TOA: Tree Search-based Orchestrated Agents (arXiv 2412.17061) as a LangGraph graph
(reference: ``MCTS_thread`` / ``MCTS_Selection`` in oceanypt/TOA ``code/ensemble_methods.py``).

    controller --Send--> agent  (fresh answer)  --\
               --Send--> refine (improve a parent) --> reward --Send--> agent | refine
    reward --> finish once the budget is spent

The ``controller`` runs MCTS selection (:mod:`toa_graph.mcts`) for up to
``plays_per_step`` plays and fans them out with ``Send``, one task per node (the step's
fresh plays to ``agent``, its refinements to ``refine``, each task running its plays
concurrently: LangGraph's cost is per task, not per play); ``reward`` scores the step's
generations in one call, backs each result up in the tree (the backprop step) and runs
the controller's selection for the next step itself, so a step costs two LangGraph
supersteps (generate, reward) instead of four. One play per step
(the default) is exactly the paper's algorithm: the reference is ``MCTS_thread`` /
``MCTS_Selection`` in oceanypt/TOA ``code/ensemble_methods.py``, and
``tests/test_toa_reference.py`` checks the play sequence against a model of it. Several
plays per step are our extension (``pending_value`` picks how pending plays steer the
step's other selections).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Mapping
from typing import Any, Literal, cast

from langgraph.config import get_stream_writer
from langgraph.graph import StateGraph
from langgraph.runtime import Runtime
from langgraph.types import Command, Send
from typing_extensions import TypedDict

from toa_graph import mcts
from toa_graph.agents import AgentPool, AgentsLike, as_agent_pool
from toa_graph.context import SamplingContext
from toa_graph.rewards.base import RewardLike, as_reward_model
from toa_graph.sampling import (
    FINISH,
    ContextReader,
    answer_messages,
    generate_sample,
    method_builder,
    refine_messages,
    sample_id,
    sample_index,
    score_inbox,
)
from toa_graph.state import (
    Prompt,
    Sample,
    SamplingState,
)

__all__ = ["create_toa_graph"]


class PlayTask(TypedDict):
    """What the controller sends to an ``agent`` / ``refine`` node: the step's plays of
    that kind (one ``Send`` per kind, not per play: LangGraph's cost is per task) and,
    for refine plays, each parent's text."""

    plays: list[mcts.Play]
    prompt: Prompt
    parent_texts: list[str | None]


def _params(ctx: SamplingContext) -> mcts.SearchParams:
    return mcts.SearchParams(
        alpha=ctx.alpha,
        tau=ctx.tau,
        width=ctx.effective_width,
        top_k_child=ctx.top_k_child,
        pending=cast("mcts.PendingRule", ctx.pending_value),
    )


def _text_of(samples: list[Sample], new: list[Sample], sid: str) -> str:
    """The text of sample ``sid`` in ``samples`` then ``new``. Samples are kept in
    generation order, so ``s<N>`` is normally at index N (looked up directly, not by
    building an id map each step)."""
    i = sample_index(sid)
    if i < len(samples) and samples[i]["id"] == sid:
        return samples[i]["text"]
    j = i - len(samples)
    if 0 <= j < len(new) and new[j]["id"] == sid:
        return new[j]["text"]
    return next(s["text"] for s in itertools.chain(samples, new) if s["id"] == sid)


def create_toa_graph(
    agents: AgentsLike | AgentPool,
    reward: RewardLike,
    *,
    defaults: Mapping[str, Any] | None = None,
) -> StateGraph[Any, Any, Any, Any]:
    """Build the (uncompiled) TOA graph.

    Args:
        agents: ordered mapping name -> LangChain chat model or AgentConfig (or a list of
            AgentConfig, or an AgentPool). Order is the search's tie-break order.
        reward: a :class:`~toa_graph.rewards.base.RewardModel` or any sync/async callable
            ``(prompt, responses[, references]) -> list[float]``.

    Per-run knobs come from :class:`~toa_graph.context.SamplingContext`: ``budget``,
    ``alpha``, ``tau``, ``width``, ``top_k_child``, ``plays_per_step``, ``pending_value``,
    ``temperature``, ``max_tokens``.
    """
    pool = as_agent_pool(agents)
    reward_model = as_reward_model(reward, agents=agents)
    read_context = ContextReader("toa", defaults)

    def select(
        state: SamplingState,
        ctx: SamplingContext,
        tree: mcts.Tree,
        samples: list[Sample],
        new: list[Sample] | None = None,
    ) -> Command[Literal["agent", "refine", "finish"]]:
        """The controller's step: select up to ``plays_per_step`` plays and send them out,
        or end the run once the budget is spent. ``samples`` + ``new`` (this step's, not
        yet in state) hold the parents' texts; they are not concatenated (no list copy)."""
        remaining = ctx.budget - tree["plays"]
        if remaining <= 0:
            return Command(update={"tree": tree, "plays": []}, goto=FINISH)
        tasks: dict[str, PlayTask] = {}  # node -> its plays, in selection order
        tree, plays = mcts.select_plays(tree, _params(ctx), min(ctx.plays_per_step, remaining))
        for play in plays:
            parent = play["parent_sample"]
            node = "refine" if play["kind"] == "refine" else "agent"
            task = tasks.setdefault(
                node, PlayTask(plays=[], prompt=state["prompt"], parent_texts=[])
            )
            task["plays"].append(play)
            task["parent_texts"].append(_text_of(samples, new or [], parent) if parent else None)
        sends = [Send(node, task) for node, task in tasks.items()]
        return Command(update={"tree": tree, "plays": plays}, goto=sends)

    async def controller(
        state: SamplingState, runtime: Runtime[SamplingContext]
    ) -> Command[Literal["agent", "refine", "finish"]]:
        tree = cast("mcts.Tree | None", state.get("tree")) or mcts.new_tree(pool.names)
        return select(state, read_context(runtime), tree, state.get("samples") or [])

    async def play_out(
        play: mcts.Play, prompt: Prompt, parent_text: str | None, ctx: SamplingContext
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
        """The ``agent`` and ``refine`` nodes: run the task's plays concurrently."""
        ctx = read_context(runtime)
        plays, texts, prompt = task["plays"], task["parent_texts"], task["prompt"]
        if len(plays) == 1:
            return {"inbox": [await play_out(plays[0], prompt, texts[0], ctx)]}
        samples = await asyncio.gather(
            *(play_out(p, prompt, t, ctx) for p, t in zip(plays, texts, strict=True))
        )
        return {"inbox": list(samples)}

    def backprop(
        state: SamplingState, ctx: SamplingContext, new: list[Sample], best: Sample | None
    ) -> mcts.Tree:
        """Record each of this step's plays in the tree and report the step."""
        params = _params(ctx)
        tree = cast("mcts.Tree", state["tree"])
        plays = cast("list[mcts.Play]", state.get("plays") or [])
        by_id = {s["id"]: s for s in new}  # this step's samples
        for play in plays:
            sample = by_id[sample_id(play["index"])]
            ok = sample["reward"] is not None and not sample.get("error")
            tree = mcts.record_result(
                tree,
                play,
                sample_id=sample["id"],
                reward=sample["reward"] if ok else None,
                params=params,
            )
        writer = get_stream_writer()
        writer(
            {
                "event": "toa_step",
                "plays": tree["plays"],
                "budget": ctx.budget,
                "new": [
                    {"id": sample_id(p["index"]), "agent": p["agent"], "kind": p["kind"],
                     "parent": p["parent_sample"], "reward": by_id[sample_id(p["index"])]["reward"]}
                    for p in plays
                ],
                "best_reward": best["reward"] if best else None,
                "best_agent": best["agent"] if best else None,
            }
        )  # fmt: skip
        return tree

    async def reward_node(
        state: SamplingState, runtime: Runtime[SamplingContext]
    ) -> Command[Literal["agent", "refine", "finish"]]:
        """Score the step's generations, back them up, and run the controller's next
        selection: one superstep instead of three (reward, backprop, controller)."""
        ctx = read_context(runtime)
        update = await score_inbox(reward_model, state)
        new: list[Sample] = update["samples"]
        tree = backprop(state, ctx, new, update["best"])
        step = select(state, ctx, tree, state.get("samples") or [], new)
        return Command(update={**update, **cast(dict[str, Any], step.update)}, goto=step.goto)

    builder = method_builder("controller", read_context)
    builder.add_node("controller", controller)
    builder.add_node("agent", cast(Any, generate))  # Send targets: take a PlayTask
    builder.add_node("refine", cast(Any, generate))
    builder.add_node("reward", reward_node)
    builder.add_edge("agent", "reward")
    builder.add_edge("refine", "reward")
    return builder
