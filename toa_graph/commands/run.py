"""``toa-graph run``: one prompt through one method; prints every sample and the best."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

DESCRIPTION = """\
Run one sampling method on one prompt and show every generation with its reward.

Without --config, the embedded default is used: tiny real chat models served by vLLM's
CPU build on 127.0.0.1 (started for this run and stopped after it, unless
--keep-servers). Examples:

  toa-graph run "Why is the sky blue?" --budget 8
  toa-graph run "Translate to English: Guten Morgen" --reference "Good morning" --method moa
  toa-graph run "What is 17*3?" --config model_configs/paper-5x70b.yaml --json
"""


def add_parser(sub: Any) -> None:
    from toa_graph.commands import budget_help_text, settings_parser

    p = sub.add_parser(
        "run",
        help="run one method on one prompt and print the samples",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[
            settings_parser(
                method_help="sampling method (default: the config's, else toa)",
                budget_help=budget_help_text("prompt"),
                set_what="other context knobs",
            )
        ],
    )
    p.add_argument("prompt", help="the user prompt (use '-' to read it from stdin)")
    p.add_argument(
        "--reference", default=None, help="gold answer / reference translation for the reward"
    )
    p.add_argument("--json", action="store_true", help="print the full output as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from toa_graph.commands import check_budget_flag, project_config, run_settings
    from toa_graph.rewards import build_reward

    prompt = sys.stdin.read() if args.prompt == "-" else args.prompt
    check_budget_flag(args.budget)  # a bad flag fails before any server starts
    with project_config(args.config, keep_servers=args.keep_servers) as cfg:
        settings = run_settings(args, cfg)  # bad knob: exit 2
        reward = build_reward(cfg.reward, agents=cfg.agents)
        graph = settings.compile(agents=cfg.agents, reward=reward)
        inp: dict[str, Any] = {"prompt": prompt}
        if args.reference:
            inp["reference"] = args.reference
        out = asyncio.run(graph.ainvoke(inp, context=settings.context))
    if args.json:
        print(json.dumps(out, indent=2, ensure_ascii=False))
        return 0 if out.get("best") else 1
    for s in out["samples"]:
        reward_s = "  error " if s["reward"] is None else f"{s['reward']:8.3f}"
        parent = f" <- {s['parent']}" if s["parent"] else ""
        line = " ".join(s["text"].split())[:70]
        print(f"{s['id']:>4} {reward_s} {s['agent']:<16} {s['kind']:<9}{parent:<8} {line}")
        if s["error"]:
            print(f"       {s['error']}")
    best = out.get("best")
    if not best:
        print("no sample could be scored (see errors above)", file=sys.stderr)
        return 1
    print(f"\nbest: {best['id']} by {best['agent']} (reward {best['reward']:.3f})\n")
    print(best["text"])
    return 0
