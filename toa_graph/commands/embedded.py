"""``toa-graph embedded``: prepare the embedded stack, start, list and stop kept servers."""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Sequence
from typing import Any

HELP = "prepare the embedded models (vLLM CPU build) and manage kept servers"


PREPARE = """\
Install vLLM's CPU build in its own venv and convert the embedded chat models, once.
Everything is cached under $TOA_GRAPH_CACHE (default ~/.cache/toa-graph); a second
prepare finds it there and does nothing. Runs on its own the first time a command
needs the embedded stack."""

START = """\
Start the vLLM CPU servers a config's embedded:// agents need, and keep them running
after this command (later runs reuse them instead of starting their own). Prints each
agent's name, model and URL. Stop them with 'toa-graph embedded stop'."""

STATUS = "List the kept embedded servers that are running: model, pid, URL, served names, log."

STOP = "Stop every kept embedded server (the ones status lists)."


def _add_actions(parser: argparse.ArgumentParser) -> None:
    from toa_graph.cli import HelpFormatter

    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    add = functools.partial(sub.add_parser, formatter_class=HelpFormatter)
    add("prepare", help="install the vLLM CPU venv and convert the models (idempotent)",
        description=PREPARE)  # fmt: skip
    p_start = add("start", help="start (or reuse) kept servers for a config", description=START)
    p_start.add_argument(
        "--config",
        default=None,
        help="config with embedded:// agents (default: the shipped embedded.yaml)",
    )
    p_start.add_argument(
        "--kv-cache-gib", type=float, default=1.0, help="KV cache per vLLM CPU server, in GiB"
    )
    add("status", help="list kept servers that are running", description=STATUS)
    add("stop", help="stop every kept server", description=STOP)


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("embedded", help=HELP, description=HELP)
    _add_actions(p)
    p.set_defaults(func=embedded)


def embedded(args: argparse.Namespace) -> int:
    from toa_graph.embedded import EmbeddedStack, prepare, status, stop_all

    if args.action == "prepare":
        prep = prepare()
        for key, path in prep.models.items():
            print(f"{key}\t{path}")
    elif args.action == "start":
        stack = EmbeddedStack(args.config, keep=True, kv_cache_gib=args.kv_cache_gib).start()
        for a in stack.config().agents:
            print(f"{a.name}\t{a.model}\t{a.base_url}")
    elif args.action == "status":
        live = status()
        if not live:
            print("no kept servers running")
        for s in live:
            print(f"{s.model}\tpid {s.pid}\t{s.base_url}\t{' '.join(s.aliases)}\t{s.log}")
    elif args.action == "stop":
        print(f"stopped {stop_all()} server(s)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m toa_graph.embedded``: the ``embedded`` command on its own (errors: the
    message and exit code 1, as before)."""
    from toa_graph.embedded import EmbeddedError

    parser = argparse.ArgumentParser(prog="python -m toa_graph.embedded", description=HELP)
    _add_actions(parser)
    args = parser.parse_args(argv)
    try:
        return embedded(args)
    except EmbeddedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
