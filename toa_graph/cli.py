"""The ``toa-graph`` command. Each sub-command lives in ``toa_graph/commands/<name>.py``
and exposes ``add_parser(subparsers)``; modules are imported only when the CLI starts.

Commands validate their arguments and raise :class:`~toa_graph.errors.UserError` (or a
subclass such as ``ConfigError``) instead of printing; :func:`main` is the one place that
prints the message and returns the error's exit code (2 for user errors, 1 for failures
while running)."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

COMMANDS = [
    "run", "synthesize", "export", "train", "evaluate", "compare", "serve", "chat", "launch",
    "embedded",
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
    from toa_graph.errors import ToaGraphError

    try:
        return int(args.func(args) or 0)
    except ToaGraphError as exc:
        logging.getLogger(__name__).debug("%s", type(exc).__name__, exc_info=True)
        print(exc, file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
