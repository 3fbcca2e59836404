"""``toa-graph evaluate``: a model behind an endpoint, or a local checkpoint served for the
run, on accuracy / win-rate / translation tasks."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

DESCRIPTION = """\
Evaluate a chat model on a task. The model is either behind an OpenAI-compatible endpoint
(--base-url, --model) or a local checkpoint (--checkpoint) that is served with vLLM for
the run (the CPU build on a CPU, the GPU build on a GPU) and stopped after.

Tasks: gsm8k, math (final-answer accuracy), choice (letters A-J, MMLU-Pro style),
winrate (vs. reference answers, scored by --reward-config's reward or judge; raw and
length-controlled), chrf (translation), comet-kiwi (where unbabel-comet is installed).
--data: a JSONL/JSON/Parquet file, a Hub dataset id, or gsm8k / math for the shipped
100-item samples (the default for those tasks). --field-map prompt=question gold=answer
points at other field names (keys: id prompt gold reference options source).

Writes OUTPUT/rows.jsonl (one row per item; rerun to resume) and OUTPUT/summary.json
(score with a bootstrap 95% interval, failed items listed). Examples:

  toa-graph evaluate --task gsm8k --base-url http://127.0.0.1:8000/v1 --output ev/base
  toa-graph evaluate --task math --checkpoint ckpt/sft --output ev/sft --limit 50
"""


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "evaluate",
        help="evaluate a model (endpoint or local checkpoint): accuracy, win rate, chrF",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--task", required=True, choices=["gsm8k", "math", "choice", "winrate",
                                                     "chrf", "comet-kiwi"],
                   help="what to measure: accuracy (gsm8k, math, choice), win rate against "
                   "references, or translation quality (chrf, comet-kiwi)")  # fmt: skip
    p.add_argument("--data", default=None, help="file, Hub id, or gsm8k / math (shipped)")
    p.add_argument("--split", default="test", help="Hub dataset split (default test)")
    p.add_argument("--field-map", nargs="+", action="extend", default=[], metavar="KEY=FIELD",
                   help="point a key (id, prompt, gold, reference, options, source) at a field, "
                   "e.g. prompt=problem gold=solution")  # fmt: skip
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--base-url", help="OpenAI-compatible endpoint, e.g. http://host:8000/v1")
    src.add_argument("--checkpoint", help="local model directory, served with vLLM for the run")
    p.add_argument("--model", default=None, help="model name at the endpoint (default: first)")
    p.add_argument("--api-key-env", default=None, help="env var holding the endpoint's API key")
    p.add_argument("--device", choices=["auto", "cpu", "gpu"], default="auto",
                   help="--checkpoint: which vLLM build serves it")  # fmt: skip
    p.add_argument("--output", required=True, help="output directory (reuse it to resume)")
    p.add_argument("--label", default=None, help="model name in the summary")
    p.add_argument("--limit", type=int, default=None, help="only the first N items")
    p.add_argument("--skip", type=int, default=0, help="skip the first N items (held-out part)")
    p.add_argument("--concurrency", type=int, default=8, help="requests in flight (default 8)")
    p.add_argument("--max-tokens", type=int, default=512, help="max new tokens per answer")
    p.add_argument("--temperature", type=float, default=0.0, help="sampling temperature")
    p.add_argument("--reward-config", default=None, help="winrate / comet-kiwi: config YAML "
                   "whose reward: scores answers ('embedded' for the embedded reward)")  # fmt: skip
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _rows(args: argparse.Namespace) -> tuple[list[dict[str, Any]], dict[str, str], str]:
    from toa_graph.distill_errors import EvalError, TrainError
    from toa_graph.evaluation.tasks import BUILTIN_DATA, builtin_rows
    from toa_graph.training.data import load_rows

    name = args.data or (args.task if args.task in BUILTIN_DATA else None)
    if name is None:
        raise EvalError(f"task {args.task} needs --data (a file or Hub dataset id)")
    if name in BUILTIN_DATA and not Path(name).exists():
        return builtin_rows(name), dict(BUILTIN_DATA[name][1]), f"shipped {name} sample"
    try:
        return load_rows(name, split=args.split), {}, name
    except TrainError as e:
        raise EvalError(str(e)) from None


@contextlib.contextmanager
def _reward(args: argparse.Namespace) -> Iterator[Any]:
    if args.task not in ("winrate", "comet-kiwi"):
        yield None
        return
    if args.reward_config is None and args.task == "comet-kiwi":
        from toa_graph.config import CometRewardConfig
        from toa_graph.rewards import build_reward

        device = "cuda:0" if _has_gpu() else "cpu"
        yield build_reward(CometRewardConfig(kind="comet", device=device))
        return
    from toa_graph.commands import project_config
    from toa_graph.distill_errors import EvalError
    from toa_graph.rewards import build_reward

    if args.reward_config is None:
        raise EvalError("winrate needs --reward-config (a config whose reward: scores answers)")
    try:
        reward_only = _reward_only(args.reward_config)
    except ValueError as e:  # ConfigError: the file and field named
        raise EvalError(str(e)) from None
    if reward_only is not None:  # model_configs/rewards/*.yaml: a reward: section, no agents
        yield build_reward(reward_only)
        return
    with project_config(args.reward_config, check_agents=False) as cfg:
        yield build_reward(cfg.reward, agents=cfg.agents)


def _reward_only(path: str) -> Any:
    """The validated reward section of a file without agents, else None."""
    if path == "embedded":
        return None
    import yaml

    from toa_graph.config import ConfigError, RewardAdapter

    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the reward config ({e})") from e
    if not isinstance(data, dict) or "agents" in data:
        return None
    if "reward" not in data:
        raise ConfigError(f"{path}: expected a 'reward:' section")
    return RewardAdapter.validate_python(data["reward"])


def _has_gpu() -> bool:
    import torch

    return bool(torch.cuda.is_available())


@contextlib.contextmanager
def _endpoint(args: argparse.Namespace) -> Iterator[Any]:
    from toa_graph.evaluation import Endpoint, served_checkpoint

    key = os.environ.get(args.api_key_env) if args.api_key_env else None
    if args.base_url:
        yield Endpoint(base_url=args.base_url, model=args.model, api_key=key)
        return
    gpu = None if args.device == "auto" else args.device == "gpu"
    with served_checkpoint(args.checkpoint, name=args.model, gpu=gpu) as (url, served):
        yield Endpoint(base_url=url, model=served)


def run(args: argparse.Namespace) -> int:
    from toa_graph.commands import parse_knobs
    from toa_graph.distill_errors import EvalError
    from toa_graph.evaluation import EvalSpec, format_table, make_items, run_eval

    rows, fmap, source = _rows(args)
    fmap.update({k: str(v) for k, v in parse_knobs(args.field_map).items()})
    items = make_items(rows, args.task, fmap, source)[args.skip :]
    if args.limit is not None:
        items = items[: args.limit]
    if not items:
        raise EvalError(f"{source}: no items left after --skip/--limit")
    label = args.label or args.model or (Path(args.checkpoint).name if args.checkpoint
                                         else args.base_url)  # fmt: skip
    with _endpoint(args) as endpoint, _reward(args) as reward:
        spec = EvalSpec(
            task=args.task, items=items, output_dir=Path(args.output), endpoint=endpoint,
            label=label, concurrency=args.concurrency, max_tokens=args.max_tokens,
            temperature=args.temperature, reward=reward, progress=not args.no_progress,
        )  # fmt: skip
        summary = asyncio.run(run_eval(spec))
    print(format_table([summary]))
    if summary["failed"]:
        shown = ", ".join(map(str, summary["failed"][:20]))
        print(f"failed items ({len(summary['failed'])}, counted wrong): {shown}")
    print(json.dumps({"summary": str(Path(args.output) / "summary.json")}))
    return 0
