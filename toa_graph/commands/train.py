"""``toa-graph train sft|dpo|tdpo``: fine-tune on ``export`` data with TRL."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

DESCRIPTION = """\
Fine-tune a causal LM on data from `toa-graph export` with TRL's SFTTrainer (sft) or
DPOTrainer (dpo; tdpo = DPO on the debate's T-DPO pairs). Every row is checked before
the model loads. bf16 on a GPU, float32 on a CPU. The output directory gets the model,
its tokenizer, train_log.json and loss.png.

  toa-graph train sft --data sft.jsonl --model HuggingFaceTB/SmolLM2-135M-Instruct \\
      --output ckpt/sft --steps 40 --lr 1e-5
  toa-graph train dpo --recipe model_configs/train/toa-dpo.yaml --data dpo.jsonl \\
      --model ckpt/sft --output ckpt/dpo --lora --set beta=0.05

Multi-GPU: accelerate launch -m toa_graph.cli train sft ... (same options).
"""


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "train",
        help="fine-tune on exported data with TRL (SFT, DPO, T-DPO)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from toa_graph.export_kinds import TRAIN_KINDS, trained_by

    p.add_argument(
        "kind",
        choices=TRAIN_KINDS,
        help="sft: SFTTrainer; dpo / tdpo: DPOTrainer. Data from export "
        + "; ".join(f"{t}: {', '.join(trained_by(t))}" for t in TRAIN_KINDS),
    )
    p.add_argument("--data", default=None, help="export file (.jsonl/.json/.parquet) or Hub id")
    p.add_argument("--split", default=None, help="Hub dataset split (default train)")
    p.add_argument("--model", default=None, help="base model: local directory or Hub id")
    p.add_argument("--output", default=None, help="output directory for the checkpoint")
    p.add_argument("--recipe", default=None, help="YAML recipe (model_configs/train/*.yaml)")
    p.add_argument("--steps", type=int, default=None, help="optimizer steps (max_steps)")
    p.add_argument("--epochs", type=float, default=None, help="epochs (when --steps is unset)")
    p.add_argument("--lr", type=float, default=None, help="learning rate")
    p.add_argument("--batch-size", type=int, default=None, help="per-device batch size")
    p.add_argument("--grad-accum", type=int, default=None, help="gradient accumulation steps")
    p.add_argument("--lora", action="store_true", default=None, help="train LoRA adapters (peft)")
    p.add_argument("--lora-r", type=int, default=None, help="LoRA rank (default 16)")
    p.add_argument(
        "--no-merge", action="store_true", help="with --lora: save the adapter, not merged"
    )
    p.add_argument("--seed", type=int, default=None, help="random seed (TRL's default when unset)")
    p.add_argument(
        "--set",
        dest="knobs",
        nargs="+",
        action="extend",
        default=[],
        metavar="FIELD=VALUE",
        help="any other TRL config field, e.g. --set beta=0.05 max_length=512",
    )
    p.set_defaults(func=run)


def _recipe(path: str | None) -> dict[str, Any] | None:
    if path is None:
        return None
    import yaml

    from toa_graph.distill_errors import TrainError

    if not Path(path).is_file():
        raise TrainError(f"recipe not found: {path}")
    data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise TrainError(f"{path}: a recipe is a mapping of TrainSpec fields")
    return data


def run(args: argparse.Namespace) -> int:
    from toa_graph.commands import parse_knobs
    from toa_graph.training import spec_from_recipe, train

    overrides: dict[str, Any] = {
        "kind": args.kind,
        "data": args.data,
        "data_split": args.split,
        "model": args.model,
        "output_dir": args.output,
        "max_steps": args.steps,
        "epochs": args.epochs,
        "learning_rate": args.lr,
        "batch_size": args.batch_size,
        "grad_accum": args.grad_accum,
        "lora": args.lora,
        "lora_r": args.lora_r,
        "merge_lora": False if args.no_merge else None,
        "seed": args.seed,
        "trl": parse_knobs(args.knobs),
    }
    spec = spec_from_recipe(_recipe(args.recipe), overrides, args.recipe or "options")
    result = train(spec)
    loss = f"{result.final_loss:.4f}" if result.final_loss is not None else "n/a"
    print(
        f"trained {spec.kind} on {result.rows} rows: {result.steps} steps, last loss {loss}; "
        f"checkpoint {result.output_dir}" + (f", plot {result.plot}" if result.plot else "")
    )
    return 0
