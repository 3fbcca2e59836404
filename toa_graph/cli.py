"""The ``toa-graph`` command. Each sub-command lives in ``toa_graph/commands/<name>.py``
and exposes ``add_parser(subparsers)``; modules are imported only when the CLI starts.

Commands validate their arguments and raise :class:`~toa_graph.errors.ToaGraphError`
(``UserError``, ``ConfigError``, ...) instead of printing; :func:`main` is the one place that
prints the message, on one line (the traceback too with ``-v``), and returns the error's
exit code (2 for what the user can fix, 1 for failures while running).

Every sub-parser gets, from :func:`build_parser`: the shared :class:`HelpFormatter`
(descriptions kept as written, defaults shown) and ``-v/--verbose``, so ``-v`` works
before or after the command."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import traceback
from collections.abc import Sequence

COMMANDS = [
    "run", "synthesize", "export", "train", "evaluate", "compare", "serve", "chat", "launch",
    "embedded", "serve_reward",
]  # fmt: skip
"""Sub-command modules under toa_graph.commands, in --help order."""

QUIET_LOGGERS = ("httpx", "httpcore", "openai", "urllib3", "filelock")
"""HTTP client loggers kept at WARNING unless -vv (at -v, one line per request would bury
everything else)."""

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions and epilogs as written (examples keep their lines), and each option's
    default appended to its help unless the help already names one or it says nothing
    (``None``, ``False``, ``""``, an empty list, a -v counter)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if (
            "default" in text.lower()
            or default is None
            or default is False
            or default == argparse.SUPPRESS
            or default == ""
            or isinstance(action, argparse._CountAction)
            or (isinstance(default, list | tuple) and not default)
            or not (action.option_strings or action.nargs in ("?", "*"))
        ):
            return text
        return f"{text} (default: %(default)s)"


class TqdmLogHandler(logging.StreamHandler):
    """Writes log lines through ``tqdm.write`` so a live progress bar is cleared, the
    line printed, and the bar redrawn below it (instead of a bar broken in two)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm import tqdm

            tqdm.write(self.format(record), file=self.stream)
        except Exception:
            self.handleError(record)


def setup_logging(verbose: int) -> None:
    """Root level WARNING (0), INFO (-v) or DEBUG (-vv); logs go around tqdm bars; HTTP
    client request logs stay at WARNING below -vv."""
    level = logging.WARNING - 10 * min(verbose, 2)
    handler = TqdmLogHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    logging.basicConfig(level=level, handlers=[handler], force=True)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING if verbose < 2 else logging.DEBUG)


def _version() -> str:
    from toa_graph import __version__

    return __version__


def _add_verbose(parser: argparse.ArgumentParser, dest: str) -> None:
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        dest=dest,
        help="more logging: -v info, -vv debug (also HTTP requests); before or after the command",
    )


def subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The sub-command parsers of ``parser`` by name."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="toa-graph",
        description=(
            "Multi-agent sampling on LangGraph: TOA (tree search over several chat models "
            "steered by a reward model), MoA, debate and baselines; synthesize SFT/DPO data."
        ),
        formatter_class=HelpFormatter,
        epilog="Run 'toa-graph COMMAND --help' for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    _add_verbose(parser, "verbose")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"toa_graph.commands.{name}").add_parser(sub)
    for p in subparsers(parser).values():
        p.formatter_class = HelpFormatter
        if "-v" not in p._option_string_actions:
            _add_verbose(p, "verbose_after")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv
    args.verbose = int(args.verbose) + int(getattr(args, "verbose_after", 0) or 0)
    setup_logging(args.verbose)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from toa_graph.errors import ToaGraphError, one_line

    try:
        return int(args.func(args) or 0)
    except ToaGraphError as exc:
        if args.verbose:
            traceback.print_exc(file=sys.stderr)
        print(one_line(exc), file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
