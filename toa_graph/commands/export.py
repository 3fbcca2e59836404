"""``toa-graph export``: synthesis records -> SFT / DPO / T-DPO datasets that TRL reads."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from toa_graph.errors import UserError

DESCRIPTION = """\
Turn synthesis records into training data (JSONL or Parquet; loads with
datasets.load_dataset("json"|"parquet", data_files=FILE) and is accepted as is by
TRL's SFTTrainer / DPOTrainer):

  sft   {"messages": [prompt turns..., {"role": "assistant", "content": best}]}
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
"""


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "export",
        help="records -> SFT / DPO / D&R SFT / T-DPO training data",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "kind", choices=["sft", "dpo", "dr-sft", "tdpo"], help="dataset kind (see above)"
    )
    p.add_argument(
        "--input", required=True, nargs="+", help="records.jsonl file(s) or output dir(s)"
    )
    p.add_argument("--output", required=True, help="dataset file to write")
    p.add_argument(
        "--format",
        choices=["jsonl", "parquet"],
        default=None,
        help="default: from the suffix, else jsonl",
    )
    p.add_argument(
        "--rejected-rank", type=int, default=None, metavar="K",
        help="dpo: rank of the rejected response (1 = best); default round(30/160 * n)",
    )  # fmt: skip
    p.add_argument(
        "--min-gap",
        type=float,
        default=None,
        metavar="G",
        help="dpo: skip pairs whose reward gap < G",
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
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from toa_graph.exports import (
        ExportStats,
        dpo_rows,
        dr_sft_rows,
        read_record_files,
        sft_rows,
        tdpo_rows,
        write_rows,
    )

    for path in args.input:
        if not Path(path).exists():
            raise UserError(f"input not found: {path}")
    if args.rejected_rank is not None and args.rejected_rank < 2:
        raise UserError("--rejected-rank must be >= 2 (rank 1 is the chosen response)")
    if args.max_prompt_tokens is not None and args.max_prompt_tokens < 1:
        raise UserError("--max-prompt-tokens must be >= 1")
    stats = ExportStats()
    records = read_record_files(args.input)
    if args.kind == "sft":
        rows = sft_rows(records, keep_id=args.keep_id, stats=stats)
    elif args.kind == "dpo":
        rows = dpo_rows(
            records,
            rejected_rank=args.rejected_rank,
            min_gap=args.min_gap,
            keep_id=args.keep_id,
            stats=stats,
        )
    elif args.kind == "dr-sft":
        rows = dr_sft_rows(records, stats=stats)
    else:
        rows = tdpo_rows(
            records,
            max_prompt_tokens=args.max_prompt_tokens,
            count_tokens=_token_counter(args.tokenizer),
            stats=stats,
        )
    try:
        n = write_rows(rows, args.output, fmt=args.format)
    except NotImplementedError as exc:
        raise UserError(str(exc)) from exc
    print(f"{args.kind}: {stats.describe()} -> {args.output}")
    return 0 if n else 1


def _token_counter(name: str | None) -> Any:
    """``len(tokenizer.tokenize(text))`` for a Hugging Face tokenizer, or None (the default)."""
    if name is None:
        return None
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(name)
    return lambda text: len(tokenizer.tokenize(text))
