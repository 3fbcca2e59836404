"""Self-MoA and Self-MoA-Seq (Li et al., arXiv 2502.00674) as MoA options: who fills the
proposer slots, and the sequential variant's plan (pure functions; the graph is MoA's).

Self-MoA (``proposers="self"``): every proposer slot (one per configured agent) is a sample
of one agent, ``context.agent`` (default: the first), so Self-MoA over agent A is MoA over
that many copies of A.

Self-MoA-Seq (``seq_window=w``): a stack's proposals are aggregated one window at a time,
the first window holding the first ``w`` proposals, each later one the previous aggregate
plus the next ``w - 1`` proposals, so every proposal is shown in exactly one window and no
call sees more than ``w`` answers. Stacks repeat until the budget is spent; a stack that
does not fit is cut to the proposals whose windows fit.
"""

from __future__ import annotations

from collections.abc import Sequence

from toa_graph.context import SamplingContext

__all__ = ["proposer_slots", "seq_offsets", "seq_plan", "seq_windows"]


def proposer_slots(names: Sequence[str], ctx: SamplingContext) -> list[str]:
    """The agent of each proposer slot: the agents (MoA), or ``context.agent`` (default
    the first) in every slot (Self-MoA); an unknown agent is a ValueError naming it."""
    if ctx.proposers != "self":
        return list(names)
    agent = ctx.agent or names[0]
    if agent not in names:
        raise ValueError(
            f"Self-MoA: context.agent {agent!r} is not one of the agents {list(names)}"
        )
    return [agent] * len(names)


def seq_windows(proposals: int, window: int) -> list[list[int]]:
    """The proposals (indices in the stack) each aggregation of a stack shows; a lone
    proposal needs none.

    >>> seq_windows(7, 3)
    [[0, 1, 2], [3, 4], [5, 6]]
    >>> seq_windows(1, 3)
    []
    """
    if window < 2:
        raise ValueError(f"context.seq_window must be >= 2, got {window}")
    if proposals < 2:
        return []
    windows = [list(range(min(window, proposals)))]
    while windows[-1][-1] + 1 < proposals:
        start = windows[-1][-1] + 1
        windows.append(list(range(start, min(start + window - 1, proposals))))
    return windows


def seq_plan(budget: int, slots: int, window: int) -> list[int]:
    """Proposals per stack: as many as there are slots while their aggregations fit in
    the budget (every generation is a proposal or an aggregation: exactly ``budget``).

    >>> seq_plan(8, 3, 2)
    [3, 2]
    """
    plan: list[int] = []
    left = budget
    while left > 0:
        fits = [p for p in range(1, slots + 1) if p + len(seq_windows(p, window)) <= left]
        plan.append(fits[-1])
        left -= fits[-1] + len(seq_windows(fits[-1], window))
    return plan


def seq_offsets(plan: Sequence[int], window: int) -> list[int]:
    """Index of each stack's first generation: its proposals, then its aggregations."""
    offsets = [0]
    for p in plan:
        offsets.append(offsets[-1] + p + len(seq_windows(p, window)))
    return offsets
