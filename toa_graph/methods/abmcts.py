"""AB-MCTS (Inoue et al., arXiv 2503.04412): Sakana AI's TreeQuest ``ABMCTSA`` driving
TOA's own play nodes.

    controller --Send--> agent  (parent = the root: a fresh answer)  --\\
               --Send--> refine (parent = a response)                 --> reward --Send--> ...
    reward --> finish once the budget is spent

The search itself is the library's: each step asks it (``ask_batch``) for up to
``plays_per_step`` trials (a node to expand and the agent to call), the plays go to the
``agent`` / ``refine`` nodes (:mod:`toa_graph.methods.plays`, shared with TOA), and the
reward node scores them and tells the library each score (``tell``) before asking for the
next step. With one play per step this is the library's own ``step`` loop, play for play
(``tests/test_abmcts.py`` checks it against ``ABMCTSA.step``).

What the wrapper adds, nothing of the algorithm:

- scores: the library wants [0, 1]; ``score_transform`` maps the raw rewards
  (``sigmoid(reward / tau)`` as TOA's tree, or ``minmax`` over the rewards seen so far);
  a play whose generation or reward failed is told 0.0 (the library has no failed trial)
  and its sample keeps its error;
- randomness: the library draws from numpy's global RNG; each prompt has its own
  generator state (seeded from ``context.seed``, as ``np.random.seed``), swapped in around
  every ``ask``/``tell`` under a lock, so runs are reproducible and concurrent prompts do
  not share draws;
- state: the algorithm state and the RNG state are kept pickled (base64) in the graph's
  ``search`` channel, so checkpointers and Studio store plain data;
- records: ``tree`` lists each node (sample id, parent sample id, agent, the score told),
  and each step is streamed as TOA's ``toa_step`` event.

The search part (:class:`Search`) is plain Python; only :func:`create_abmcts_graph` is
LangGraph.
"""

from __future__ import annotations

import base64
import importlib
import importlib.util
import math
import pickle
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal, cast

import numpy as np
from langgraph.graph import StateGraph
from langgraph.runtime import Runtime
from langgraph.types import Command

from toa_graph.agents import AgentPool, AgentsLike, as_agent_pool
from toa_graph.context import SamplingContext
from toa_graph.cost import has_limits
from toa_graph.errors import UserError
from toa_graph.mcts import tree_reward
from toa_graph.methods.plays import affordable_plays, report_step, route_plays, search_builder
from toa_graph.rewards.base import RewardLike, as_reward_model
from toa_graph.sampling import FINISH, ContextReader, sample_id, score_inbox
from toa_graph.state import Sample, SamplingState

__all__ = [
    "ALGORITHMS",
    "Search",
    "create_abmcts_graph",
    "load_algorithm",
    "minmax_score",
    "told_score",
]

ALGORITHMS = ("abmcts-a", "abmcts-m")
_EXTRA = {"abmcts-a": "treequest", "abmcts-m": "abmcts-m"}
_M_MODULES = ("pymc", "numpyro", "jax")

LIVE_SEARCHES = 256
"""Searches a graph keeps unpickled between its steps (one per prompt in flight): a step
then only pickles its search into the state, it does not unpickle the previous one (the
larger cost). A blob that is not there (another process, a checkpoint replayed) is
unpickled."""

_LIVE_LOCK = threading.Lock()
_RNG_LOCK = threading.Lock()
"""numpy's global RNG is one per process: swaps of a prompt's state in and out of it are
serialised (``ask`` and ``tell`` are synchronous, so an event loop never interleaves them;
the lock covers threads)."""


def load_algorithm(name: str = "abmcts-a") -> Any:
    """The library's algorithm object; a :class:`~toa_graph.errors.UserError` naming the
    extra to install when TreeQuest (or, for ``abmcts-m``, PyMC) is missing."""
    if name not in ALGORITHMS:
        raise UserError(f"abmcts: unknown algorithm {name!r}; algorithms: {', '.join(ALGORITHMS)}")
    hint = f"pip install 'toa-graph[{_EXTRA[name]}]'"
    try:
        treequest = importlib.import_module("treequest")
    except ImportError:
        raise UserError(f"method 'abmcts' needs TreeQuest: {hint}") from None
    if name == "abmcts-m":
        if any(importlib.util.find_spec(m) is None for m in _M_MODULES):
            raise UserError(f"abmcts-m needs PyMC, NumPyro and JAX: {hint}")
        return treequest.ABMCTSM()
    return treequest.ABMCTSA()


def told_score(reward: float | None, tau: float) -> float:
    """The sigmoid transform: ``sigmoid(reward / tau)`` (TOA's tree value); 0.0 for a
    failed play."""
    return 0.0 if reward is None else tree_reward(reward, tau)


def minmax_score(reward: float | None, seen: Sequence[float]) -> float:
    """The minmax transform over the rewards ``seen`` so far (``reward`` among them):
    0.0 for a failed play, 0.5 while every reward seen is the same."""
    if reward is None:
        return 0.0
    lo, hi = min(seen), max(seen)
    return 0.5 if hi <= lo else (reward - lo) / (hi - lo)


@contextmanager
def _rng(state: tuple[Any, ...]) -> Iterator[list[tuple[Any, ...]]]:
    """numpy's global RNG set to ``state`` inside the block; the state it leaves is in
    the yielded list afterwards, and the global state is restored."""
    out: list[tuple[Any, ...]] = []
    with _RNG_LOCK:
        saved = np.random.get_state()
        np.random.set_state(state)
        try:
            yield out
        finally:
            out.append(cast(tuple[Any, ...], np.random.get_state()))
            np.random.set_state(saved)


@dataclass
class Search:
    """One prompt's search: the library's algorithm state (nodes hold sample ids) and its
    own numpy RNG state, as one picklable object."""

    algo_state: Any
    rng_state: tuple[Any, ...]
    trials: dict[str, str]
    """sample id -> the library's trial id, for the plays asked and not told yet."""

    @classmethod
    def start(cls, algorithm: Any, seed: int) -> Search:
        state = cast(tuple[Any, ...], np.random.RandomState(seed).get_state())
        return cls(algorithm.init_tree(), state, {})

    def dumps(self, live: dict[str, Search] | None = None) -> str:
        """The pickled search (base64); with ``live``, also kept there by its blob for the
        next :meth:`loads` (at most :data:`LIVE_SEARCHES`, the oldest dropped)."""
        blob = base64.b64encode(pickle.dumps(self, protocol=pickle.HIGHEST_PROTOCOL)).decode()
        if live is not None:
            with _LIVE_LOCK:
                live[blob] = self
                while len(live) > LIVE_SEARCHES:
                    live.pop(next(iter(live)))
        return blob

    @staticmethod
    def loads(blob: str, live: dict[str, Search] | None = None) -> Search:
        """The search pickled in ``blob``; taken from ``live`` (blob -> the object it was
        dumped from, untouched since) when there, which skips unpickling."""
        if live is not None:
            with _LIVE_LOCK:
                search = live.pop(blob, None)
            if search is not None:
                return search
        search = pickle.loads(base64.b64decode(blob))
        if not isinstance(search, Search):
            raise TypeError(f"abmcts: the graph's search state holds a {type(search).__name__}")
        return search

    def ask(self, algorithm: Any, actions: list[str], k: int, first: int) -> list[dict[str, Any]]:
        """Ask the library for ``k`` trials as plays numbered from ``first``: agent = the
        trial's action, parent = the expanded node's sample (``None``: the root)."""
        with _rng(self.rng_state) as after:
            self.algo_state, trials = algorithm.ask_batch(self.algo_state, k, actions)
        self.rng_state = after[0]
        tree = self.algo_state.tree
        plays = []
        for i, trial in enumerate(trials):
            parent = trial.parent_state
            depth = tree.get_node(trial.node_to_expand).depth
            play = {
                "index": first + i,
                "agent": trial.action,
                "kind": "fresh" if parent is None else "refine",
                "parent_sample": parent,
                "layer": depth,
            }
            self.trials[sample_id(first + i)] = trial.trial_id
            plays.append(play)
        return plays

    def tell(self, algorithm: Any, sid: str, score: float) -> None:
        with _rng(self.rng_state) as after:
            self.algo_state = algorithm.tell(self.algo_state, self.trials.pop(sid), (sid, score))
        self.rng_state = after[0]


def create_abmcts_graph(
    agents: AgentsLike | AgentPool,
    reward: RewardLike,
    *,
    defaults: Mapping[str, Any] | None = None,
    algorithm: str = "abmcts-a",
) -> StateGraph[Any, Any, Any, Any]:
    """Build the (uncompiled) AB-MCTS graph.

    Args:
        agents: the library's actions, in order (name -> chat model / AgentConfig, ...).
        reward: a RewardModel or any sync/async ``(prompt, responses[, references])`` callable.
        algorithm: ``"abmcts-a"`` (TreeQuest's ``ABMCTSA``, its defaults: Gaussian
            Thompson sampling, one bandit over the agents) or ``"abmcts-m"`` (``ABMCTSM``,
            the ``abmcts-m`` extra: PyMC's MCMC on every ask).

    Per-run knobs: ``budget``, ``seed``, ``tau``, ``score_transform``, ``plays_per_step``,
    ``temperature``, ``max_tokens``.
    """
    pool = as_agent_pool(agents)
    reward_model = as_reward_model(reward, agents=agents)
    read_context = ContextReader("abmcts", defaults)
    algo = load_algorithm(algorithm)
    live: dict[str, Search] = {}

    def select(
        state: SamplingState,
        ctx: SamplingContext,
        search: Search,
        tree: dict[str, Any],
        samples: list[Sample],
        new: list[Sample] | None = None,
    ) -> Command[Literal["agent", "refine", "finish"]]:
        remaining = ctx.budget - tree["plays"]
        if remaining <= 0:
            return Command(update={"tree": tree, "plays": [], "search": None}, goto=FINISH)
        n = min(ctx.plays_per_step, remaining)
        if has_limits(ctx):
            n, stop = affordable_plays(pool, state["prompt"], ctx, samples, new or [], n)
            if n == 0:
                update: dict[str, Any] = {
                    "tree": tree,
                    "plays": [],
                    "search": None,
                    "stopped_by": stop,
                }
                return Command(update=update, goto=FINISH)
        plays = search.ask(algo, pool.names, n, tree["plays"])
        tree = {**tree, "plays": tree["plays"] + len(plays)}
        sends = route_plays(plays, state["prompt"], samples, new or [], ctx.show_reasoning)
        return Command(
            update={"tree": tree, "plays": plays, "search": search.dumps(live)}, goto=sends
        )

    async def controller(
        state: SamplingState, runtime: Runtime[SamplingContext]
    ) -> Command[Literal["agent", "refine", "finish"]]:
        ctx = read_context(runtime)
        tree = {"method": "abmcts", "algorithm": algorithm, "plays": 0, "nodes": []}
        return select(state, ctx, Search.start(algo, ctx.seed), tree, [])

    def tell(
        state: SamplingState, ctx: SamplingContext, new: list[Sample], tree: dict[str, Any]
    ) -> Search:
        """Tell the library each of this step's scores, in play order (recorded in ``tree``)."""
        search = Search.loads(cast(str, state["search"]), live)
        by_id = {s["id"]: s for s in new}
        seen = [
            float(s["reward"])
            for s in [*(state.get("samples") or []), *new]
            if s["reward"] is not None and not s.get("error")
        ]
        for play in state.get("plays") or []:
            sample = by_id[sample_id(play["index"])]
            ok = sample["reward"] is not None and not sample.get("error")
            raw = float(sample["reward"]) if ok else None  # type: ignore[arg-type]
            if ctx.score_transform == "minmax":
                score = minmax_score(raw, seen)
            else:
                score = told_score(raw, ctx.tau)
            if not math.isfinite(score):
                score = 0.0
            search.tell(algo, sample["id"], score)
            tree["nodes"].append(
                {"sample": sample["id"], "parent": play["parent_sample"], "agent": play["agent"],
                 "score": score}
            )  # fmt: skip
        return search

    async def reward_node(
        state: SamplingState, runtime: Runtime[SamplingContext]
    ) -> Command[Literal["agent", "refine", "finish"]]:
        """Score the step's generations, tell the library, ask for the next step."""
        ctx = read_context(runtime)
        update = await score_inbox(reward_model, state, ctx)
        new: list[Sample] = update["samples"]
        tree = {**cast(dict[str, Any], state["tree"])}
        tree["nodes"] = list(tree["nodes"])
        search = tell(state, ctx, new, tree)
        by_id = {s["id"]: s for s in new}
        report_step(tree["plays"], ctx.budget, state.get("plays") or [], by_id, update["best"])
        step = select(state, ctx, search, tree, state.get("samples") or [], new)
        return Command(update={**update, **cast(dict[str, Any], step.update)}, goto=step.goto)

    return search_builder(pool, read_context, controller, reward_node)
