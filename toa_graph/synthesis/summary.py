"""A run's summary (summary.json, the per-prompt table and the closing report, as text)
and its progress bar."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class RunningMean:
    """A mean kept as a sum and a count (constant memory however many values)."""

    total: float = 0.0
    count: int = 0

    def add(self, x: float) -> None:
        self.total += x
        self.count += 1

    @property
    def value(self) -> float | None:
        return self.total / self.count if self.count else None


@dataclass
class PromptResult:
    """One line of the per-prompt summary table."""

    id: str
    best_reward: float | None
    best_agent: str | None
    generations: int
    tokens: int
    seconds: float
    error: str | None = None
    cost: float | None = None
    """At the agents' prices; ``None`` when no agent has prices."""


@dataclass
class SynthesisSummary:
    method: str
    output_dir: str
    config_digest: str
    inputs: int = 0
    """Usable input rows considered (after --limit)."""
    done: int = 0
    """Records written by this run."""
    skipped: int = 0
    """Ids already in records.jsonl (resume)."""
    failed: int = 0
    bad_lines: int = 0
    mean_best_reward: float | None = None
    """Over this run's records."""
    mean_best_reward_all: float | None = None
    """Over every record in the output (earlier runs included)."""
    generations: int = 0
    failed_generations: int = 0
    tokens: int = 0
    cost: float | None = None
    """Over this run's records, at the agents' prices; ``None`` when none has prices."""
    wall_s: float = 0.0
    bytes_written: int = 0
    torn_bytes_repaired: int = 0
    resume_scan_s: float = 0.0
    """Seconds the resume scan of the records file took."""
    generations_reused: int = 0
    """Generations answered from the generation store (paid for by an earlier run)."""
    digest_mismatch: bool = False
    """The output already holds records made with another config/method/context."""
    unrunnable: dict[str, int] = field(default_factory=dict)
    """Prompts the method cannot run, by reason (recorded as ``skipped``, not retried)."""
    reward_counters: dict[str, int] | None = None
    """The reward's own counters (its optional ``counters()``, e.g. how often a judge fell
    back to text parsing), summed over every process that scored; ``None`` when it has none."""
    rows: list[PromptResult] = field(default_factory=list)

    def add_record(self, record: Mapping[str, Any], *, row: bool) -> float | None:
        """Count one written record (and its table row); return its best reward (``None``
        for a prompt the method could not run: a ``skipped`` record)."""
        totals, best = record["totals"], record["best"]
        if record.get("skipped"):
            reason = str(record["skipped"])[:160]
            self.unrunnable[reason] = self.unrunnable.get(reason, 0) + 1
            return None
        reward = float(best["reward"])
        self.done += 1
        self.generations += totals["generations"]
        self.failed_generations += totals["failed_generations"]
        self.tokens += totals["tokens"]["total_tokens"]
        cost = totals.get("cost")
        if cost is not None:
            self.cost = (self.cost or 0.0) + float(cost)
        if row:
            self.rows.append(
                PromptResult(
                    str(record["id"]), reward, best.get("agent"), totals["generations"],
                    totals["tokens"]["total_tokens"], round(float(totals["wall_s"]), 3),
                    cost=cost,
                )
            )  # fmt: skip
        return reward

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("rows")
        counters = self.reward_counters or {}
        if counters.get("remote_items"):  # a `kind: remote` reward (toa-graph serve-reward)
            d["reward_server_mean_batch_size"] = round(
                counters["remote_batch_size_sum"] / counters["remote_items"], 2
            )
        return d


MAX_TABLE_ROWS = 50
"""Rows of the per-prompt table printed after a run (all of them are in records.jsonl)."""


def format_table(summary: Any, limit: int = MAX_TABLE_ROWS) -> str:
    """Per-prompt rows (id, best reward, best agent, generations, tokens, seconds; cost
    when an agent has prices)."""
    from toa_graph.cost import money

    rows = summary.rows
    priced = any(getattr(r, "cost", None) is not None for r in rows)
    header = f"{'id':<24} {'best':>8} {'best agent':<18} {'gens':>5} {'tokens':>8} {'seconds':>8}"
    header += f" {'cost':>10}" if priced else ""
    lines = [header, "-" * len(header)]
    for r in rows[:limit]:
        if r.error:
            lines.append(f"{r.id[:24]:<24} {'FAILED':>8} {r.error[:60]}")
        else:
            lines.append(
                f"{r.id[:24]:<24} {r.best_reward:8.3f} {(r.best_agent or '')[:18]:<18} "
                f"{r.generations:5d} {r.tokens:8d} {r.seconds:8.2f}"
                + (f" {money(r.cost):>10}" if priced else "")
            )
    if len(rows) > limit:
        lines.append(f"... {len(rows) - limit} more (see records.jsonl)")
    return "\n".join(lines)


def format_summary(s: Any) -> str:
    mean = "n/a" if s.mean_best_reward is None else f"{s.mean_best_reward:.4f}"
    parts = [
        f"method {s.method}: {s.done} done, {s.skipped} skipped (already done), {s.failed} failed, "
        f"{s.bad_lines} bad input lines",
        f"mean best reward {mean} | {s.generations} generations "
        f"({s.failed_generations} failed) | {s.tokens} tokens"
        + ("" if getattr(s, "cost", None) is None else f" | cost {s.cost:.6g}")
        + f" | {s.wall_s:.1f} s",
        f"records: {Path(s.output_dir) / 'records.jsonl'}",
    ]
    if s.bad_lines:
        parts.append(f"bad input lines: {Path(s.output_dir) / 'errors.jsonl'}")
    if s.failed:
        parts.append(
            f"failed prompts (retried on the next run): {Path(s.output_dir) / 'failed.jsonl'}"
        )
        reasons = Counter(r.error[:160] for r in getattr(s, "rows", []) if r.error)
        for reason, n in reasons.most_common(3):
            parts.append(f"  {n} x {reason}")
    unrunnable = getattr(s, "unrunnable", None) or {}
    if unrunnable:
        n_skipped = sum(unrunnable.values())
        parts.append(
            f"{n_skipped} prompt(s) the method cannot run, recorded as skipped (not retried):"
        )
        for reason, n in Counter(unrunnable).most_common(3):
            parts.append(f"  {n} x {reason}")
    if s.torn_bytes_repaired:
        parts.append(
            f"cut a torn last line ({s.torn_bytes_repaired} bytes) left by an interrupted run"
        )
    if s.digest_mismatch:
        parts.append("warning: the output holds records made with another config/method/context")
    return "\n".join(parts)


ProgressFactory = Callable[..., Any]


def _tqdm(total: int | None, desc: str) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="prompt", dynamic_ncols=True, smoothing=0.1)


def merge_counters(*parts: Mapping[str, int] | None) -> dict[str, int] | None:
    """Sum counters key by key (one per process that scored); ``None`` when none had any."""
    present = [p for p in parts if p is not None]
    if not present:
        return None
    out: dict[str, int] = {}
    for p in present:
        for k, v in p.items():
            out[k] = out.get(k, 0) + int(v)
    return out
