"""Per-run knobs: one ``@dataclass`` per method, sharing :class:`BaseContext`.

Each method graph reads its own context class through ``Runtime[...]``; the registry
(:mod:`toa_graph.registry`) says which class belongs to which method, so configs and
server requests are checked against the knobs the method really has.
:class:`SamplingContext` carries every knob of the built-in methods (kept for callers that
pass one context whatever the method). A method graph's context schema is its own class
made lenient (:func:`graph_context_class`): a plain dict passed to
``graph.ainvoke(..., context={...})`` becomes one, keys that are not its knobs ignored, so
two methods may use the same knob name for different things.

Strict and lenient on purpose: where a user types knobs (config file, CLI ``--set``, server
request) :func:`toa_graph.registry.method_context` rejects unknown ones; the graph itself
reads whatever context it runs under (its own, or the parent app's dataclass, pydantic
model or dict) for the knobs it has, so a method graph composes into any LangGraph app.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from toa_graph.errors import UserError

__all__ = [
    "KNOBS",
    "AbmctsContext",
    "BaseContext",
    "DebateContext",
    "GraphContext",
    "MoaContext",
    "SamplingContext",
    "ToaContext",
    "context_knobs",
    "graph_context_class",
    "read_context",
]


DEFAULT_BUDGET = 16
"""Generations per prompt when neither the call, the command line nor the config sets a
budget: the one default of the library, every command and the server."""


def _at_least(name: str, value: int | None, low: int) -> None:
    if value is not None and value < low:
        raise UserError(f"context.{name} must be >= {low}, got {value}")


@dataclass(kw_only=True)
class BaseContext:
    """Knobs every method has (pass as ``graph.ainvoke(..., context={...})``)."""

    budget: int = DEFAULT_BUDGET
    """Generations per prompt. Every method spends exactly this many (debate: at most;
    fewer when a token or money limit ends the search first)."""
    agent: str | None = None
    """Agent used by single-agent methods (random, prs); default: the first agent."""
    temperature: float | None = None
    """Sampling temperature override for every agent; ``None`` keeps each agent's own."""
    max_tokens: int | None = None
    """Max new tokens override for every agent; ``None`` keeps each agent's own."""
    seed: int = 0
    """Seed for the methods that shuffle (sequential refine chains, MoA reference subsets,
    the debate's answer order)."""
    show_reasoning: bool = False
    """Reasoning models: refine and aggregate prompts show an earlier answer's thinking
    trace too (as a ``<think>`` block before it); off: the final answers only."""
    score_reasoning: bool = False
    """Reasoning models: the reward scores the trace and the answer together (as a
    ``<think>`` block before it); off: the final answer only."""
    max_tokens_per_prompt: int | None = None
    """Most tokens (prompt + completion) one prompt's search may spend; a step whose plays
    could pass it at their worst case is not started (:mod:`toa_graph.cost`)."""
    max_cost_per_prompt: float | None = None
    """Most money one prompt's search may spend, at the agents' ``price_per_million``
    (every agent needs prices); checked as ``max_tokens_per_prompt``."""

    def __post_init__(self) -> None:
        _at_least("budget", self.budget, 1)
        _at_least("max_tokens", self.max_tokens, 1)
        _at_least("max_tokens_per_prompt", self.max_tokens_per_prompt, 1)
        if self.max_cost_per_prompt is not None and not self.max_cost_per_prompt > 0:
            raise ValueError(
                f"context.max_cost_per_prompt must be > 0, got {self.max_cost_per_prompt}"
            )


@dataclass(kw_only=True)
class ToaContext(BaseContext):
    """TOA (MCTS over agents and their responses)."""

    alpha: float = 0.01
    """UCT exploration weight (paper: 0.01 for AlpacaEval/UltraFeedback, 0.05 for WMT)."""
    tau: float = 0.1
    """Reward temperature: the tree backs up ``sigmoid(reward / tau)`` (paper: 0.1; WMT 1.0)."""
    width: int | None = None
    """Responses per tree layer before a model node counts as fully expanded.
    Default ``max(1, budget // 3)`` (the paper's n_models * n_samples / 3)."""
    top_k_child: int = 1
    """Only the top-k response children (by reward) are considered during selection."""
    plays_per_step: int = 1
    """Plays selected per superstep (pending plays steer the next selections). 1 is the
    paper's algorithm."""
    pending_value: str = "mean"
    """With ``plays_per_step > 1``: what a pending play stands in with during the step's
    other selections: ``"mean"`` (the chosen node's current mean; keeps quality) or
    ``"zero"`` (classic virtual loss). No effect with one play per step."""

    def __post_init__(self) -> None:
        super().__post_init__()
        _at_least("plays_per_step", self.plays_per_step, 1)
        _at_least("top_k_child", self.top_k_child, 1)
        _at_least("width", self.width, 1)
        if self.pending_value not in ("mean", "zero"):
            raise UserError(
                f"context.pending_value must be 'mean' or 'zero', got {self.pending_value!r}"
            )
        if self.tau <= 0:
            raise UserError(f"context.tau must be > 0, got {self.tau}")

    @property
    def effective_width(self) -> int:
        return self.width if self.width is not None else max(1, self.budget // 3)


@dataclass(kw_only=True)
class MoaContext(BaseContext):
    """Mixture-of-Agents."""

    layers: int = 4
    """Layers per MoA stack (the TOA paper's runs: 4); stacks repeat until the budget is spent."""
    num_references: int | None = None
    """How many previous-layer answers each MoA proposer sees; default: every agent's.
    Fewer than the agents: a seeded random subset (kept in agent order)."""
    proposers: str = "all"
    """``"all"``: every agent proposes (MoA); ``"self"``: Self-MoA (arXiv 2502.00674), the
    agent named by ``agent`` (default: the first) is sampled for every proposer slot (one
    per configured agent)."""
    seq_window: int | None = None
    """Self-MoA-Seq: each stack's proposals are aggregated sequentially, a window at a
    time (the first ``seq_window`` proposals, then the last aggregate plus the next
    ``seq_window - 1``); ``None``: layered MoA."""

    def __post_init__(self) -> None:
        super().__post_init__()
        _at_least("layers", self.layers, 1)
        _at_least("num_references", self.num_references, 1)
        _at_least("seq_window", self.seq_window, 2)
        if self.proposers not in ("all", "self"):
            raise ValueError(f"context.proposers must be 'all' or 'self', got {self.proposers!r}")


@dataclass(kw_only=True)
class DebateContext(BaseContext):
    """Debate & reflect."""

    rounds: int = 3
    """Debate rounds after round 0 (at most; D&R: 3). The debate stops early only when
    every agent is correct."""
    task: str | None = None
    """Debate task type for the answer format hint: ``numeric``, ``choice``, ``math`` or
    ``free``; default: inferred from the gold answer (``free`` without one)."""
    correct_threshold: float | None = None
    """Debate without a gold answer (our extension, not in D&R): an answer is correct when
    its reward is >= this. Required for prompts without a ``reference``."""

    def __post_init__(self) -> None:
        super().__post_init__()
        _at_least("rounds", self.rounds, 0)
        if self.task not in (None, "numeric", "choice", "math", "free"):
            raise UserError(
                f"context.task must be numeric, choice, math or free, got {self.task!r}"
            )


SCORE_TRANSFORMS = ("sigmoid", "minmax")


@dataclass(kw_only=True)
class AbmctsContext(BaseContext):
    """AB-MCTS (TreeQuest's ``ABMCTSA``): Thompson sampling over agents and responses."""

    tau: float = 0.1
    """``score_transform="sigmoid"``: the search is told ``sigmoid(reward / tau)``, as TOA."""
    score_transform: str = "sigmoid"
    """How raw rewards become the [0, 1] scores the library wants: ``"sigmoid"`` (with
    ``tau``) or ``"minmax"`` (over the rewards seen so far in the run)."""
    plays_per_step: int = 1
    """Plays asked per superstep (``ask_batch``); 1 is the library's own ``step`` loop."""

    def __post_init__(self) -> None:
        super().__post_init__()
        _at_least("plays_per_step", self.plays_per_step, 1)
        if self.tau <= 0:
            raise ValueError(f"context.tau must be > 0, got {self.tau}")
        if self.score_transform not in SCORE_TRANSFORMS:
            raise ValueError(
                f"context.score_transform must be 'sigmoid' or 'minmax', "
                f"got {self.score_transform!r}"
            )


@dataclass(kw_only=True)
class SamplingContext(AbmctsContext, ToaContext, MoaContext, DebateContext):
    """Every method's knobs in one context (what a plain ``context={...}`` dict becomes).

    Kept for callers that switch method without changing their context; configs and
    server requests are validated against the method's own class instead."""


KNOBS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(SamplingContext))
"""Every knob of every method, in declaration order."""


@dataclass(kw_only=True, init=False)
class GraphContext(SamplingContext):
    """A method graph's context schema: every knob, built leniently.

    ``GraphContext(**anything)`` takes the knobs it is given; a knob that is missing or
    ``None`` keeps the field's default (the factory's ``defaults`` in the subclass
    :func:`graph_context_class` makes for a graph); other keys are ignored. Values are
    still checked (``budget=0`` is an error)."""

    def __init__(self, **knobs: Any) -> None:
        values: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = knobs.get(f.name)
            values[f.name] = f.default if value is None else value
        SamplingContext.__init__(self, **values)


def graph_context_class(
    defaults: Mapping[str, Any] | None = None,
    name: str = "GraphContext",
    base: type[BaseContext] | None = None,
) -> type[BaseContext]:
    """The context schema of one method graph: the method's own context class ``base``
    (default: every knob, :class:`GraphContext`) made lenient like :class:`GraphContext`,
    with ``defaults`` (the factory's, already validated against the method's knobs) as
    its field defaults, so Studio's context form shows them too."""
    if base is None or base is SamplingContext:
        if not defaults:
            return GraphContext
        base = GraphContext
    own = base.__dataclass_fields__
    cls = dataclasses.make_dataclass(
        name,
        [
            (k, own[k].type, dataclasses.field(default=v, kw_only=True))
            for k, v in (defaults or {}).items()
        ],
        bases=(base,),
        kw_only=True,
    )
    strict: Any = vars(cls)["__init__"]

    def __init__(self: Any, **knobs: Any) -> None:  # missing or None: the field's default
        strict(self, **{k: v for k, v in knobs.items() if v is not None and k in own})

    type.__setattr__(cls, "__init__", __init__)
    cls.__module__ = base.__module__  # string annotations resolve there (JSON schema)
    doc = f"{base.__doc__ or ''}\n\nBuilt leniently: unknown keys are ignored, None keeps the default."
    cls.__doc__ = doc + (f"\n\nFactory defaults: {dict(defaults)!r}" if defaults else "")
    return cls


def context_knobs(schema: type[Any]) -> tuple[str, ...]:
    """The knob names of a context class, in declaration order."""
    return tuple(f.name for f in dataclasses.fields(schema))


def read_context(source: Any, schema: type[Any] = GraphContext) -> Any:
    """The knobs of ``source`` (the run's context: a dict, a dataclass, a pydantic model, any
    object with attributes, or ``None``) as ``schema``: knobs it has and sets (not ``None``)
    are taken, the others keep ``schema``'s defaults, everything else is ignored.

    >>> read_context({"budget": 5, "user_id": "u1"}).budget
    5
    """
    if source is None:
        return schema()
    names = context_knobs(schema)
    if isinstance(source, Mapping):
        knobs = {k: source.get(k) for k in names}
    else:
        knobs = {k: getattr(source, k, None) for k in names}
    try:
        return schema(**knobs)
    except (TypeError, ValueError) as exc:
        raise UserError(f"{exc} (read from the run's context, a {type(source).__name__})") from exc
