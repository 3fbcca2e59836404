"""``toa-graph synthesize``: run a method over a prompt file, one JSON record per prompt."""

from __future__ import annotations

import argparse
import asyncio
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from toa_graph.errors import UserError
from toa_graph.synthesis.plan import EXAMPLES, default_output, export_commands, input_label
from toa_graph.synthesis.summary import format_summary, format_table

__all__ = [
    "EXAMPLES", "add_parser", "default_output", "export_commands", "format_summary",
    "format_table", "input_label", "rerun_command", "run",
]  # fmt: skip

DESCRIPTION = """\
Run a sampling method over every prompt of a file (JSONL, JSON array or Parquet), a
Hugging Face dataset (--input hf:ORG/NAME[:CONFIG] --split S, streamed) or a dataset
directory (save_to_disk output, or a folder of JSONL/Parquet files) with many prompts in
flight, appending one JSON record per finished prompt to
OUTPUT/records.jsonl. Re-running with the same --output resumes: finished ids are
skipped, a torn last line from a killed run is cut off, nothing is written twice.
Unusable input lines go to OUTPUT/errors.jsonl (line number + reason); prompts that
failed go to OUTPUT/failed.jsonl and are retried on the next run.

Input fields: prompt | instruction | question | messages; reference | references |
gold_response | answer | output; id | prompt_id (else a content hash). Others via
--field-map, e.g. --field-map reference=en.

With no arguments: TOA with the embedded default models (vLLM CPU on 127.0.0.1) on the
shipped example prompts, and a per-prompt table. Without --output the records go to
runs/METHOD/INPUT-NAME (a rerun of the same command resumes there); the resume command
is printed at the start and the end, and the export command at the end. Examples:

  toa-graph synthesize
  toa-graph synthesize --input prompts.jsonl --budget 40 --estimate
  toa-graph synthesize --method toa --config model_configs/synthesis-4x8b.yaml \\
      --input prompts.jsonl --output runs/uf --budget 40 --concurrency 64
  toa-graph synthesize --input wmt22.de_en.500.jsonl --field-map reference=en --limit 50

Before a long job, --estimate [K] runs the first K prompts (default 8) for real and
prints the generations and tokens per agent (the reward model's own calls not included)
and the wall time extrapolated to the whole input at --concurrency. Those K prompts are
kept in the output: the real run (the same command without --estimate) resumes after
them.

One process drives ~100-250 requests/s (about 4-5 ms of Python per generation). Past
that, run N processes with --shard 0/N .. --shard N-1/N, each with its own --output, and
export them together (toa-graph export dpo --input runs/s0 runs/s1 ...).

On a Ray cluster (pip install 'toa-graph[ray]'; see docs/deployment.md): --ray shards the
prompts over --ray-workers actors, each running --concurrency prompts at once, with one
shared reward actor; only this process writes OUTPUT/records.jsonl (one record per id,
also when a worker dies and its shard is retried). --ray alone starts a local Ray on
127.0.0.1; --ray ADDRESS (auto, HOST:PORT, ray://...) joins a running cluster:

  toa-graph synthesize --config cluster.yaml --input prompts.jsonl --output runs/uf \\
      --ray auto --ray-workers 8 --concurrency 64
"""

ESTIMATE_PROMPTS = 8


def add_parser(sub: Any) -> None:
    from toa_graph.commands import settings_parser

    p = sub.add_parser(
        "synthesize",
        help="run a method over a prompt file (resumable JSONL records)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[settings_parser()],
    )
    _add_data_args(p.add_argument_group("data"))
    _add_run_args(p.add_argument_group("the run"))
    _add_scale_args(p.add_argument_group("scale-out"))
    p.set_defaults(func=run)


def _add_data_args(g: Any) -> None:
    g.add_argument(
        "--input",
        default=None,
        help="prompt file, hf:ORG/NAME[:CONFIG] (a Hub dataset, streamed) or a dataset "
        f"directory (default: the shipped {EXAMPLES.name})",
    )
    g.add_argument(
        "--split",
        default=None,
        help="dataset split for hf: and directory inputs (default: the only split, else train)",
    )
    g.add_argument(
        "--output",
        default=None,
        help="output directory (default: runs/METHOD/INPUT-NAME, -shardKofN with --shard); "
        "rerun with the same one to resume",
    )


def _add_run_args(g: Any) -> None:
    g.add_argument("--concurrency", type=int, default=16, help="prompts in flight at once")
    g.add_argument(
        "--estimate",
        nargs="?",
        type=int,
        const=ESTIMATE_PROMPTS,
        default=None,
        metavar="K",
        help=f"run only K prompts (default {ESTIMATE_PROMPTS}) and print tokens per agent and "
        "wall time extrapolated to the whole input (at --concurrency, times --ray-workers "
        "with --ray); the K prompts are kept in the output and the real run resumes after them",
    )
    g.add_argument("--limit", type=int, default=None, help="only the first K usable prompts")
    g.add_argument(
        "--field-map",
        nargs="+",
        action="extend",
        default=[],
        metavar="KEY=FIELD",
        help="read prompt/reference/id from other input fields, e.g. reference=en",
    )
    g.add_argument(
        "--shard",
        default=None,
        metavar="K/N",
        help="only shard K of N (by a hash of the id); run N processes with their own --output "
        "to use more cores, then export them together",
    )
    g.add_argument(
        "--force-mixed", action="store_true",
        help="append to an --output made under another data config (model, sampling, "
        "method, reward); refused otherwise (export then needs --allow-mixed)",
    )  # fmt: skip
    g.add_argument("--fsync", action="store_true", help="fsync each record (survives power loss)")
    g.add_argument(
        "--compress", choices=["zst", "gz"], default=None,
        help="write OUTPUT/records.jsonl.zst (needs zstandard) or .gz, streamed and resumable "
        "(a directory that already holds records keeps its file)",
    )  # fmt: skip
    g.add_argument(
        "--prompt-timeout",
        type=float,
        default=None,
        metavar="S",
        help="give up on a prompt after S s",
    )
    g.add_argument("--no-progress", action="store_true", help="no progress bar")


def _add_scale_args(g: Any) -> None:
    g.add_argument(
        "--ray",
        nargs="?",
        const="",
        default=None,
        metavar="ADDRESS",
        help="run on Ray: no ADDRESS starts a local instance (127.0.0.1); else auto, HOST:PORT "
        "or ray://HOST:PORT of a running cluster",
    )
    g.add_argument(
        "--ray-workers",
        type=int,
        default=2,
        metavar="N",
        help="Ray worker actors, each with --concurrency prompts in flight",
    )
    g.add_argument(
        "--reward-gpus",
        type=float,
        default=0,
        metavar="G",
        help="GPUs for the shared reward actor with --ray",
    )


def _without_estimate(words: Sequence[str]) -> list[str]:
    out: list[str] = []
    skip = False
    for w in words:
        if skip:
            skip = False
            if w.isdigit():
                continue
        if w == "--estimate":
            skip = True
        elif not w.startswith("--estimate="):
            out.append(w)
    return out


def rerun_command(args: argparse.Namespace, output: Path | None) -> str:
    """The command line of this run (without ``--estimate``), with ``--output`` added when
    it was left to the default: run it again to resume."""
    words = _without_estimate(getattr(args, "argv", None) or ["synthesize"])
    if output is not None and args.output is None:
        words += ["--output", str(output)]
    return "toa-graph " + shlex.join(words)


def _input_source(args: argparse.Namespace) -> Any:
    """``--input`` (a prompt file, ``hf:`` id or dataset directory) with ``--split``."""
    from toa_graph.synthesis.dataset_input import resolve_input

    if args.split is not None and not args.input:
        raise UserError("--split needs --input hf:ORG/NAME or a dataset directory")
    try:
        return resolve_input(args.input, args.split) if args.input else EXAMPLES
    except FileNotFoundError as exc:
        raise UserError(str(exc)) from exc


def _check_args(args: argparse.Namespace) -> tuple[dict[str, str], tuple[int, int] | None]:
    from toa_graph.commands import check_budget_flag
    from toa_graph.synthesis import OutputLock, parse_field_map, parse_shard

    if args.concurrency < 1:
        raise UserError("--concurrency must be >= 1")
    if args.ray_workers < 1:
        raise UserError("--ray-workers must be >= 1")
    check_budget_flag(args.budget)  # --budget 0: an error before any server starts
    if args.estimate is not None and args.estimate < 1:
        raise UserError("--estimate K needs K >= 1")
    try:
        field_map = parse_field_map(args.field_map)
        shard = parse_shard(args.shard)
    except ValueError as exc:
        raise UserError(str(exc)) from exc
    if args.output and Path(args.output).is_dir():
        OutputLock(Path(args.output)).acquire().release()  # fail before starting any server
    return field_map, shard


def estimate(
    args: argparse.Namespace,
    cfg: Any,
    common: dict[str, Any],
    input_path: Any,
    shard: tuple[int, int] | None,
) -> int:
    """``--estimate K``: run K prompts for real into the run's output (kept: the real run
    resumes after them) and print the extrapolation to the whole input."""
    from toa_graph.rewards import build_reward
    from toa_graph.synthesis.estimate import format_estimate
    from toa_graph.synthesis.plan import estimate_run, sample_prompts

    items, total = sample_prompts(input_path, common["field_map"], args.limit, shard, args.estimate)
    if not items:
        raise UserError(f"no usable prompts in {input_path}")
    in_flight = args.concurrency * (args.ray_workers if args.ray is not None else 1)
    output = _output(args, common["method"], shard)
    est, n_records = asyncio.run(
        estimate_run(
            items, output, total_prompts=total, in_flight=in_flight,
            reward=build_reward(cfg.reward, agents=cfg.agents), **common,
        )
    )  # fmt: skip
    print(format_estimate(est))
    print(f"\nkept: {n_records} prompt(s) in {output}; the run resumes after them")
    print(f"run it: {rerun_command(args, output)}")
    return 0 if n_records else 1


def _output(args: argparse.Namespace, method: str, shard: tuple[int, int] | None) -> Path:
    """``--output``, else ``runs/METHOD/INPUT-NAME`` (see :func:`default_output`)."""
    if args.output:
        return Path(args.output)
    return default_output(method, args.input or str(EXAMPLES), shard)


def run(args: argparse.Namespace) -> int:
    from toa_graph.commands import project_config, run_settings
    from toa_graph.synthesis import config_digest

    field_map, shard = _check_args(args)
    input_path = _input_source(args)
    with project_config(args.config, keep_servers=args.keep_servers) as cfg:
        settings = run_settings(args, cfg)
        method = settings.method
        digest = config_digest(
            method=method, context=settings.knobs, agents=cfg.agents, reward=cfg.reward,
            options=settings.options,
        )  # fmt: skip
        common: dict[str, Any] = {
            "method": method,
            "method_options": settings.options,
            "agents": cfg.agents,
            "context": settings.knobs,
            "concurrency": args.concurrency,
            "limit": args.limit,
            "field_map": field_map,
            "fsync": args.fsync,
            "compress": args.compress,
            "progress": not args.no_progress,
            "digest": digest,
            "prompt_timeout_s": args.prompt_timeout,
            "force_mixed": args.force_mixed,
        }
        if args.estimate is not None:
            return estimate(args, cfg, common, input_path, shard)
        output = _output(args, method, shard)
        print(f"output: {output}\nresume with: {rerun_command(args, output)}", flush=True)
        summary, ray_line = _execute(args, cfg, common, input_path, output, shard)
    if summary.rows:
        print(format_table(summary))
        print()
    print(format_summary(summary))
    if ray_line:
        print(ray_line)
    print(f"resume with: {rerun_command(args, output)}")
    print("export with: " + "\n             ".join(export_commands(method, output)))
    return 1 if summary.failed else 0


def _execute(
    args: argparse.Namespace,
    cfg: Any,
    common: dict[str, Any],
    input_path: Any,
    output: Path,
    shard: tuple[int, int] | None,
) -> tuple[Any, str]:
    """Run the synthesis (here or on Ray); the summary and a line about the Ray run."""
    from toa_graph.rewards import build_reward
    from toa_graph.synthesis import run_synthesis

    if args.ray is None:
        reward = build_reward(cfg.reward, agents=cfg.agents)
        return asyncio.run(
            run_synthesis(input_path, output, reward=reward, shard=shard, **common)
        ), ""
    from toa_graph.distributed import import_ray, run_distributed

    try:
        import_ray(loopback=not args.ray)
    except ImportError as exc:
        raise UserError(str(exc)) from exc
    dist = asyncio.run(
        run_distributed(
            input_path,
            output,
            reward=cfg.reward,
            workers=args.ray_workers,
            address=args.ray or None,
            reward_num_gpus=args.reward_gpus,
            **common,
        )
    )
    ray_line = (
        f"ray: {dist.workers} workers, {dist.shards} shard runs "
        f"({dist.shard_retries} retried), {dist.worker_deaths} worker deaths"
    )
    return dist, ray_line
