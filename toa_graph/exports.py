"""Turn synthesis records into training data that TRL reads as is.

* SFT: ``{"messages": [...prompt turns, {"role": "assistant", "content": best}]}`` -- the
  conversational format of TRL's ``SFTTrainer``.
* DPO: ``{"prompt": [...turns], "chosen": [assistant turn], "rejected": [assistant turn]}``
  -- TRL's conversational preference format with an explicit prompt (``DPOTrainer``
  applies the chat template). Chosen is the best-ranked response, rejected the k-th
  ranked; the TOA paper sampled 160 responses and paired the best with the 30th.
* SFT prompt/completion (``sft-completion``): ``{"prompt": [turns], "completion": [assistant
  turn]}`` -- TRL's conversational prompt-completion format, for which ``SFTTrainer``
  trains on the completion only by default (``completion_only_loss``).
* KTO (``kto``): unpaired ``{"prompt", "completion", "label"}`` rows -- the DPO pair split
  in two: the chosen response labelled ``True``, the rejected one ``False``.
* Reward-model pairs (``rm``): the DPO pair plus ``margin`` = chosen minus rejected reward
  (TRL's ``RewardTrainer`` reads ``margin`` when present).
* All samples (``samples``): ``{"prompt", "completions": [{"model", "text", "reward"}]}``,
  every scored response of a prompt, UltraFeedback-like.
* D&R SFT (``dr-sft``): every correct answer of a debate, prompt = the plain answer template.
* T-DPO (``tdpo``): per debate round, correct x incorrect answer pairs with the prompt that
  round was really generated from (long debate prompts chunked to ``max_prompt_tokens``).

Reasoning models (SFT and DPO kinds): a sample's thinking trace goes with its answer by
default (``reasoning="keep"``), where TRL and current chat templates read it: the
assistant turn's ``reasoning_content`` field (``reasoning_format="field"``) or ``<think>``
tags before the answer in its ``content`` (``"tags"``); ``reasoning="drop"`` exports the
final answers alone.

Every builder is a pure function of records; :func:`write_rows` writes JSONL or Parquet
that ``datasets.load_dataset("json" | "parquet", data_files=...)`` loads; an export with no
rows raises :class:`EmptyExportError` and writes nothing.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from toa_graph import text
from toa_graph.export_io import (
    PARQUET_BATCH,
    EmptyExportError,
    read_jsonl_rows,
    read_record_files,
    write_rows,
)
from toa_graph.reasoning import with_reasoning
from toa_graph.state import ranked

__all__ = [
    "PAPER_REJECTED_RANK",
    "PARQUET_BATCH",
    "EmptyExportError",
    "ExportStats",
    "default_rejected_rank",
    "dpo_pair",
    "dpo_rows",
    "dr_sft_rows",
    "kto_rows",
    "prompt_messages",
    "ranked_samples",
    "read_jsonl_rows",
    "read_record_files",
    "rm_rows",
    "samples_rows",
    "sft_completion_rows",
    "sft_example",
    "sft_rows",
    "tdpo_rows",
    "write_rows",
]

PAPER_REJECTED_RANK = (30, 160)
"""The TOA paper's DPO pairs: best of 160 responses vs. the 30th ranked."""


@dataclass
class ExportStats:
    records: int = 0
    written: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    """Reason -> count of records that gave no row."""
    with_reasoning: int = 0
    """Rows whose assistant turns carry a thinking trace (SFT and DPO kinds)."""
    one_sided_reasoning: int = 0
    """DPO pairs where only one side has a trace (kept; the dataset card says how many)."""

    def skip(self, reason: str) -> None:
        self.skipped[reason] += 1

    def describe(self) -> str:
        parts = [f"{self.written} rows from {self.records} records"]
        if self.skipped:
            parts.append("skipped: " + ", ".join(f"{n} {r}" for r, n in self.skipped.most_common()))
        return "; ".join(parts)


REASONING_FORMATS = ("field", "tags")
"""Where a kept trace goes: the turn's ``reasoning_content`` field, or ``<think>`` tags."""


def assistant_turn(
    sample: Mapping[str, Any], reasoning: str = "keep", reasoning_format: str = "field"
) -> dict[str, str]:
    """A sample as an assistant turn: its answer, with its trace unless dropped.

    >>> assistant_turn({"text": "4", "reasoning": "2+2"})
    {'role': 'assistant', 'content': '4', 'reasoning_content': '2+2'}
    >>> assistant_turn({"text": "4", "reasoning": "2+2"}, "keep", "tags")["content"]
    '<think>\\n2+2\\n</think>\\n\\n4'
    """
    if reasoning not in ("keep", "drop") or reasoning_format not in REASONING_FORMATS:
        raise ValueError(f"reasoning must be keep or drop and its format field or tags, got "
                         f"{reasoning!r} / {reasoning_format!r}")  # fmt: skip
    trace = sample.get("reasoning") if reasoning == "keep" else None
    if trace and reasoning_format == "tags":
        return {"role": "assistant", "content": with_reasoning(sample["text"], trace)}
    turn = {"role": "assistant", "content": sample["text"]}
    if trace:
        turn["reasoning_content"] = trace
    return turn


def _has_trace(turns: Sequence[Mapping[str, Any]]) -> bool:
    return any(t.get("reasoning_content") or t["content"].startswith("<think>") for t in turns)


def prompt_messages(prompt: Any) -> list[dict[str, str]]:
    """A record's prompt as chat messages (a plain string becomes one user turn)."""
    return text.prompt_messages(prompt, text_only=True)


def _usable(sample: Mapping[str, Any]) -> bool:
    r = sample.get("reward")
    return (
        not sample.get("error")
        and isinstance(r, int | float)
        and not isinstance(r, bool)
        and math.isfinite(r)  # NaN / inf is no score (and inf is not JSON)
        and isinstance(sample.get("text"), str)
        and bool(sample["text"].strip())
    )


def ranked_samples(record: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Usable samples (scored, no error, non-empty text), best first; ties keep generation order."""
    samples = record.get("samples") or []
    return [cast(dict[str, Any], s) for s in ranked(samples) if _usable(s)]


def default_rejected_rank(n: int) -> int:
    """The paper's 30th of 160, scaled to ``n`` usable samples: ``round(30/160 * n)``,
    clamped to ``[2, n]`` (rank 1 is the chosen one)."""
    num, den = PAPER_REJECTED_RANK
    return max(2, min(n, round(num / den * n)))


# ---------------------------------------------------------------- SFT


def sft_example(
    record: Mapping[str, Any],
    *,
    keep_id: bool = False,
    reasoning: str = "keep",
    reasoning_format: str = "field",
) -> dict[str, Any] | None:
    """``{"messages": prompt turns + best answer}`` (with its trace: :func:`assistant_turn`);
    ``None`` when there is no usable best."""
    best = record.get("best")
    if not isinstance(best, Mapping) or not _usable(best):
        ranked = ranked_samples(record)
        if not ranked:
            return None
        best = ranked[0]
    row: dict[str, Any] = {
        "messages": [
            *prompt_messages(record["prompt"]),
            assistant_turn(best, reasoning, reasoning_format),
        ]
    }
    if keep_id:
        row["id"] = str(record.get("id"))
    return row


def sft_rows(
    records: Iterable[Mapping[str, Any]],
    *,
    keep_id: bool = False,
    stats: ExportStats | None = None,
    reasoning: str = "keep",
    reasoning_format: str = "field",
) -> Iterator[dict[str, Any]]:
    stats = stats if stats is not None else ExportStats()
    for rec in records:
        stats.records += 1
        row = sft_example(
            rec, keep_id=keep_id, reasoning=reasoning, reasoning_format=reasoning_format
        )
        if row is None:
            stats.skip("without a usable best response")
            continue
        stats.written += 1
        stats.with_reasoning += _has_trace(row["messages"][-1:])
        yield row


# ---------------------------------------------------------------- DPO


def dpo_pair(
    record: Mapping[str, Any],
    *,
    rejected_rank: int | None = None,
    min_gap: float | None = None,
    keep_id: bool = False,
    reasoning: str = "keep",
    reasoning_format: str = "field",
) -> tuple[dict[str, Any] | None, str | None]:
    """``(row, None)`` or ``(None, reason)``. Chosen: rank 1; rejected: rank ``rejected_rank``
    (1-based; default :func:`default_rejected_rank`; clamped to the last usable sample), or
    the first sample after it with a reward strictly below the chosen one's when it ties.
    Each side keeps its own trace unless ``reasoning="drop"`` (:func:`assistant_turn`)."""
    ranked = ranked_samples(record)
    if len(ranked) < 2:
        return None, "with fewer than 2 usable samples"
    k = (
        default_rejected_rank(len(ranked))
        if rejected_rank is None
        else max(2, min(rejected_rank, len(ranked)))
    )
    chosen = ranked[0]
    # A pair needs a preference: when the k-th ties with the best, take the first sample
    # ranked below it whose reward is strictly lower.
    lower = [s for s in ranked[k - 1 :] if float(s["reward"]) < float(chosen["reward"])]
    if not lower:
        return None, "with every usable sample tied with the best"
    rejected = lower[0]
    gap = float(chosen["reward"]) - float(rejected["reward"])
    if min_gap is not None and gap < min_gap:
        return None, f"with reward gap < {min_gap}"
    if chosen["text"].strip() == rejected["text"].strip():
        return None, "with identical chosen/rejected text"
    row: dict[str, Any] = {
        "prompt": prompt_messages(record["prompt"]),
        "chosen": [assistant_turn(chosen, reasoning, reasoning_format)],
        "rejected": [assistant_turn(rejected, reasoning, reasoning_format)],
        "score_chosen": float(chosen["reward"]),
        "score_rejected": float(rejected["reward"]),
    }
    if keep_id:
        row["id"] = str(record.get("id"))
    return row, None


def dpo_rows(
    records: Iterable[Mapping[str, Any]],
    *,
    rejected_rank: int | None = None,
    min_gap: float | None = None,
    keep_id: bool = False,
    stats: ExportStats | None = None,
    reasoning: str = "keep",
    reasoning_format: str = "field",
) -> Iterator[dict[str, Any]]:
    stats = stats if stats is not None else ExportStats()
    for rec in records:
        stats.records += 1
        row, reason = dpo_pair(
            rec, rejected_rank=rejected_rank, min_gap=min_gap, keep_id=keep_id,
            reasoning=reasoning, reasoning_format=reasoning_format,
        )  # fmt: skip
        if row is None:
            stats.skip(reason or "unknown")
            continue
        stats.written += 1
        sides = _has_trace(row["chosen"]), _has_trace(row["rejected"])
        stats.with_reasoning += any(sides)
        stats.one_sided_reasoning += sides[0] != sides[1]
        yield row


# ---------------------------------------------------------------- more formats


def _per_record(
    records: Iterable[Mapping[str, Any]],
    rows_of: Callable[[Mapping[str, Any]], tuple[list[dict[str, Any]], str | None]],
    stats: ExportStats | None,
) -> Iterator[dict[str, Any]]:
    stats = stats if stats is not None else ExportStats()
    for rec in records:
        stats.records += 1
        rows, reason = rows_of(rec)
        if not rows:
            stats.skip(reason or "unknown")
            continue
        stats.written += len(rows)
        yield from rows


def sft_completion_rows(
    records: Iterable[Mapping[str, Any]], *, keep_id: bool = False, stats: ExportStats | None = None
) -> Iterator[dict[str, Any]]:
    """SFT as ``{"prompt": [turns], "completion": [assistant turn]}`` (the best answer)."""

    def rows_of(rec: Mapping[str, Any]) -> tuple[list[dict[str, Any]], str | None]:
        row = sft_example(rec, keep_id=keep_id)
        if row is None:
            return [], "without a usable best response"
        *prompt, answer = row.pop("messages")
        return [{"prompt": prompt, "completion": [answer], **row}], None

    return _per_record(records, rows_of, stats)


def kto_rows(
    records: Iterable[Mapping[str, Any]],
    *,
    rejected_rank: int | None = None,
    min_gap: float | None = None,
    keep_id: bool = False,
    stats: ExportStats | None = None,
) -> Iterator[dict[str, Any]]:
    """KTO's unpaired format: per record the DPO pair (:func:`dpo_pair`) as two rows,
    ``{"prompt", "completion", "label": True}`` for the chosen response and ``label: False``
    for the rejected one."""

    def rows_of(rec: Mapping[str, Any]) -> tuple[list[dict[str, Any]], str | None]:
        pair, reason = dpo_pair(rec, rejected_rank=rejected_rank, min_gap=min_gap)
        if pair is None:
            return [], reason
        extra = {"id": str(rec.get("id"))} if keep_id else {}
        return [
            {"prompt": pair["prompt"], "completion": pair["chosen"], "label": True, **extra},
            {"prompt": pair["prompt"], "completion": pair["rejected"], "label": False, **extra},
        ], None

    return _per_record(records, rows_of, stats)


def rm_rows(
    records: Iterable[Mapping[str, Any]],
    *,
    rejected_rank: int | None = None,
    min_gap: float | None = None,
    keep_id: bool = False,
    stats: ExportStats | None = None,
) -> Iterator[dict[str, Any]]:
    """Reward-model pairs: ``{"prompt", "chosen", "rejected", "margin"}`` where ``margin`` is
    the chosen reward minus the rejected one (the pair of :func:`dpo_pair`)."""

    def rows_of(rec: Mapping[str, Any]) -> tuple[list[dict[str, Any]], str | None]:
        pair, reason = dpo_pair(rec, rejected_rank=rejected_rank, min_gap=min_gap, keep_id=keep_id)
        if pair is None:
            return [], reason
        margin = pair.pop("score_chosen") - pair.pop("score_rejected")
        return [{**pair, "margin": margin}], None

    return _per_record(records, rows_of, stats)


def samples_rows(
    records: Iterable[Mapping[str, Any]], *, keep_id: bool = False, stats: ExportStats | None = None
) -> Iterator[dict[str, Any]]:
    """Every usable sample of a prompt with its reward, in generation order:
    ``{"prompt": [turns], "completions": [{"model": agent, "text", "reward"}]}``."""

    def rows_of(rec: Mapping[str, Any]) -> tuple[list[dict[str, Any]], str | None]:
        usable = [s for s in rec.get("samples") or [] if _usable(s)]
        if not usable:
            return [], "without a usable sample"
        row: dict[str, Any] = {
            "prompt": prompt_messages(rec["prompt"]),
            "completions": [
                {"model": str(s.get("agent")), "text": s["text"], "reward": float(s["reward"])}
                for s in usable
            ],
        }
        if keep_id:
            row["id"] = str(rec.get("id"))
        return [row], None

    return _per_record(records, rows_of, stats)


# ---------------------------------------------------------------- Debate & Reflect


def tdpo_rows(
    records: Iterable[Mapping[str, Any]],
    *,
    max_prompt_tokens: int | None = None,
    count_tokens: Callable[[str], int] | None = None,
    stats: ExportStats | None = None,
) -> Iterator[dict[str, Any]]:
    """D&R T-DPO: per debate round, every correct x incorrect answer pair; the prompt is the
    context that round's answers were really generated from (round 0: the answer template;
    later rounds: the shared debate prompt). A debate prompt longer than
    ``max_prompt_tokens`` (counted by ``count_tokens``, default about 4 characters a token)
    is split into chunks that fit, one row per chunk and pair, as D&R's ``mag2preference.py``.
    """
    from toa_graph.methods.debate_rounds import tdpo_examples

    def pairs(rec: Mapping[str, Any]) -> list[dict[str, Any]]:
        return tdpo_examples(rec, max_prompt_tokens=max_prompt_tokens, count_tokens=count_tokens)

    return _debate_iter(records, pairs, "without correct x incorrect pairs", stats)


def dr_sft_rows(
    records: Iterable[Mapping[str, Any]], *, stats: ExportStats | None = None
) -> Iterator[dict[str, Any]]:
    """D&R SFT: every correct answer of any debate round, as TRL chat ``messages`` whose
    prompt is the plain answer template for the question (D&R's ``mag2sft.py``)."""
    from toa_graph.methods.debate_rounds import dr_sft_examples

    return _debate_iter(records, dr_sft_examples, "without a correct answer", stats)


def _debate_iter(
    records: Iterable[Mapping[str, Any]],
    rows_of: Callable[[Mapping[str, Any]], list[dict[str, Any]]],
    empty: str,
    stats: ExportStats | None,
) -> Iterator[dict[str, Any]]:
    stats = stats if stats is not None else ExportStats()
    for rec in records:
        stats.records += 1
        if rec.get("method") != "debate":
            stats.skip("not from the debate method")
            continue
        rows = rows_of(rec)
        if not rows:
            stats.skip(empty)
            continue
        for row in rows:
            stats.written += 1
            yield row
