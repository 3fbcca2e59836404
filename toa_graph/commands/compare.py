"""``toa-graph compare``: several methods x several budgets on the same prompts.

Writes, under OUTPUT/: ``<method>/budget-<B>/records.jsonl`` (each cell is a resumable
synthesis run), ``compare.csv`` (one row per method and budget), ``compare.png`` (mean
best reward vs. generations per prompt), ``compare_tokens.png`` (mean best reward vs.
tokens per prompt) and, when the agents have prices, ``compare_cost.png`` (mean best
reward vs. cost per prompt), one line per method: the TOA paper's two equal-compute views
and the money view, for the user's own models and reward. ``--simulate`` runs it on the in-process simulated
benchmark (:mod:`toa_graph.simulate`) and adds the best answers' true quality.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import math
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from toa_graph.errors import UserError

DESCRIPTION = """\
Run each method at each budget on the same prompts and compare mean best reward at
equal compute, as the TOA paper does: against generations per prompt (the budget) and
against tokens per prompt (prompt + completion, as the agents report them). Each
(method, budget) cell is a resumable synthesis run under OUTPUT/<method>/budget-<B>/.
Prints a table; writes OUTPUT/compare.csv, OUTPUT/compare.png (reward vs. generations),
OUTPUT/compare_tokens.png (reward vs. tokens) and, when every agent has a
price_per_million, OUTPUT/compare_cost.png (reward vs. cost). Example:

  toa-graph compare --methods toa,moa,random --budgets 4,8,16,32 \\
      --config model_configs/synthesis-4x8b.yaml --input prompts.jsonl --output runs/cmp --limit 100

--simulate needs no models or servers: five simulated agents with hidden skills and a
noisy simulated reward model (toa_graph.simulate; deterministic by --sim-seed) answer
--limit simulated prompts (default 100); the table and CSV add each method's mean TRUE
quality of its best answer (the simulated agents have made-up prices, so the cost view is
drawn too). Example:

  toa-graph compare --simulate --methods toa,random,prs,ensemble,seq_refine \\
      --budgets 10,20,40,80,160 --limit 100 --output runs/sim

--methods all runs every method, AB-MCTS included, plus self_moa and self_moa_seq (MoA
with proposers=self, and seq_window=3: Self-MoA and Self-MoA-Seq over the first agent, or
--set agent=NAME).
"""

CSV_FIELDS = [
    "method",
    "budget",
    "prompts",
    "mean_best_reward",
    "stderr",
    "mean_generations",
    "mean_tokens",
    "mean_cost",
    "mean_wall_s",
    "failed",
    "mean_true_quality",
    "true_quality_stderr",
]


def add_parser(sub: Any) -> None:
    from toa_graph.commands import settings_parser

    p = sub.add_parser(
        "compare",
        help="methods x budgets on the same prompts: table, CSV and reward-vs-budget plot",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[
            settings_parser(
                method_help=None,
                budget_help=None,
                set_what="context knobs for every run (each method takes those it has)",
            )
        ],
    )
    p.add_argument(
        "--methods",
        default="toa",
        help="comma-separated method names, self_moa / self_moa_seq (MoA with proposers=self, "
        "seq_window=3), or 'all' (default: toa)",
    )
    p.add_argument("--budgets", default="4,8,16,32", help="comma-separated generations per prompt")
    p.add_argument("--input", default=None, help="prompt file (default: the shipped examples)")
    p.add_argument("--output", required=True, help="output directory (reuse it to resume)")
    p.add_argument("--limit", type=int, default=None, help="only the first K usable prompts")
    p.add_argument(
        "--concurrency", type=int, default=16, help="prompts in flight at once (default 16)"
    )
    p.add_argument(
        "--field-map",
        nargs="+",
        action="extend",
        default=[],
        metavar="KEY=FIELD",
        help="read prompt/reference/id from other input fields, e.g. reference=en",
    )
    p.add_argument(
        "--simulate",
        action="store_true",
        help="use the simulated agents and reward (no models, no servers; see above)",
    )
    p.add_argument(
        "--sim-seed", type=int, default=0, help="--simulate: the hidden world's seed (default 0)"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "self_moa": ("moa", {"proposers": "self"}),
    "self_moa_seq": ("moa", {"proposers": "self", "seq_window": 3}),
}
"""Compare entries that are a registry method with knobs (Self-MoA is MoA's ``proposers``
option): name -> (method, knobs added to each of its cells' context)."""


def compare_entries() -> list[str]:
    """Every method in the registry, then the variants: what ``--methods all`` runs."""
    from toa_graph.registry import method_names

    return [*method_names(), *VARIANTS]


def entry_method(name: str, context: Mapping[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
    """The registry method of a compare entry and its cells' context."""
    method, knobs = VARIANTS.get(name, (name, {}))
    return method, {**(context or {}), **knobs}


def parse_list(text: str, kind: type = str) -> list[Any]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise ValueError(f"empty list: {text!r}")
    return [kind(t) for t in items]


def cell_dir(output: str | Path, method: str, budget: int) -> Path:
    return Path(output) / method / f"budget-{budget}"


def _mean_stderr(xs: Sequence[float]) -> tuple[float, float]:
    n = len(xs)
    mean = sum(xs) / n if n else float("nan")
    var = sum((x - mean) ** 2 for x in xs) / (n - 1) if n > 1 else float("nan")
    return mean, math.sqrt(var / n) if n > 1 else float("nan")


def aggregate(
    records: Sequence[Mapping[str, Any]],
    *,
    method: str,
    budget: int,
    failed: int = 0,
    grade: Callable[[str], float | None] | None = None,
) -> dict[str, Any]:
    """One CSV row from a cell's records (``grade``: the true quality of a best answer's
    text, when it is known, as on the simulated benchmark)."""
    bests = [
        r["best"]
        for r in records
        if isinstance(r.get("best"), Mapping) and r["best"].get("reward") is not None
    ]
    rewards = [float(b["reward"]) for b in bests]
    n = len(rewards)
    mean, stderr = _mean_stderr(rewards)
    graded = [g for b in bests if (g := grade(str(b.get("text", "")))) is not None] if grade else []
    true_mean, true_stderr = _mean_stderr(graded) if graded else (None, None)

    def avg(f: Any) -> float:
        vals = [f(r) for r in records]
        return sum(vals) / len(vals) if vals else float("nan")

    costs = [float(c) for r in records if (c := r["totals"].get("cost")) is not None]

    return {
        "method": method,
        "budget": budget,
        "prompts": n,
        "mean_best_reward": mean,
        "stderr": stderr,
        "mean_generations": avg(lambda r: r["totals"]["generations"]),
        "mean_tokens": avg(lambda r: r["totals"]["tokens"]["total_tokens"]),
        "mean_cost": sum(costs) / len(costs) if costs else None,
        "mean_wall_s": avg(lambda r: r["totals"]["wall_s"]),
        "failed": failed,
        "mean_true_quality": true_mean,
        "true_quality_stderr": true_stderr,
    }


def write_csv(rows: Sequence[Mapping[str, Any]], path: str | Path) -> None:
    with Path(path).open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        w.writeheader()
        for r in rows:
            w.writerow({k: r.get(k) for k in CSV_FIELDS})


PLOT_AXES = {
    "budget": ("budget", "generations per prompt (budget)", "compare.png"),
    "tokens": ("mean_tokens", "tokens per prompt (prompt + completion)", "compare_tokens.png"),
    "cost": ("mean_cost", "cost per prompt (at the agents' prices)", "compare_cost.png"),
}
"""x axis name -> (row field, axis label, file name under OUTPUT/)."""


def plot(
    rows: Sequence[Mapping[str, Any]],
    path: str | Path | None = None,
    *,
    title: str = "",
    x: str = "budget",
) -> Any:
    """Mean best reward vs. ``x`` ("budget": generations, "tokens": tokens per prompt,
    "cost": cost per prompt), log2 x axis, one line per method, stderr bars.

    Draws on a standalone Agg figure (no pyplot, so a notebook's backend is left alone);
    saves it to ``path`` when given and returns the ``matplotlib.figure.Figure``.
    """
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError(
            "the compare plot needs matplotlib: pip install 'toa-graph[data]'"
        ) from exc
    field, xlabel, _ = PLOT_AXES[x]
    fig = Figure(figsize=(6.4, 4.4), dpi=120)
    ax = fig.add_subplot()
    methods = list(dict.fromkeys(r["method"] for r in rows))
    for m in methods:
        pts = sorted(
            (r for r in rows if r["method"] == m and _number(r.get(field))),
            key=lambda r: float(r[field]),
        )
        xs = [float(r[field]) for r in pts]
        ys = [r["mean_best_reward"] for r in pts]
        errs = [0.0 if math.isnan(r["stderr"]) else r["stderr"] for r in pts]
        ax.errorbar(xs, ys, yerr=errs, marker="o", capsize=3, label=m)
    if x == "budget":
        budgets = sorted({r["budget"] for r in rows})
        if budgets and min(budgets) > 0:
            ax.set_xscale("log", base=2)
            ax.set_xticks(budgets, [str(b) for b in budgets])
    elif any(_number(r.get(field)) and float(r[field]) > 0 for r in rows):
        ax.set_xscale("log", base=2)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("mean best reward")
    ax.set_title(title or f"reward vs. {x}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", ncol=2 if len(methods) > 6 else 1)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path)
    return fig


def _number(v: Any) -> bool:
    return v is not None and not math.isnan(float(v))


def plot_axes(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The plots a comparison draws: the cost view only when every cell that ran has a
    cost (a cell that could not run, such as debate below one round, has neither)."""
    ran = [r for r in rows if _number(r.get("mean_best_reward"))]
    priced = bool(ran) and all(_number(r.get("mean_cost")) for r in ran)
    return [x for x in PLOT_AXES if x != "cost" or priced]


def format_table(rows: Sequence[Mapping[str, Any]]) -> str:
    from toa_graph.cost import money

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
    lines += ["", "mean tokens per prompt by budget", head, "-" * len(head)]
    for m in methods:
        toks = [cell.get((m, b), {}).get("mean_tokens", float("nan")) for b in budgets]
        lines.append(f"{m:<12}" + "".join(f"{t:>18.0f}" for t in toks))
    if "cost" in plot_axes(rows):
        lines += ["", "mean cost per prompt by budget", head, "-" * len(head)]
        for m in methods:
            costs = [cell.get((m, b), {}).get("mean_cost") for b in budgets]
            lines.append(f"{m:<12}" + "".join(f"{money(c):>18}" for c in costs))
    if any(r.get("mean_true_quality") is not None for r in rows):
        lines += ["", "mean TRUE quality of the best answer (+- stderr) by budget", head]
        lines.append("-" * len(head))
        for m in methods:
            parts = []
            for b in budgets:
                r = cell.get((m, b))
                q = None if r is None else r.get("mean_true_quality")
                se = (
                    ""
                    if r is None or r.get("true_quality_stderr") is None
                    else (f" +-{r['true_quality_stderr']:.3f}")
                )
                parts.append(f"{'n/a':>18}" if q is None else f"{q:.4f}{se}".rjust(18))
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
    agents_factory: Callable[[], Any] | None = None,
    grade: Callable[[str], float | None] | None = None,
    config: Any = None,
    method_defaults: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Run every (method, budget) cell, then write compare.csv and the plots.

    Each cell's settings are resolved once (:meth:`~toa_graph.registry.RunSettings.resolve`):
    ``config``'s method section, then ``method_defaults`` (method -> knobs one method needs
    that ``context`` does not set), then the ``context`` knobs the method has, then a
    variant's knobs (:data:`VARIANTS`), then the budget. ``agents_factory``, when given,
    builds the agents anew for each cell (stateful agents, e.g. the simulated ones, then
    give every cell the same start); ``grade`` adds the true quality of the best answers
    to the rows.
    """
    from toa_graph.registry import RunSettings
    from toa_graph.synthesis import config_digest, read_records, run_synthesis

    _check_knobs([entry_method(m)[0] for m in methods], context or {})
    rows = []
    for method in methods:
        for budget in budgets:
            name, variant = entry_method(method)
            knobs = {
                **(method_defaults or {}).get(name, {}),
                **RunSettings.own_knobs(name, context or {}),
                **variant,
            }
            cell = RunSettings.resolve(config, method=name, knobs=knobs, budget=int(budget))
            out = cell_dir(output, method, budget)
            cell_agents = agents_factory() if agents_factory is not None else agents
            summary = await run_synthesis(
                input, out, method=name, agents=cell_agents, reward=reward, context=cell.knobs,
                method_options=cell.options, concurrency=concurrency, limit=limit,
                field_map=field_map, progress=progress,
                digest=config_digest(
                    method=name, context=cell.knobs, agents=agents_digest or agents,
                    reward=reward_digest or reward, options=cell.options,
                ),
                collect_rows=False,
            )  # fmt: skip
            records = list(read_records(out))
            rows.append(
                aggregate(
                    records, method=method, budget=int(budget), failed=summary.failed, grade=grade
                )
            )
    Path(output).mkdir(parents=True, exist_ok=True)
    write_csv(rows, Path(output) / "compare.csv")
    for x in plot_axes(rows):
        plot(rows, Path(output) / PLOT_AXES[x][2], x=x)
    return rows


def _check_knobs(methods: Sequence[str], knobs: Mapping[str, Any]) -> None:
    """A ``--set`` knob that none of the compared methods has is a typo, not a no-op."""
    from toa_graph.registry import get_method

    stray = sorted(set(knobs).difference(*(get_method(m).knobs for m in methods)))
    if stray:
        raise UserError(
            f"context knob(s) {stray} belong to none of the methods {', '.join(methods)}"
        )


SIM_DEBATE = {"correct_threshold": 0.8}
"""The simulated prompts have no gold answer: debate judges by reward (our extension)."""


async def run_simulated(
    output: str | Path,
    *,
    methods: Sequence[str],
    budgets: Sequence[int],
    prompts: int = 100,
    seed: int = 0,
    context: Mapping[str, Any] | None = None,
    concurrency: int = 16,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """:func:`run_compare` on the simulated benchmark (:mod:`toa_graph.simulate`)."""
    import json

    from toa_graph.agents import AgentPool
    from toa_graph.simulate import (
        SimReward,
        SimWorld,
        sim_agents,
        sim_prices,
        sim_prompts,
        true_quality,
    )

    world = SimWorld(seed=seed)
    Path(output).mkdir(parents=True, exist_ok=True)
    inp = Path(output) / f"sim_prompts-seed{seed}.jsonl"
    inp.write_text("".join(json.dumps(r) + "\n" for r in sim_prompts(prompts)), encoding="utf-8")
    return await run_compare(
        inp, output, methods=methods, budgets=budgets, agents=sim_agents(world),
        reward=SimReward(world), context=context, concurrency=concurrency, progress=progress,
        agents_digest={"simulated": seed}, reward_digest={"simulated": seed},
        agents_factory=lambda: AgentPool(sim_agents(world), prices=sim_prices(world)),
        grade=true_quality, method_defaults={"debate": SIM_DEBATE},
    )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from toa_graph.commands import parse_knobs, project_config
    from toa_graph.rewards import build_reward
    from toa_graph.synthesis import parse_field_map
    from toa_graph.synthesis.plan import EXAMPLES

    try:
        methods = compare_entries() if args.methods == "all" else parse_list(args.methods)
        budgets = parse_list(args.budgets, int)
        field_map = parse_field_map(args.field_map)
    except ValueError as exc:
        raise UserError(str(exc)) from exc
    unknown = [m for m in methods if m not in compare_entries()]
    if unknown:
        raise UserError(f"unknown methods {unknown}; available: {', '.join(compare_entries())}")
    if any(b < 1 for b in budgets):
        raise UserError("budgets must be >= 1")
    input_path = Path(args.input) if args.input else EXAMPLES
    if not input_path.exists():
        raise UserError(f"input file not found: {input_path}")
    knobs = parse_knobs(args.set, args)
    if args.simulate:
        rows = asyncio.run(
            run_simulated(
                args.output, methods=methods, budgets=budgets, prompts=args.limit or 100,
                seed=args.sim_seed, context=knobs, concurrency=args.concurrency,
                progress=not args.no_progress,
            )
        )  # fmt: skip
        return _report(rows, args.output)
    with project_config(args.config, keep_servers=args.keep_servers) as cfg:
        reward = build_reward(cfg.reward, agents=cfg.agents)
        rows = asyncio.run(
            run_compare(
                input_path, args.output, methods=methods, budgets=budgets, agents=cfg.agents,
                reward=reward, context=knobs, concurrency=args.concurrency, limit=args.limit,
                field_map=field_map, progress=not args.no_progress, reward_digest=cfg.reward,
                config=cfg,
            )
        )  # fmt: skip
    return _report(rows, args.output)


def _report(rows: Sequence[Mapping[str, Any]], output: str) -> int:
    print(format_table(rows))
    out = Path(output)
    plots = " and ".join(str(out / PLOT_AXES[x][2]) for x in plot_axes(rows))
    print(f"\nwrote {out / 'compare.csv'}, {plots}")
    failed = sum(r["failed"] for r in rows)
    if failed:
        print(f"{failed} prompt runs failed (see */failed.jsonl)", file=sys.stderr)
    return 1 if failed else 0
