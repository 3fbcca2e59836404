"""``toa-graph compare``: several methods x several budgets on the same prompts.

Writes, under OUTPUT/: ``<method>/budget-<B>/records.jsonl`` (each cell is a resumable
synthesis run), ``compare.csv`` (one row per method and budget) and ``compare.png`` (mean
best reward vs. generations per prompt, one line per method: the TOA paper's scaling
figure for the user's own models and reward).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import math
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from toa_graph.errors import UserError

DESCRIPTION = """\
Run each method at each budget on the same prompts and compare mean best reward at
equal compute (generations per prompt). Each (method, budget) cell is a resumable
synthesis run under OUTPUT/<method>/budget-<B>/. Prints a table; writes
OUTPUT/compare.csv and OUTPUT/compare.png. Example:

  toa-graph compare --methods toa,moa,random --budgets 4,8,16,32 \\
      --config model_configs/synthesis-4x8b.yaml --input prompts.jsonl --output runs/cmp --limit 100
"""

CSV_FIELDS = [
    "method",
    "budget",
    "prompts",
    "mean_best_reward",
    "stderr",
    "mean_generations",
    "mean_tokens",
    "mean_wall_s",
    "failed",
]


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "compare",
        help="methods x budgets on the same prompts: table, CSV and reward-vs-budget plot",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--methods", default="toa", help="comma-separated method names (default: toa)")
    p.add_argument("--budgets", default="4,8,16,32", help="comma-separated generations per prompt")
    p.add_argument("--config", default=None, help="model config YAML, or 'embedded' (default)")
    p.add_argument("--input", default=None, help="prompt file (default: the shipped examples)")
    p.add_argument("--output", required=True, help="output directory (reuse it to resume)")
    p.add_argument("--limit", type=int, default=None, help="only the first K usable prompts")
    p.add_argument(
        "--concurrency", type=int, default=16, help="prompts in flight at once (default 16)"
    )
    p.add_argument("--field-map", nargs="+", action="extend", default=[], metavar="KEY=FIELD")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KNOB=VALUE",
        help="context knobs for every run",
    )
    p.add_argument("--no-progress", action="store_true")
    p.add_argument(
        "--keep-servers", action="store_true", help="leave embedded servers running for later runs"
    )
    p.set_defaults(func=run)


def parse_list(text: str, kind: type = str) -> list[Any]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise ValueError(f"empty list: {text!r}")
    return [kind(t) for t in items]


def cell_dir(output: str | Path, method: str, budget: int) -> Path:
    return Path(output) / method / f"budget-{budget}"


def aggregate(
    records: Sequence[Mapping[str, Any]], *, method: str, budget: int, failed: int = 0
) -> dict[str, Any]:
    """One CSV row from a cell's records."""
    rewards = [
        float(r["best"]["reward"])
        for r in records
        if isinstance(r.get("best"), Mapping) and r["best"].get("reward") is not None
    ]
    n = len(rewards)
    mean = sum(rewards) / n if n else float("nan")
    var = sum((x - mean) ** 2 for x in rewards) / (n - 1) if n > 1 else float("nan")

    def avg(f: Any) -> float:
        vals = [f(r) for r in records]
        return sum(vals) / len(vals) if vals else float("nan")

    return {
        "method": method,
        "budget": budget,
        "prompts": n,
        "mean_best_reward": mean,
        "stderr": math.sqrt(var / n) if n > 1 else float("nan"),
        "mean_generations": avg(lambda r: r["totals"]["generations"]),
        "mean_tokens": avg(lambda r: r["totals"]["tokens"]["total_tokens"]),
        "mean_wall_s": avg(lambda r: r["totals"]["wall_s"]),
        "failed": failed,
    }


def write_csv(rows: Sequence[Mapping[str, Any]], path: str | Path) -> None:
    with Path(path).open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        w.writeheader()
        for r in rows:
            w.writerow({k: r.get(k) for k in CSV_FIELDS})


def plot(
    rows: Sequence[Mapping[str, Any]], path: str | Path | None = None, *, title: str = ""
) -> Any:
    """Mean best reward vs. budget (log2 x axis), one line per method, stderr bars.

    Draws on a standalone Agg figure (no pyplot, so a notebook's backend is left alone);
    saves it to ``path`` when given and returns the ``matplotlib.figure.Figure``.
    """
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError(
            "the compare plot needs matplotlib: pip install 'toa-graph[data]'"
        ) from exc

    fig = Figure(figsize=(6.4, 4.4), dpi=120)
    ax = fig.add_subplot()
    methods = list(dict.fromkeys(r["method"] for r in rows))
    for m in methods:
        pts = sorted((r for r in rows if r["method"] == m), key=lambda r: r["budget"])
        xs = [r["budget"] for r in pts]
        ys = [r["mean_best_reward"] for r in pts]
        errs = [0.0 if math.isnan(r["stderr"]) else r["stderr"] for r in pts]
        ax.errorbar(xs, ys, yerr=errs, marker="o", capsize=3, label=m)
    budgets = sorted({r["budget"] for r in rows})
    if budgets and min(budgets) > 0:
        ax.set_xscale("log", base=2)
        ax.set_xticks(budgets, [str(b) for b in budgets])
    ax.set_xlabel("generations per prompt (budget)")
    ax.set_ylabel("mean best reward")
    ax.set_title(title or "reward vs. budget")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    if path is not None:
        fig.savefig(path)
    return fig


def format_table(rows: Sequence[Mapping[str, Any]]) -> str:
    methods = list(dict.fromkeys(r["method"] for r in rows))
    budgets = sorted({r["budget"] for r in rows})
    cell = {(r["method"], r["budget"]): r for r in rows}
    head = f"{'method':<12}" + "".join(f"{'b=' + str(b):>18}" for b in budgets)
    lines = ["mean best reward (+- stderr) by budget", head, "-" * len(head)]
    for m in methods:
        parts = []
        for b in budgets:
            r = cell.get((m, b))
            if r is None or math.isnan(r["mean_best_reward"]):
                parts.append(f"{'n/a':>18}")
            else:
                se = "" if math.isnan(r["stderr"]) else f" +-{r['stderr']:.3f}"
                parts.append(f"{r['mean_best_reward']:.4f}{se}".rjust(18))
        lines.append(f"{m:<12}" + "".join(parts))
    return "\n".join(lines)


async def run_compare(
    input: str | Path,
    output: str | Path,
    *,
    methods: Sequence[str],
    budgets: Sequence[int],
    agents: Any,
    reward: Any,
    context: Mapping[str, Any] | None = None,
    concurrency: int = 16,
    limit: int | None = None,
    field_map: Any = None,
    progress: bool = True,
    agents_digest: Any = None,
    reward_digest: Any = None,
) -> list[dict[str, Any]]:
    """Run every (method, budget) cell, then write compare.csv and compare.png."""
    from toa_graph.synthesis import config_digest, read_records, run_synthesis

    rows = []
    for method in methods:
        for budget in budgets:
            ctx = {**(context or {}), "budget": int(budget)}
            out = cell_dir(output, method, budget)
            summary = await run_synthesis(
                input, out, method=method, agents=agents, reward=reward, context=ctx,
                concurrency=concurrency, limit=limit, field_map=field_map, progress=progress,
                digest=config_digest(
                    method=method, context=ctx, agents=agents_digest or agents, reward=reward_digest or reward
                ),
                collect_rows=False,
            )  # fmt: skip
            records = list(read_records(out))
            rows.append(
                aggregate(records, method=method, budget=int(budget), failed=summary.failed)
            )
    Path(output).mkdir(parents=True, exist_ok=True)
    write_csv(rows, Path(output) / "compare.csv")
    plot(rows, Path(output) / "compare.png")
    return rows


def run(args: argparse.Namespace) -> int:
    from toa_graph.commands import parse_knobs, project_config
    from toa_graph.commands.synthesize import EXAMPLES
    from toa_graph.methods import METHODS
    from toa_graph.rewards import build_reward
    from toa_graph.synthesis import parse_field_map

    try:
        methods = parse_list(args.methods)
        budgets = parse_list(args.budgets, int)
        field_map = parse_field_map(args.field_map)
    except ValueError as exc:
        raise UserError(str(exc)) from exc
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise UserError(f"unknown methods {unknown}; available: {', '.join(sorted(METHODS))}")
    if any(b < 1 for b in budgets):
        raise UserError("budgets must be >= 1")
    input_path = Path(args.input) if args.input else EXAMPLES
    if not input_path.exists():
        raise UserError(f"input file not found: {input_path}")
    knobs = parse_knobs(args.set)
    with project_config(args.config, keep_servers=args.keep_servers) as cfg:
        context = {**cfg.method.context, **knobs}
        reward = build_reward(cfg.reward, agents=cfg.agents)
        rows = asyncio.run(
            run_compare(
                input_path, args.output, methods=methods, budgets=budgets, agents=cfg.agents,
                reward=reward, context=context, concurrency=args.concurrency, limit=args.limit,
                field_map=field_map, progress=not args.no_progress, reward_digest=cfg.reward,
            )
        )  # fmt: skip
    print(format_table(rows))
    out = Path(args.output)
    print(f"\nwrote {out / 'compare.csv'} and {out / 'compare.png'}")
    failed = sum(r["failed"] for r in rows)
    if failed:
        print(f"{failed} prompt runs failed (see */failed.jsonl)", file=sys.stderr)
    return 1 if failed else 0
