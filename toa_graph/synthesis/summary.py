"""A run's summary (summary.json and the per-prompt table) and its progress bar."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any


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
    wall_s: float = 0.0
    bytes_written: int = 0
    torn_bytes_repaired: int = 0
    digest_mismatch: bool = False
    unrunnable: dict[str, int] = field(default_factory=dict)
    """Prompts the method cannot run, by reason (recorded as ``skipped``, not retried)."""
    """The output already holds records made with another config/method/context."""
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
        if row:
            self.rows.append(
                PromptResult(
                    str(record["id"]), reward, best.get("agent"), totals["generations"],
                    totals["tokens"]["total_tokens"], round(float(totals["wall_s"]), 3),
                )
            )  # fmt: skip
        return reward

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("rows")
        return d


ProgressFactory = Callable[..., Any]


def _tqdm(total: int, desc: str) -> Any:
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
