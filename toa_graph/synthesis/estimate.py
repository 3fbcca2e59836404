"""``synthesize --estimate``: extrapolate tokens and cost per agent and wall time for a whole input
from the records of a few prompts run for real. Pure arithmetic on records (no I/O)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from toa_graph.cost import money

__all__ = ["AgentEstimate", "Estimate", "extrapolate", "format_estimate"]


@dataclass
class AgentEstimate:
    """One agent's generations and tokens: measured on the sample, projected to the input."""

    agent: str
    generations: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    projected_generations: int = 0
    projected_input_tokens: int = 0
    projected_output_tokens: int = 0
    cost: float | None = None
    """At the agent's prices (``None``: it has none)."""
    projected_cost: float | None = None


@dataclass
class Estimate:
    """What the whole input would cost, extrapolated from ``sampled`` finished prompts."""

    total_prompts: int
    sampled: int
    failed: int
    concurrency: int
    sample_wall_s: float
    mean_prompt_s: float
    wall_s: float
    """Whole input at ``concurrency`` prompts in flight, if a prompt's latency holds there."""
    wall_s_sample_rate: float
    """Whole input at the sample's own throughput (prompts per second)."""
    agents: list[AgentEstimate] = field(default_factory=list)


def extrapolate(
    records: Iterable[Mapping[str, Any]],
    *,
    total_prompts: int,
    concurrency: int,
    sample_wall_s: float,
    failed: int = 0,
) -> Estimate:
    """Scale the per-prompt means of ``records`` (generations and tokens per agent, from
    each sample's ``usage``) to ``total_prompts``.

    Wall time two ways: ``ceil(total / concurrency)`` waves of the mean prompt latency
    (optimistic when the servers slow down under more load), and ``total`` at the sample's
    measured prompts per second (pessimistic when the sample ran fewer prompts at once
    than ``concurrency``)."""
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency}")
    recs = list(records)
    n = len(recs)
    agents: dict[str, AgentEstimate] = {}
    for rec in recs:
        for s in rec.get("samples") or []:
            a = agents.setdefault(str(s.get("agent")), AgentEstimate(str(s.get("agent"))))
            usage = s.get("usage") or {}
            a.generations += 1
            a.input_tokens += int(usage.get("input_tokens", 0))
            a.output_tokens += int(usage.get("output_tokens", 0))
            if s.get("cost") is not None:
                a.cost = (a.cost or 0.0) + float(s["cost"])
    scale = total_prompts / n if n else 0.0
    for a in agents.values():
        a.projected_generations = round(a.generations * scale)
        a.projected_input_tokens = round(a.input_tokens * scale)
        a.projected_output_tokens = round(a.output_tokens * scale)
        a.projected_cost = None if a.cost is None else a.cost * scale
    mean_s = sum(float(r["totals"]["wall_s"]) for r in recs) / n if n else 0.0
    waves = math.ceil(total_prompts / concurrency)
    done = n + failed
    return Estimate(
        total_prompts=total_prompts,
        sampled=n,
        failed=failed,
        concurrency=concurrency,
        sample_wall_s=sample_wall_s,
        mean_prompt_s=mean_s,
        wall_s=waves * mean_s,
        wall_s_sample_rate=total_prompts * sample_wall_s / done if done else 0.0,
        agents=sorted(agents.values(), key=lambda a: a.agent),
    )


def _duration(s: float) -> str:
    if s < 120:
        return f"{s:.1f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


def format_estimate(est: Estimate) -> str:
    """The table ``synthesize --estimate`` prints."""
    priced = any(a.projected_cost is not None for a in est.agents)
    header = f"{'agent':<20} {'generations':>12} {'input tokens':>14} {'output tokens':>14}"
    header += f" {'cost':>12}" if priced else ""
    lines = [
        f"estimate from {est.sampled} prompts run for real "
        f"({est.failed} failed, {est.sample_wall_s:.1f} s), for all {est.total_prompts} prompts:",
        header,
        "-" * len(header),
    ]
    totals = [0, 0, 0]
    for a in est.agents:
        row = (a.projected_generations, a.projected_input_tokens, a.projected_output_tokens)
        totals = [t + v for t, v in zip(totals, row, strict=True)]
        line = f"{a.agent[:20]:<20} {row[0]:>12,} {row[1]:>14,} {row[2]:>14,}"
        lines.append(line + (f" {money(a.projected_cost):>12}" if priced else ""))
    line = f"{'total':<20} {totals[0]:>12,} {totals[1]:>14,} {totals[2]:>14,}"
    costs = [a.projected_cost for a in est.agents if a.projected_cost is not None]
    lines.append(line + (f" {money(sum(costs)):>12}" if priced else ""))
    if priced and len(costs) < len(est.agents):
        lines.append("(cost: agents without price_per_million count as 0)")
    lines.append(
        f"wall time: ~{_duration(est.wall_s)} at --concurrency {est.concurrency} "
        f"(mean prompt {est.mean_prompt_s:.2f} s, if latency holds at that load); "
        f"~{_duration(est.wall_s_sample_rate)} at the estimate's own rate"
    )
    if est.failed:
        lines.append(f"warning: {est.failed} of the sampled prompts failed (not counted above)")
    return "\n".join(lines)
