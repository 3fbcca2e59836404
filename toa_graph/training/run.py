"""SFT / DPO / T-DPO through TRL's trainers: a thin set-up, no trainer of ours.

The data is checked row by row before any model loads (:mod:`toa_graph.training.data`).
On a GPU the model trains in bf16, on a CPU in float32. Multi-GPU: run the same command
under ``accelerate launch`` (TRL and accelerate read the distributed environment).
The output directory gets the model (LoRA adapters merged unless ``merge_lora=False``),
its tokenizer, ``train_log.json`` (TRL's log history) and ``loss.png``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from toa_graph.distill_errors import TrainError
from toa_graph.training.data import TrainKind, check_rows, load_rows

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["TrainResult", "TrainSpec", "plot_loss", "spec_from_recipe", "train", "trl_config"]

logger = logging.getLogger(__name__)


@dataclass(kw_only=True)
class TrainSpec:
    """One training run.

    Data and model:
        kind: ``sft`` (SFTTrainer), ``dpo`` or ``tdpo`` (DPOTrainer; T-DPO is DPO on the
            debate's per-round pairs, as D&R trains its student).
        data: an ``export`` file (.jsonl / .json / .parquet) or a Hub dataset id.
        model: a local checkpoint directory or a Hub model id.
        output_dir: where the checkpoint, ``train_log.json`` and ``loss.png`` go.
    Schedule:
        max_steps: optimizer steps (wins over ``epochs`` when set).
        epochs: passes over the data when ``max_steps`` is not set.
        learning_rate, batch_size (per device), grad_accum: as in TRL.
    LoRA (peft):
        lora: train LoRA adapters instead of every weight.
        lora_r, lora_alpha, lora_dropout, lora_targets: the adapter's shape.
        merge_lora: save the merged model (loads anywhere, vLLM included).
    Anything else:
        trl: more TRL config fields (``beta``, ``max_length``, ``warmup_ratio`` ...).
    """

    kind: TrainKind
    data: str
    model: str
    output_dir: str
    data_split: str = "train"
    max_steps: int | None = None
    epochs: float | None = None
    learning_rate: float | None = None
    batch_size: int | None = None
    grad_accum: int | None = None
    lora: bool = False
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_targets: Sequence[str] | str = "all-linear"
    merge_lora: bool = True
    seed: int = 0
    trl: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainResult:
    output_dir: Path
    rows: int
    steps: int
    final_loss: float | None
    losses: list[tuple[int, float]]
    plot: Path | None


def _on_gpu() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def trl_config(spec: TrainSpec, *, gpu: bool) -> Any:
    """The TRL config (``SFTConfig`` / ``DPOConfig``) for a spec; unknown fields are refused."""
    import trl

    cls = trl.SFTConfig if spec.kind == "sft" else trl.DPOConfig
    names = {f.name for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {
        "output_dir": spec.output_dir,
        "report_to": "none",
        "save_strategy": "no",  # one checkpoint, written at the end
        "logging_steps": 1,
        "seed": spec.seed,
        "bf16": gpu,
        "use_cpu": not gpu,
        "gradient_checkpointing": gpu,
        "disable_tqdm": False,
    }
    chosen = {
        "max_steps": spec.max_steps,
        "num_train_epochs": spec.epochs,
        "learning_rate": spec.learning_rate,
        "per_device_train_batch_size": spec.batch_size,
        "gradient_accumulation_steps": spec.grad_accum,
    }
    values.update({k: v for k, v in chosen.items() if v is not None})
    unknown = sorted(set(spec.trl) - names)
    if unknown:
        raise TrainError(
            f"unknown {cls.__name__} field(s) {unknown} (from --set or the recipe's 'trl:')"
        )
    values.update(spec.trl)
    try:
        return cls(**values)
    except (TypeError, ValueError) as e:
        raise TrainError(f"invalid {cls.__name__}: {e}") from e


def _peft_config(spec: TrainSpec) -> Any:
    try:
        from peft import LoraConfig
    except ImportError as e:
        raise TrainError("LoRA needs peft: pip install 'toa-graph[train]'") from e
    targets = spec.lora_targets
    return LoraConfig(
        r=spec.lora_r,
        lora_alpha=spec.lora_alpha,
        lora_dropout=spec.lora_dropout,
        target_modules=targets if isinstance(targets, str) else list(targets),
        task_type="CAUSAL_LM",
    )


def plot_loss(losses: Sequence[tuple[int, float]], path: Path, title: str) -> Path | None:
    """A loss-per-step PNG; None when there is nothing to draw."""
    if not losses:
        return None
    from matplotlib.figure import Figure  # no pyplot: the caller's backend stays as it is

    fig = Figure(figsize=(6, 3.5))
    ax = fig.subplots()
    ax.plot([s for s, _ in losses], [v for _, v in losses], marker="o", markersize=3)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


def _load_model(spec: TrainSpec, gpu: bool) -> tuple[Any, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype = torch.bfloat16 if gpu else torch.float32
    name = os.path.expanduser(spec.model)  # recipes may say ~/.cache/...
    try:
        tok = AutoTokenizer.from_pretrained(name)
        model = AutoModelForCausalLM.from_pretrained(name, dtype=dtype)
    except OSError as e:
        raise TrainError(f"cannot load model {spec.model!r}: {e}") from e
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return model, tok


def train(spec: TrainSpec) -> TrainResult:
    """Check the data, then train with TRL and save the model, log and loss plot."""
    rows = load_rows(spec.data, split=spec.data_split)
    n = check_rows(rows, spec.kind, spec.data)
    gpu = _on_gpu()
    args = trl_config(spec, gpu=gpu)  # bad fields fail before the model loads
    import datasets
    import trl

    dataset = datasets.Dataset.from_list(rows)
    model, tok = _load_model(spec, gpu)
    peft_config = _peft_config(spec) if spec.lora else None
    common: dict[str, Any] = {
        "model": model,
        "args": args,
        "train_dataset": dataset,
        "processing_class": tok,
        "peft_config": peft_config,
    }
    trainer = trl.SFTTrainer(**common) if spec.kind == "sft" else trl.DPOTrainer(**common)
    out = trainer.train()
    out_dir = Path(spec.output_dir)
    history = list(trainer.state.log_history)
    losses = [(int(h["step"]), float(h["loss"])) for h in history if "loss" in h]
    plot = None
    if peft_config is None or not spec.merge_lora:
        trainer.save_model(str(out_dir))  # collective under accelerate / DeepSpeed
    if trainer.is_world_process_zero():
        out_dir.mkdir(parents=True, exist_ok=True)
        if peft_config is not None and spec.merge_lora:
            merged: Any = trainer.model
            merged.merge_and_unload().save_pretrained(out_dir)
        tok.save_pretrained(out_dir)
        (out_dir / "train_log.json").write_text(json.dumps(history, indent=1), encoding="utf-8")
        plot = plot_loss(losses, out_dir / "loss.png", f"{spec.kind} on {Path(spec.data).name}")
    return TrainResult(
        output_dir=out_dir,
        rows=n,
        steps=int(out.global_step),
        final_loss=losses[-1][1] if losses else None,
        losses=losses,
        plot=plot,
    )


def spec_from_recipe(
    recipe: dict[str, Any] | None, overrides: dict[str, Any], source: str = "recipe"
) -> TrainSpec:
    """A spec from a recipe (``model_configs/train/*.yaml``) with non-None overrides on top;
    ``trl`` dicts merge. Unknown recipe keys are refused, naming the file and key."""
    names = {f.name for f in dataclasses.fields(TrainSpec)}
    base = dict(recipe or {})
    base.pop("description", None)
    unknown = sorted(set(base) - names)
    if unknown:
        raise TrainError(f"{source}: unknown field(s) {unknown}; known: {sorted(names)}")
    trl_fields = {**dict(base.pop("trl", None) or {}), **dict(overrides.pop("trl", None) or {})}
    values = {**base, **{k: v for k, v in overrides.items() if v is not None}, "trl": trl_fields}
    if "kind" in base and "kind" in overrides and base["kind"] != overrides["kind"]:
        raise TrainError(f"{source} is a {base['kind']!r} recipe, not {overrides['kind']!r}")
    missing = [k for k in ("kind", "data", "model", "output_dir") if not values.get(k)]
    if missing:
        raise TrainError(f"missing {missing} (give them as options or in the recipe)")
    from toa_graph.export_kinds import EXPORTS, TRAIN_KINDS

    if values["kind"] not in TRAIN_KINDS:
        hint = EXPORTS[values["kind"]].training if values["kind"] in EXPORTS else ""
        raise TrainError(
            f"{source}: kind must be {', '.join(TRAIN_KINDS)}, not {values['kind']!r}"
            + (f" ({values['kind']} data: {hint})" if hint else "")
        )
    return TrainSpec(**values)
