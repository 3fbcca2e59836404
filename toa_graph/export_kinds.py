"""The export registry: every ``toa-graph export`` kind declared once, here.

Each :class:`ExportKind` names its row builder (in :mod:`toa_graph.exports`, imported
lazily), the row format, the export flags it reads, the methods whose records it needs,
and how to train on it: the ``toa-graph train`` kind that takes its rows, or why ``train``
does not. The ``export`` command (its choices, description and dispatch), ``train`` (its
choices) and the dataset card read this table; a new format is its row builder plus one
entry. A plain-data leaf module: reading it loads nothing.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "EXPORTS",
    "REASONING_FLAGS",
    "TRAIN_KINDS",
    "ExportKind",
    "describe_exports",
    "get_export",
    "reasoning_kinds",
    "trained_by",
]

PAIR_FLAGS = ("rejected_rank", "min_gap", "keep_id")
REASONING_FLAGS = ("reasoning", "reasoning_format")
"""Flags of the kinds that carry reasoning models' thinking traces (``--reasoning keep|drop``,
``--reasoning-format field|tags``)."""


@dataclass(frozen=True, kw_only=True)
class ExportKind:
    """One export format."""

    name: str
    rows_path: str
    """``module:function`` building the rows: ``(records, **flags, stats=...)``."""
    row_format: str
    """What one row holds (the ``export --help`` line)."""
    flags: tuple[str, ...] = ("keep_id",)
    """The export options it passes to the row builder (``export`` flag dest names)."""
    methods: tuple[str, ...] | None = None
    """Methods whose records it reads (``None``: any method's)."""
    train: str | None = None
    """The ``toa-graph train`` kind that trains on these rows, or ``None``."""
    not_trained: str = ""
    """Where ``train`` is ``None``: why, and what trains on it instead."""

    def rows(self, records: Any, flags: Mapping[str, Any], stats: Any) -> Iterator[dict[str, Any]]:
        module, _, attr = self.rows_path.partition(":")
        build: Callable[..., Iterator[dict[str, Any]]] = getattr(
            importlib.import_module(module), attr
        )
        given = {k: flags[k] for k in self.flags if flags.get(k) is not None}  # else defaults
        return build(records, **given, stats=stats)

    @property
    def training(self) -> str:
        """How to train on it, in words (``export --help`` and the dataset card)."""
        if self.train:
            return f"toa-graph train {self.train}"
        return f"not by toa-graph train: {self.not_trained}"


EXPORTS: dict[str, ExportKind] = {
    kind.name: kind
    for kind in (
        ExportKind(
            name="sft",
            rows_path="toa_graph.exports:sft_rows",
            row_format='{"messages": [prompt turns..., {"role": "assistant", "content": best}]}',
            flags=("keep_id", *REASONING_FLAGS),
            train="sft",
        ),
        ExportKind(
            name="sft-completion",
            rows_path="toa_graph.exports:sft_completion_rows",
            row_format='{"prompt": [turns], "completion": [assistant turn]}: SFTTrainer trains '
            "on the completion only by default",
            train="sft",
        ),
        ExportKind(
            name="dpo",
            rows_path="toa_graph.exports:dpo_rows",
            row_format='{"prompt": [turns], "chosen": [assistant turn], "rejected": [assistant '
            'turn], "score_chosen", "score_rejected"}: best vs. the k-th ranked response '
            "(default k = round(30/160 * n) of n usable samples, the paper's 30th of 160)",
            flags=(*PAIR_FLAGS, *REASONING_FLAGS),
            train="dpo",
        ),
        ExportKind(
            name="kto",
            rows_path="toa_graph.exports:kto_rows",
            row_format='{"prompt", "completion", "label"}: the dpo pair unpaired (chosen True, '
            "rejected False)",
            flags=PAIR_FLAGS,
            not_trained="use TRL's KTOTrainer on it directly",
        ),
        ExportKind(
            name="rm",
            rows_path="toa_graph.exports:rm_rows",
            row_format='{"prompt", "chosen", "rejected", "margin"}: reward-model pairs, margin '
            "= reward gap",
            flags=PAIR_FLAGS,
            not_trained="it trains a reward model: use TRL's RewardTrainer on it directly",
        ),
        ExportKind(
            name="samples",
            rows_path="toa_graph.exports:samples_rows",
            row_format='{"prompt", "completions": [{"model", "text", "reward"}]}: every scored '
            "sample",
            not_trained="raw samples for analysis or your own selection, not a training format",
        ),
        ExportKind(
            name="dr-sft",
            rows_path="toa_graph.exports:dr_sft_rows",
            row_format="Debate & Reflect SFT: every correct answer of any round, "
            '{"messages": [answer-template prompt, answer]}',
            flags=(),
            methods=("debate",),
            train="sft",
        ),
        ExportKind(
            name="tdpo",
            rows_path="toa_graph.exports:tdpo_rows",
            row_format="Debate & Reflect T-DPO: per round, every correct x incorrect answer "
            "pair, prompt = what that round's debaters were sent (debate prompts over "
            "--max-prompt-tokens are split into chunks that fit)",
            flags=("max_prompt_tokens", "count_tokens"),
            methods=("debate",),
            train="tdpo",
        ),
    )
}
"""Export kind -> its declaration, in ``--help`` order."""

TRAIN_KINDS: tuple[str, ...] = ("sft", "dpo", "tdpo")
"""What ``toa-graph train`` trains: SFTTrainer (sft) or DPOTrainer (dpo, tdpo)."""


def get_export(name: str) -> ExportKind:
    from toa_graph.errors import UserError

    try:
        return EXPORTS[name]
    except KeyError:
        raise UserError(f"unknown export kind {name!r}; kinds: {', '.join(EXPORTS)}") from None


def describe_exports() -> str:
    """The kinds for ``export --help``: each row format and how to train on it."""
    import textwrap

    lines = []
    for kind in EXPORTS.values():
        only = f" (records of --method {', '.join(kind.methods)})" if kind.methods else ""
        lines.append(f"  {kind.name}{only}")
        for text in (kind.row_format, f"train: {kind.training}"):
            lines.append(textwrap.fill(text, 88, initial_indent=" " * 6, subsequent_indent=" " * 8))
    return "\n".join(lines)


def trained_by(train_kind: str) -> list[str]:
    """The export kinds whose rows ``toa-graph train TRAIN_KIND`` takes."""
    return [k.name for k in EXPORTS.values() if k.train == train_kind]


def reasoning_kinds() -> list[str]:
    """The export kinds that take ``--reasoning`` / ``--reasoning-format``."""
    return [k.name for k in EXPORTS.values() if set(REASONING_FLAGS) <= set(k.flags)]
