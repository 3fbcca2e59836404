"""Per-run knobs: one ``@dataclass`` per method, sharing :class:`BaseContext`.

Each method graph reads its own context class through ``Runtime[...]``; the registry
(:mod:`toa_graph.registry`) says which class belongs to which method, so configs and
server requests are checked against the knobs the method really has.
:class:`SamplingContext` carries every knob of every method. A method graph's own context
schema is a :class:`GraphContext` (every knob, lenient): a plain dict passed to
``graph.ainvoke(..., context={...})`` becomes one, keys that are not knobs ignored.

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
    "BaseContext",
    "DebateContext",
    "GraphContext",
    "MoaContext",
    "SamplingContext",
    "ToaContext",
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
    """Generations per prompt. Every method spends exactly this many (debate: at most)."""
    agent: str | None = None
    """Agent used by single-agent methods (random, prs); default: the first agent."""
    temperature: float | None = None
    """Sampling temperature override for every agent; ``None`` keeps each agent's own."""
    max_tokens: int | None = None
    """Max new tokens override for every agent; ``None`` keeps each agent's own."""
    seed: int = 0
    """Seed for the methods that shuffle (sequential refine chains, MoA reference subsets,
    the debate's answer order)."""

    def __post_init__(self) -> None:
        _at_least("budget", self.budget, 1)
        _at_least("max_tokens", self.max_tokens, 1)


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

    def __post_init__(self) -> None:
        super().__post_init__()
        _at_least("layers", self.layers, 1)
        _at_least("num_references", self.num_references, 1)


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


@dataclass(kw_only=True)
class SamplingContext(ToaContext, MoaContext, DebateContext):
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
    defaults: Mapping[str, Any] | None = None, name: str = "GraphContext"
) -> type[GraphContext]:
    """The context schema of one method graph: :class:`GraphContext` whose field defaults
    are ``defaults`` (the factory's; already validated against the method's knobs), so
    Studio's context form shows them too."""
    if not defaults:
        return GraphContext
    own = SamplingContext.__dataclass_fields__
    cls = dataclasses.make_dataclass(
        name,
        [(k, own[k].type, dataclasses.field(default=v, kw_only=True)) for k, v in defaults.items()],
        bases=(GraphContext,),
        init=False,
        kw_only=True,
    )
    cls.__module__ = __name__  # string annotations resolve here (JSON schema)
    cls.__doc__ = f"{GraphContext.__doc__}\n\nFactory defaults: {dict(defaults)!r}"
    return cls


def read_context(source: Any, schema: type[GraphContext] = GraphContext) -> GraphContext:
    """The knobs of ``source`` (the run's context: a dict, a dataclass, a pydantic model, any
    object with attributes, or ``None``) as ``schema``: knobs it has and sets (not ``None``)
    are taken, the others keep ``schema``'s defaults, everything else is ignored.

    >>> read_context({"budget": 5, "user_id": "u1"}).budget
    5
    """
    if source is None:
        return schema()
    if isinstance(source, Mapping):
        knobs = {k: source.get(k) for k in KNOBS}
    else:
        knobs = {k: getattr(source, k, None) for k in KNOBS}
    try:
        return schema(**knobs)
    except (TypeError, ValueError) as exc:
        raise UserError(f"{exc} (read from the run's context, a {type(source).__name__})") from exc
