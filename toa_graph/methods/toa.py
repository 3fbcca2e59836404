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

from collections.abc import Mapping
from typing import Any, Literal, cast

from langgraph.graph import StateGraph
from langgraph.runtime import Runtime
from langgraph.types import Command

from toa_graph import mcts
from toa_graph.agents import AgentPool, AgentsLike, as_agent_pool
from toa_graph.context import SamplingContext
from toa_graph.cost import has_limits
from toa_graph.methods.plays import affordable_plays, report_step, route_plays, search_builder
from toa_graph.rewards.base import RewardLike, as_reward_model
from toa_graph.sampling import FINISH, ContextReader, sample_id, score_inbox
from toa_graph.state import Sample, SamplingState

__all__ = ["create_toa_graph"]


def _params(ctx: SamplingContext) -> mcts.SearchParams:
    return mcts.SearchParams(
        alpha=ctx.alpha,
        tau=ctx.tau,
        width=ctx.effective_width,
        top_k_child=ctx.top_k_child,
        pending=cast("mcts.PendingRule", ctx.pending_value),
    )


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
        n, stop = min(ctx.plays_per_step, remaining), None
        if has_limits(ctx):
            n, stop = affordable_plays(pool, state["prompt"], ctx, samples, new or [], n)
            if n == 0:
                return Command(update={"tree": tree, "plays": [], "stopped_by": stop}, goto=FINISH)
        tree, plays = mcts.select_plays(tree, _params(ctx), n)
        sends = route_plays(plays, state["prompt"], samples, new or [], ctx.show_reasoning)
        return Command(update={"tree": tree, "plays": plays}, goto=sends)

    async def controller(
        state: SamplingState, runtime: Runtime[SamplingContext]
    ) -> Command[Literal["agent", "refine", "finish"]]:
        tree = cast("mcts.Tree | None", state.get("tree")) or mcts.new_tree(pool.names)
        return select(state, read_context(runtime), tree, state.get("samples") or [])

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
        report_step(tree["plays"], ctx.budget, plays, by_id, best)
        return tree

    async def reward_node(
        state: SamplingState, runtime: Runtime[SamplingContext]
    ) -> Command[Literal["agent", "refine", "finish"]]:
        """Score the step's generations, back them up, and run the controller's next
        selection: one superstep instead of three (reward, backprop, controller)."""
        ctx = read_context(runtime)
        update = await score_inbox(reward_model, state, ctx)
        new: list[Sample] = update["samples"]
        tree = backprop(state, ctx, new, update["best"])
        step = select(state, ctx, tree, state.get("samples") or [], new)
        return Command(update={**update, **cast(dict[str, Any], step.update)}, goto=step.goto)

    return search_builder(pool, read_context, controller, reward_node)
