"""The ``toa-graph`` command. Each sub-command lives in ``toa_graph/commands/<name>.py``
and exposes ``add_parser(subparsers)``; modules are imported only when the CLI starts."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

COMMANDS = [
    "run", "synthesize", "export", "train", "evaluate", "compare", "serve", "chat", "launch",
]  # fmt: skip
"""Sub-command modules under toa_graph.commands, in --help order."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="toa-graph",
        description=(
            "Multi-agent sampling on LangGraph: TOA (tree search over several chat models "
            "steered by a reward model), MoA, debate and baselines; synthesize SFT/DPO data."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Run 'toa-graph COMMAND --help' for a command's options.",
    )
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more logging (-vv: debug)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"toa_graph.commands.{name}").add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
