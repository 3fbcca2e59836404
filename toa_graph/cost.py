"""What a run costs: per-agent prices, the cost ledger, and limits in tokens or money.

Pure arithmetic, no I/O and no LangGraph: the config, the method graphs, the records and
the server all call these.

- **Prices** (:class:`Prices`, an agent's ``price_per_million``): money per million input
  and output tokens; ``reasoning`` when the provider bills thinking apart, else thinking
  is billed as output (it is part of ``output_tokens``).
- **Ledger**: a sample's ``cost`` is its usage at its agent's prices
  (:func:`usage_cost`); a record's totals sum tokens and cost per agent and in all
  (:func:`ledger`).
- **Limits**: ``max_tokens_per_prompt`` / ``max_cost_per_prompt`` (context knobs). Before
  a step, a method asks :func:`plays_that_fit` how many of its plays fit at their worst
  case: each play's prompt bounded by :func:`input_bound` plus its ``max_tokens`` of
  output, at its agent's prices. A step that does not fit is not started, so the limit
  is never passed.

Bounding a prompt's tokens: every token of a byte-level BPE or byte-fallback tokenizer
(GPT, Llama 3, Qwen, Mistral, ...) covers at least one byte of text, so a message's
content costs at most its UTF-8 length; the chat template's own tokens are bounded by
:data:`MESSAGE_OVERHEAD` per message plus :data:`PROMPT_OVERHEAD` per request (role
headers, the generation prompt, a default system preamble such as Llama 3's date lines).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from fractions import Fraction
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from toa_graph.errors import UserError

__all__ = [
    "LIMIT_KNOBS",
    "MESSAGE_OVERHEAD",
    "PROMPT_OVERHEAD",
    "Prices",
    "check_limits",
    "fit",
    "has_limits",
    "input_bound",
    "ledger",
    "money",
    "play_bound",
    "play_bounds",
    "plays_that_fit",
    "spent",
    "step_fits",
    "usage_cost",
]

PROMPT_OVERHEAD = 64
"""Template tokens per request (beginning of text, generation prompt, default preamble)."""
MESSAGE_OVERHEAD = 8
"""Template tokens per message (role header, end of turn)."""
LIMIT_KNOBS = ("max_tokens_per_prompt", "max_cost_per_prompt")
"""The context knobs that limit a prompt's spend (beside the generation ``budget``)."""

_MILLION = 1_000_000


class Prices(BaseModel):
    """An agent's ``price_per_million``: money per million tokens (any currency, the same
    for every agent of a config), e.g. ``{input: 0.15, output: 0.6}``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    input: float = Field(ge=0, allow_inf_nan=False)
    output: float = Field(ge=0, allow_inf_nan=False)
    reasoning: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    """Thinking tokens, when billed apart; ``None``: billed as output."""

    @property
    def worst_output(self) -> float:
        """The highest price an output token can have (thinking or answer)."""
        return max(self.output, self.reasoning if self.reasoning is not None else self.output)


def money(x: float | None) -> str:
    """A cost as tables show it: ``-`` when unknown, four significant digits below 100.

    >>> money(0.000123456), money(1234.5), money(None)
    ('0.0001235', '1,234.50', '-')
    """
    if x is None:
        return "-"
    return f"{x:,.2f}" if x >= 100 else f"{x:.4g}"


def usage_cost(usage: Mapping[str, Any], prices: Prices) -> Fraction:
    """The exact cost of one generation's ``usage`` at ``prices`` (float it to store).

    >>> float(usage_cost({"input_tokens": 1000, "output_tokens": 500}, Prices(input=1, output=4)))
    0.003
    """
    inp = int(usage.get("input_tokens", 0))
    out = int(usage.get("output_tokens", 0))
    thought = int(usage.get("reasoning_tokens", 0)) if prices.reasoning is not None else 0
    total = Fraction(inp) * Fraction(prices.input) + Fraction(out - thought) * Fraction(
        prices.output
    )
    if thought:
        total += Fraction(thought) * Fraction(prices.reasoning or 0.0)
    return total / _MILLION


_TOKEN_FIELDS = ("input_tokens", "output_tokens", "reasoning_tokens", "total_tokens")


def ledger(samples: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Tokens and cost per agent and in all, from the samples' ``usage`` and ``cost``.

    ``{"cost": float | None, "by_agent": {agent: {"generations", "input_tokens",
    "output_tokens", "total_tokens", ["reasoning_tokens"], "cost"}}}``; a cost is ``None``
    where no sample of it has one (no prices), and the sums are exact (``math.fsum``).
    """
    agents: dict[str, dict[str, Any]] = {}
    costs: dict[str, list[float]] = {}
    for s in samples:
        name = str(s.get("agent"))
        row = agents.setdefault(name, {"generations": 0, **dict.fromkeys(_TOKEN_FIELDS, 0)})
        row["generations"] += 1
        usage = s.get("usage") or {}
        for k in _TOKEN_FIELDS:
            row[k] += int(usage.get(k, 0))
        if s.get("cost") is not None:
            costs.setdefault(name, []).append(float(s["cost"]))
    for name, row in agents.items():
        if not row["reasoning_tokens"]:
            del row["reasoning_tokens"]
        row["cost"] = math.fsum(costs[name]) if name in costs else None
    every = [c for cs in costs.values() for c in cs]
    return {"cost": math.fsum(every) if every else None, "by_agent": agents}


def spent(samples: Iterable[Mapping[str, Any]]) -> tuple[int, float]:
    """``(total tokens, cost)`` of ``samples`` so far (samples without a cost add 0)."""
    tokens, costs = 0, []
    for s in samples:
        tokens += int((s.get("usage") or {}).get("total_tokens", 0))
        if s.get("cost") is not None:
            costs.append(float(s["cost"]))
    return tokens, math.fsum(costs)


def input_bound(messages: Sequence[Mapping[str, Any]]) -> int:
    """The most tokens ``messages`` can cost as a prompt (see the module notes).

    >>> input_bound([{"role": "user", "content": "héllo"}])
    78
    """
    from toa_graph.text import content_text

    size = sum(len(content_text(m.get("content")).encode("utf-8")) for m in messages)
    return PROMPT_OVERHEAD + MESSAGE_OVERHEAD * len(messages) + size


def play_bound(input_tokens: int, max_tokens: int, prices: Prices | None) -> tuple[int, float]:
    """A play's worst case ``(tokens, cost)``: its prompt bound plus ``max_tokens`` of output, priced at the
    dearest output rate (cost 0 without prices)."""
    cost = 0.0
    if prices is not None:
        cost = (input_tokens * prices.input + max_tokens * prices.worst_output) / _MILLION
    return input_tokens + max_tokens, cost


def plays_that_fit(
    spent_so_far: tuple[int, float],
    bounds: Sequence[tuple[int, float]],
    *,
    max_tokens_per_prompt: int | None,
    max_cost_per_prompt: float | None,
) -> tuple[int, str | None]:
    """How many of ``bounds`` (plays' worst cases, in order) fit under the limits after
    ``spent_so_far``; and the knob that stops the first play that does not fit (``None``
    when all fit).

    >>> plays_that_fit((90, 0.0), [(5, 0.0), (5, 0.0), (5, 0.0)],
    ...                max_tokens_per_prompt=100, max_cost_per_prompt=None)
    (2, 'max_tokens_per_prompt')
    """
    tokens, cost = spent_so_far
    for i, (t, c) in enumerate(bounds):
        tokens += t
        cost += c
        if max_tokens_per_prompt is not None and tokens > max_tokens_per_prompt:
            return i, "max_tokens_per_prompt"
        if max_cost_per_prompt is not None and cost > max_cost_per_prompt:
            return i, "max_cost_per_prompt"
    return len(bounds), None


def check_limits(
    agents: Mapping[str, tuple[Prices | None, int | None]],
    context: Mapping[str, Any] | Any,
) -> None:
    """Raise :class:`~toa_graph.errors.UserError` naming the knob when a limit cannot be
    kept: ``max_cost_per_prompt`` with an agent that has no prices, or either limit with
    an agent whose ``max_tokens`` is unknown (no output bound). ``agents``: name ->
    (prices, the agent's own ``max_tokens``); a context ``max_tokens`` covers every agent."""

    def knob(name: str) -> Any:
        return context.get(name) if isinstance(context, Mapping) else getattr(context, name, None)

    limits = [k for k in LIMIT_KNOBS if knob(k) is not None]
    if not limits:
        return
    if knob("max_cost_per_prompt") is not None:
        unpriced = [n for n, (p, _) in agents.items() if p is None]
        if unpriced:
            raise UserError(
                f"context.max_cost_per_prompt needs prices: agent(s) {unpriced} have no "
                "price_per_million in the config"
            )
    if knob("max_tokens") is None:
        unbounded = [n for n, (_, m) in agents.items() if m is None]
        if unbounded:
            raise UserError(
                f"context.{limits[0]} needs each play's max_tokens: set max_tokens for "
                f"agent(s) {unbounded} in the config, or the max_tokens knob"
            )


def play_bounds(
    pool: Any, ctx: Any, plays: Sequence[tuple[str, Sequence[Mapping[str, Any]]]]
) -> list[tuple[int, float]]:
    """Each play's worst case ``(tokens, cost)``; a play is ``(agent, messages)``. ``pool``
    answers ``prices(agent)`` and ``max_tokens(agent)`` (an
    :class:`~toa_graph.agents.AgentPool`); a play's output is bounded by the context's
    ``max_tokens``, else the agent's. :class:`~toa_graph.errors.UserError` when a limit of
    ``ctx`` cannot be kept (:func:`check_limits`)."""
    agents = {a: (pool.prices(a), pool.max_tokens(a)) for a in dict.fromkeys(a for a, _ in plays)}
    check_limits(agents, ctx)
    return [
        play_bound(input_bound(msgs), ctx.max_tokens or agents[a][1] or 0, agents[a][0])
        for a, msgs in plays
    ]


def has_limits(ctx: Any) -> bool:
    """Whether the context sets ``max_tokens_per_prompt`` or ``max_cost_per_prompt``."""
    return ctx.max_tokens_per_prompt is not None or ctx.max_cost_per_prompt is not None


def fit(
    samples: Iterable[Mapping[str, Any]], bounds: Sequence[tuple[int, float]], ctx: Any
) -> tuple[int, str | None]:
    """:func:`plays_that_fit` after the run's ``samples`` so far, under ``ctx``'s limits."""
    return plays_that_fit(
        spent(samples),
        bounds,
        max_tokens_per_prompt=ctx.max_tokens_per_prompt,
        max_cost_per_prompt=ctx.max_cost_per_prompt,
    )


def step_fits(
    pool: Any,
    ctx: Any,
    samples: Iterable[Mapping[str, Any]],
    plays: Sequence[tuple[str, Sequence[Mapping[str, Any]]]],
) -> tuple[int, str | None]:
    """The check every method makes before a step: how many of ``plays`` (``(agent,
    messages)``, in order) it may start under the context's limits after ``samples`` (the
    run's samples so far), and the knob that stops the rest (``None``: all may start).
    Without limits every play may start (nothing is computed)."""
    if not has_limits(ctx):
        return len(plays), None
    return fit(samples, play_bounds(pool, ctx, plays), ctx)
