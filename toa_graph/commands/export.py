"""``toa-graph export``: synthesis records -> SFT / DPO / T-DPO datasets that TRL reads."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from toa_graph.errors import UserError

DESCRIPTION = """\
Turn synthesis records into training data (JSONL or Parquet; loads with
datasets.load_dataset("json"|"parquet", data_files=FILE) and is accepted as is by
TRL's SFTTrainer / DPOTrainer):

  sft   {"messages": [prompt turns..., {"role": "assistant", "content": best}]}
  sft-completion  {"prompt": [turns], "completion": [assistant turn]}: SFTTrainer trains on
        the completion only by default
  kto   {"prompt", "completion", "label"}: the dpo pair unpaired (chosen True, rejected False)
  rm    {"prompt", "chosen", "rejected", "margin"}: reward-model pairs, margin = reward gap
  samples  {"prompt", "completions": [{"model", "text", "reward"}]}: every scored sample
  dpo   {"prompt": [turns], "chosen": [assistant turn], "rejected": [assistant turn],
         "score_chosen", "score_rejected"}: best vs. the k-th ranked response
        (default k = round(30/160 * n) of n usable samples, the paper's 30th of 160)
  dr-sft  Debate & Reflect SFT (records of --method debate): every correct answer of
          any round, {"messages": [answer-template prompt, answer]}
  tdpo    Debate & Reflect T-DPO (records of --method debate): per round, every correct x
          incorrect answer pair, prompt = what that round's debaters were sent (debate
          prompts over --max-prompt-tokens are split into chunks that fit)

--input takes record files or synthesis output directories (several: shards of one
job; each id is exported once). Examples:

  toa-graph export sft --input runs/uf --output sft.jsonl
  toa-graph export dpo --input runs/uf --output dpo.parquet --min-gap 0.5
  toa-graph export tdpo --input runs/gsm8k --output tdpo.jsonl --max-prompt-tokens 1000
  toa-graph export dpo --input runs/uf --push-to-hub me/uf-dpo --private --test-size 0.05

A dataset card (README.md: method, agents, reward, budget, config digest, rows per split,
the method's citation) is written next to the output (OUTPUT-STEM.README.md) and pushed
with --push-to-hub. An export with no rows writes nothing and exits with status 2.
"""

KINDS = ("sft", "sft-completion", "dpo", "kto", "rm", "samples", "dr-sft", "tdpo")


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "export",
        help="records -> SFT / DPO / D&R SFT / T-DPO training data",
        description=DESCRIPTION,
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
        "--reward", default=None, metavar="TEXT",
        help="the reward model to name in the dataset card (records do not carry it)",
    )  # fmt: skip
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from toa_graph.exports import ExportStats, read_record_files, write_rows
    from toa_graph.hub import CardFacts, dataset_card, push_dataset, split_rows

    _validate(args)
    stats = ExportStats()
    facts = CardFacts()
    rows = list(_rows(args, facts.observe(read_record_files(args.input, stats)), stats))
    if not rows:
        raise UserError(
            f"{args.kind}: no rows ({stats.describe()}); nothing was written"
            + ("" if args.push_to_hub is None else " or pushed")
        )
    try:
        splits = split_rows(rows, args.test_size)
    except ValueError as exc:
        raise UserError(f"--test-size: {exc}") from exc
    counts = {name: len(part) for name, part in splits.items()}
    card = dataset_card(args.kind, facts, counts, reward=args.reward, repo=args.push_to_hub)
    written: list[str] = []
    if args.output:
        out = Path(args.output)
        for name, part in splits.items():
            path = out if len(splits) == 1 else out.with_name(f"{out.stem}.{name}{out.suffix}")
            write_rows(part, path, fmt=args.format)
            written.append(str(path))
        card_path = out.with_name(f"{out.stem}.README.md")
        card_path.write_text(card, encoding="utf-8")
        written.append(str(card_path))
    if args.push_to_hub:
        push_dataset(splits, args.push_to_hub, card=card, private=args.private)
        written.append(f"hf://datasets/{args.push_to_hub}")
    parts = ", ".join(f"{n} {name}" for name, n in counts.items())
    print(f"{args.kind}: {stats.describe()} ({parts}) -> {', '.join(written)}")
    return 0


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


def _rows(args: argparse.Namespace, records: Any, stats: Any) -> Iterator[dict[str, Any]]:
    from toa_graph import exports as ex

    pairs = {"rejected_rank": args.rejected_rank, "min_gap": args.min_gap}
    if args.kind == "sft":
        return ex.sft_rows(records, keep_id=args.keep_id, stats=stats)
    if args.kind == "sft-completion":
        return ex.sft_completion_rows(records, keep_id=args.keep_id, stats=stats)
    if args.kind == "dpo":
        return ex.dpo_rows(records, **pairs, keep_id=args.keep_id, stats=stats)
    if args.kind == "kto":
        return ex.kto_rows(records, **pairs, keep_id=args.keep_id, stats=stats)
    if args.kind == "rm":
        return ex.rm_rows(records, **pairs, keep_id=args.keep_id, stats=stats)
    if args.kind == "samples":
        return ex.samples_rows(records, keep_id=args.keep_id, stats=stats)
    if args.kind == "dr-sft":
        return ex.dr_sft_rows(records, stats=stats)
    return ex.tdpo_rows(
        records,
        max_prompt_tokens=args.max_prompt_tokens,
        count_tokens=_token_counter(args.tokenizer),
        stats=stats,
    )


def _token_counter(name: str | None) -> Any:
    """``len(tokenizer.tokenize(text))`` for a Hugging Face tokenizer, or None (the default)."""
    if name is None:
        return None
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(name)
    return lambda text: len(tokenizer.tokenize(text))
