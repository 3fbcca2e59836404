"""``toa-graph export``: synthesis records -> SFT / DPO / T-DPO datasets that TRL reads."""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from toa_graph.errors import UserError
from toa_graph.export_kinds import EXPORTS, describe_exports, reasoning_kinds

DESCRIPTION = """\
Turn synthesis records into training data (JSONL or Parquet; loads with
datasets.load_dataset("json"|"parquet", data_files=FILE)); each kind's row format and
how to train on it:

{kinds}

--input takes record files or synthesis output directories (several: shards of one
job; each id is exported once). Examples:

  toa-graph export sft --input runs/uf --output sft.jsonl
  toa-graph export dpo --input runs/uf --output dpo.parquet --min-gap 0.5
  toa-graph export tdpo --input runs/gsm8k --output tdpo.jsonl --max-prompt-tokens 1000
  toa-graph export dpo --input runs/uf --push-to-hub me/uf-dpo --private --test-size 0.05

Reasoning models (sft, dpo): each answer's thinking trace is kept by default, in the
assistant turn's "reasoning_content" field (--reasoning-format tags: <think>...</think>
before the answer in "content"); --reasoning drop exports the final answers only.

A dataset card (README.md: method, agents, reward, budget, config digest, rows per split,
how thinking traces were exported, the method's citation) is written next to the output (OUTPUT-STEM.README.md) and pushed
with --push-to-hub. An export with no rows writes nothing and exits with status 2.
"""

KINDS = tuple(EXPORTS)


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "export",
        help="records -> SFT / DPO / D&R SFT / T-DPO training data",
        description=DESCRIPTION.format(kinds=describe_exports()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("kind", choices=KINDS, help="dataset kind (see above)")
    p.add_argument(
        "--input", required=True, nargs="+", help="records.jsonl file(s) or output dir(s)"
    )
    p.add_argument(
        "--output",
        default=None,
        help="dataset file to write (required unless --push-to-hub); with --test-size, "
        "OUTPUT-STEM.train.SUFFIX and OUTPUT-STEM.test.SUFFIX",
    )
    p.add_argument(
        "--format",
        choices=["jsonl", "parquet"],
        default=None,
        help="default: from the suffix, else jsonl",
    )
    p.add_argument(
        "--rejected-rank", type=int, default=None, metavar="K",
        help="dpo/kto/rm: rank of the rejected response (1 = best); default round(30/160 * n)",
    )  # fmt: skip
    p.add_argument(
        "--min-gap",
        type=float,
        default=None,
        metavar="G",
        help="dpo/kto/rm: skip pairs whose reward gap < G",
    )
    p.add_argument(
        "--max-prompt-tokens", type=int, default=None, metavar="N",
        help="tdpo: split debate prompts longer than N tokens into chunks that fit",
    )  # fmt: skip
    p.add_argument(
        "--tokenizer", default=None, metavar="NAME",
        help="tdpo: count tokens with this Hugging Face tokenizer (default: ~4 chars a token)",
    )  # fmt: skip
    p.add_argument(
        "--reasoning", choices=["keep", "drop"], default=None,
        help="sft/dpo: keep each answer's thinking trace (default) or drop it",
    )  # fmt: skip
    p.add_argument(
        "--reasoning-format", choices=["field", "tags"], default=None,
        help="sft/dpo, kept traces: the turn's reasoning_content field (default) or "
        "<think> tags in its content",
    )  # fmt: skip
    p.add_argument("--keep-id", action="store_true", help="add the prompt id as an 'id' column")
    p.add_argument(
        "--push-to-hub", default=None, metavar="REPO",
        help="push the rows (and the dataset card) to this Hugging Face dataset repo",
    )  # fmt: skip
    p.add_argument("--private", action="store_true", help="--push-to-hub: a private repo")
    p.add_argument(
        "--test-size", type=float, default=None, metavar="F",
        help="split the rows into train and test (fraction F in test; seeded shuffle)",
    )  # fmt: skip
    p.add_argument(
        "--allow-mixed", action="store_true",
        help="export an input directory whose records were made under several data configs "
        "(synthesize --force-mixed); refused otherwise",
    )  # fmt: skip
    p.add_argument(
        "--reward", default=None, metavar="TEXT",
        help="the reward model to name in the dataset card (records do not carry it)",
    )  # fmt: skip
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Stream records -> rows -> files: no list of all rows is held. Rows go straight to
    ``--output`` (or, with ``--test-size``, through one spool file whose row count decides
    the split); the dataset card's counts are gathered on the way."""
    from toa_graph.exports import ExportStats, read_record_files
    from toa_graph.hub import CardFacts, dataset_card, push_dataset

    _validate(args)
    stats = ExportStats()
    facts = CardFacts()
    records = read_record_files(args.input, stats, allow_mixed=args.allow_mixed)
    rows = _rows(args, facts.observe(records), stats)
    with tempfile.TemporaryDirectory(prefix="toa-export-") as tmp:
        out = Path(args.output) if args.output else Path(tmp) / f"{args.kind}.jsonl"
        files = _write_splits(args, rows, out, Path(tmp), stats)
        counts = {name: n for name, (_, n) in files.items()}
        card = dataset_card(
            args.kind, facts, counts, reward=args.reward, repo=args.push_to_hub,
            reasoning=_reasoning_facts(args, stats),
        )  # fmt: skip
        written: list[str] = []
        if args.output:
            written = [str(path) for path, _ in files.values()]
            card_path = out.with_name(f"{out.stem}.README.md")
            card_path.write_text(card, encoding="utf-8")
            written.append(str(card_path))
        if args.push_to_hub:
            splits = {name: path for name, (path, _) in files.items()}
            push_dataset(splits, args.push_to_hub, card=card, private=args.private)
            written.append(f"hf://datasets/{args.push_to_hub}")
    parts = ", ".join(f"{n} {name}" for name, n in counts.items())
    print(f"{args.kind}: {stats.describe()} ({parts}) -> {', '.join(written)}")
    return 0


def _write_splits(
    args: argparse.Namespace, rows: Iterator[dict[str, Any]], out: Path, tmp: Path, stats: Any
) -> dict[str, tuple[Path, int]]:
    """Write the rows (one file, or train and test files beside ``out``); ``{split: (path,
    rows)}``. A UserError, writing nothing, when there are no rows."""
    from toa_graph.exports import EmptyExportError, read_jsonl_rows, write_rows
    from toa_graph.hub import split_labels

    def none() -> UserError:
        return UserError(
            f"{args.kind}: no rows ({stats.describe()}); nothing was written"
            + ("" if args.push_to_hub is None else " or pushed")
        )

    if args.test_size is None:
        try:
            return {"train": (out, write_rows(rows, out, fmt=args.format))}
        except EmptyExportError:
            raise none() from None
    spool = tmp / "rows.spool.jsonl"
    try:
        n = write_rows(rows, spool, fmt="jsonl")
    except EmptyExportError:
        raise none() from None
    try:
        split_labels(n, args.test_size)  # checks n and the size before any file is written
    except ValueError as exc:
        raise UserError(f"--test-size: {exc}") from exc
    files: dict[str, tuple[Path, int]] = {}
    for name in ("train", "test"):
        labels = split_labels(n, args.test_size)
        part = (row for row, lb in zip(read_jsonl_rows(spool), labels, strict=True) if lb == name)
        path = out.with_name(f"{out.stem}.{name}{out.suffix}")
        files[name] = (path, write_rows(part, path, fmt=args.format))
    return files


def _validate(args: argparse.Namespace) -> None:
    if not args.output and not args.push_to_hub:
        raise UserError("give --output FILE, --push-to-hub REPO, or both")
    for path in args.input:
        if not Path(path).exists():
            raise UserError(f"input not found: {path}")
    if args.rejected_rank is not None and args.rejected_rank < 2:
        raise UserError("--rejected-rank must be >= 2 (rank 1 is the chosen response)")
    if args.max_prompt_tokens is not None and args.max_prompt_tokens < 1:
        raise UserError("--max-prompt-tokens must be >= 1")
    if args.test_size is not None and not 0 < args.test_size < 1:
        raise UserError(f"--test-size must be between 0 and 1, got {args.test_size}")
    if args.private and not args.push_to_hub:
        raise UserError("--private only applies with --push-to-hub")
    kinds = reasoning_kinds()
    if args.kind not in kinds and (args.reasoning or args.reasoning_format):
        raise UserError(f"--reasoning / --reasoning-format apply to {' and '.join(kinds)} exports")


def _reasoning_facts(args: argparse.Namespace, stats: Any) -> dict[str, Any] | None:
    """What the dataset card says about thinking traces (sft and dpo; nothing when no row
    has one and no flag asked for a format)."""
    asked = args.reasoning is not None or args.reasoning_format is not None
    if args.kind not in reasoning_kinds() or not (stats.with_reasoning or asked):
        return None
    fmt = "drop" if args.reasoning == "drop" else args.reasoning_format or "field"
    facts = {"format": fmt, "with_trace": stats.with_reasoning}
    return {**facts, "one_sided": stats.one_sided_reasoning} if args.kind == "dpo" else facts


def _rows(args: argparse.Namespace, records: Any, stats: Any) -> Iterator[dict[str, Any]]:
    kind = EXPORTS[args.kind]
    flags = {
        "rejected_rank": args.rejected_rank,
        "min_gap": args.min_gap,
        "keep_id": args.keep_id,
        "max_prompt_tokens": args.max_prompt_tokens,
        "reasoning": args.reasoning or "keep",
        "reasoning_format": args.reasoning_format or "field",
    }
    if "count_tokens" in kind.flags:
        flags["count_tokens"] = _token_counter(args.tokenizer)
    return kind.rows(records, flags, stats)


def _token_counter(name: str | None) -> Any:
    """``len(tokenizer.tokenize(text))`` for a Hugging Face tokenizer, or None (the default)."""
    if name is None:
        return None
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(name)
    return lambda text: len(tokenizer.tokenize(text))
