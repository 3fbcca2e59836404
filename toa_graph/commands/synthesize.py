"""``toa-graph synthesize``: run a method over a prompt file, one JSON record per prompt."""

from __future__ import annotations

import argparse
import asyncio
import re
import shlex
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from toa_graph.errors import UserError

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

EXAMPLES = Path(__file__).resolve().parent.parent / "data" / "examples.jsonl"
MAX_TABLE_ROWS = 50
ESTIMATE_PROMPTS = 8


def add_parser(sub: Any) -> None:
    from toa_graph.commands import method_choices, set_help

    p = sub.add_parser(
        "synthesize",
        help="run a method over a prompt file (resumable JSONL records)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_data_args(p.add_argument_group("method and data"), method_choices())
    _add_run_args(p.add_argument_group("the run"), set_help())
    _add_scale_args(p.add_argument_group("scale-out"))
    p.set_defaults(func=run)


def _add_data_args(g: Any, methods: list[str]) -> None:
    from toa_graph.commands import budget_help

    g.add_argument(
        "--method", default=None, choices=methods, help="default: the config's, else toa"
    )
    g.add_argument("--config", default=None, help="model config YAML, or 'embedded' (default)")
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
    g.add_argument(
        "--budget",
        type=int,
        default=None,
        help=budget_help("prompt"),
    )


def _add_run_args(g: Any, knobs_help: str) -> None:
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
        "--set",
        action="append",
        default=[],
        metavar="KNOB=VALUE",
        help=knobs_help,
    )
    g.add_argument(
        "--shard",
        default=None,
        metavar="K/N",
        help="only shard K of N (by a hash of the id); run N processes with their own --output "
        "to use more cores, then export them together",
    )
    g.add_argument("--fsync", action="store_true", help="fsync each record (survives power loss)")
    g.add_argument(
        "--prompt-timeout",
        type=float,
        default=None,
        metavar="S",
        help="give up on a prompt after S s",
    )
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    g.add_argument(
        "--keep-servers", action="store_true", help="leave embedded servers running for later runs"
    )


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


def format_table(summary: Any, limit: int = MAX_TABLE_ROWS) -> str:
    """Per-prompt rows (id, best reward, best agent, generations, tokens, seconds)."""
    rows = summary.rows
    header = f"{'id':<24} {'best':>8} {'best agent':<18} {'gens':>5} {'tokens':>8} {'seconds':>8}"
    lines = [header, "-" * len(header)]
    for r in rows[:limit]:
        if r.error:
            lines.append(f"{r.id[:24]:<24} {'FAILED':>8} {r.error[:60]}")
        else:
            lines.append(
                f"{r.id[:24]:<24} {r.best_reward:8.3f} {(r.best_agent or '')[:18]:<18} "
                f"{r.generations:5d} {r.tokens:8d} {r.seconds:8.2f}"
            )
    if len(rows) > limit:
        lines.append(f"... {len(rows) - limit} more (see records.jsonl)")
    return "\n".join(lines)


def format_summary(s: Any) -> str:
    mean = "n/a" if s.mean_best_reward is None else f"{s.mean_best_reward:.4f}"
    parts = [
        f"method {s.method}: {s.done} done, {s.skipped} skipped (already done), {s.failed} failed, "
        f"{s.bad_lines} bad input lines",
        f"mean best reward {mean} | {s.generations} generations "
        f"({s.failed_generations} failed) | {s.tokens} tokens | {s.wall_s:.1f} s",
        f"records: {Path(s.output_dir) / 'records.jsonl'}",
    ]
    if s.bad_lines:
        parts.append(f"bad input lines: {Path(s.output_dir) / 'errors.jsonl'}")
    if s.failed:
        parts.append(
            f"failed prompts (retried on the next run): {Path(s.output_dir) / 'failed.jsonl'}"
        )
        reasons = Counter(r.error[:160] for r in getattr(s, "rows", []) if r.error)
        for reason, n in reasons.most_common(3):
            parts.append(f"  {n} x {reason}")
    unrunnable = getattr(s, "unrunnable", None) or {}
    if unrunnable:
        n_skipped = sum(unrunnable.values())
        parts.append(
            f"{n_skipped} prompt(s) the method cannot run, recorded as skipped (not retried):"
        )
        for reason, n in Counter(unrunnable).most_common(3):
            parts.append(f"  {n} x {reason}")
    if s.torn_bytes_repaired:
        parts.append(
            f"cut a torn last line ({s.torn_bytes_repaired} bytes) left by an interrupted run"
        )
    if s.digest_mismatch:
        parts.append("warning: the output holds records made with another config/method/context")
    return "\n".join(parts)


def input_label(source: str) -> str:
    """A directory-name-safe label for an input: a file's name without its suffix, or a
    Hub id (``hf:ORG/NAME`` -> ``ORG_NAME``)."""
    if source.startswith("hf:"):
        text = source[3:]
    else:
        text = Path(source.rstrip("/")).name
        for suffix in (".jsonl", ".json", ".parquet"):
            text = text.removesuffix(suffix)
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "input"


def default_output(method: str, source: str, shard: tuple[int, int] | None) -> Path:
    """``runs/METHOD/INPUT-NAME`` (``-shardKofN`` for a shard): stable, so running the
    same command again resumes instead of starting over."""
    name = input_label(source)
    if shard is not None:
        name += f"-shard{shard[0]}of{shard[1]}"
    return Path("runs") / method / name


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


def export_commands(method: str, output: Path) -> list[str]:
    """The export commands that fit ``method``'s records."""
    kinds = ("dr-sft", "tdpo") if method == "debate" else ("sft", "dpo")
    return [
        f"toa-graph export {k} --input {shlex.quote(str(output))} "
        f"--output {shlex.quote(str(output / f'{k}.jsonl'))}"
        for k in kinds
    ]


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
    from toa_graph.commands import budget_setting
    from toa_graph.synthesis import OutputLock, parse_field_map, parse_shard

    if args.concurrency < 1:
        raise UserError("--concurrency must be >= 1")
    if args.ray_workers < 1:
        raise UserError("--ray-workers must be >= 1")
    budget_setting(args.budget)  # --budget 0: an error before any server starts
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


def _method_context(
    args: argparse.Namespace, cfg: Any, knobs: dict[str, Any]
) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """The method, its knobs and its options (checked against the registry)."""
    from toa_graph.commands import budget_setting, method_settings
    from toa_graph.registry import method_context

    try:
        method, context, options = method_settings(cfg, args.method, knobs)
        context["budget"] = budget_setting(args.budget, context)
        method_context(method, context)
    except ValueError as exc:
        raise UserError(f"bad context knobs: {exc}") from exc
    return method, context, options


def _sample_prompts(
    input_path: Any, field_map: dict[str, str], limit: int | None, shard: Any, k: int
) -> tuple[list[Any], int]:
    """The first ``k`` usable prompts of this run's share of the input, and how many
    prompts that share holds."""
    from toa_graph.synthesis import BadLine, in_shard, iter_source

    items: list[Any] = []
    seen = total = 0
    for it in iter_source(input_path, field_map=field_map):
        if isinstance(it, BadLine):
            continue
        if limit is not None and seen >= limit:
            break
        seen += 1
        if in_shard(it.id, shard):
            total += 1
            if len(items) < k:
                items.append(it)
    return items, total


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
    from toa_graph.synthesis import read_records, run_synthesis
    from toa_graph.synthesis.estimate import extrapolate, format_estimate

    items, total = _sample_prompts(
        input_path, common["field_map"], args.limit, shard, args.estimate
    )
    if not items:
        raise UserError(f"no usable prompts in {input_path}")
    reward = build_reward(cfg.reward, agents=cfg.agents)
    opts = {**common, "limit": None}
    output = _output(args, common["method"], shard)
    summary = asyncio.run(run_synthesis(items, output, reward=reward, **opts))
    ids = {it.id for it in items}
    records = [r for r in read_records(output) if r.get("id") in ids]
    in_flight = args.concurrency * (args.ray_workers if args.ray is not None else 1)
    est = extrapolate(
        records,
        total_prompts=total,
        concurrency=in_flight,
        sample_wall_s=summary.wall_s,
        failed=summary.failed,
    )
    print(format_estimate(est))
    print(f"\nkept: {len(records)} prompt(s) in {output}; the run resumes after them")
    print(f"run it: {rerun_command(args, output)}")
    return 0 if records else 1


def _output(args: argparse.Namespace, method: str, shard: tuple[int, int] | None) -> Path:
    """``--output``, else ``runs/METHOD/INPUT-NAME`` (see :func:`default_output`)."""
    if args.output:
        return Path(args.output)
    return default_output(method, args.input or str(EXAMPLES), shard)


def run(args: argparse.Namespace) -> int:
    from toa_graph.commands import parse_knobs, project_config
    from toa_graph.synthesis import config_digest

    field_map, shard = _check_args(args)
    input_path = _input_source(args)
    knobs = parse_knobs(args.set)
    with project_config(args.config, keep_servers=args.keep_servers) as cfg:
        method, context, options = _method_context(args, cfg, knobs)
        digest = config_digest(
            method=method, context=context, agents=cfg.agents, reward=cfg.reward, options=options
        )
        common: dict[str, Any] = {
            "method": method,
            "method_options": options,
            "agents": cfg.agents,
            "context": context,
            "concurrency": args.concurrency,
            "limit": args.limit,
            "field_map": field_map,
            "fsync": args.fsync,
            "progress": not args.no_progress,
            "digest": digest,
            "prompt_timeout_s": args.prompt_timeout,
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
