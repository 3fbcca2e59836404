"""Sub-commands of ``toa-graph`` (one module each) and the helpers they share."""

from __future__ import annotations

import argparse
import contextlib
import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from toa_graph.config import ProjectConfig
    from toa_graph.registry import RunSettings


def _parse_set(items: list[str]) -> dict[str, Any]:
    """``["alpha=0.05", "plays_per_step=4"]`` -> ``{"alpha": 0.05, "plays_per_step": 4}``."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"--set expects KNOB=VALUE, got {item!r}")
        try:
            out[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            out[key.strip()] = raw
    return out


def add_limit_flags(p: Any) -> None:
    """``--max-tokens-per-prompt`` / ``--max-cost-per-prompt``: the limit knobs as flags."""
    p.add_argument(
        "--max-tokens-per-prompt",
        type=int,
        default=None,
        metavar="N",
        help="most tokens (prompt + completion) one prompt may spend; a step that could "
        "pass it is not started (needs each agent's max_tokens)",
    )
    p.add_argument(
        "--max-cost-per-prompt",
        type=float,
        default=None,
        metavar="X",
        help="most money one prompt may spend, at the agents' price_per_million (every "
        "agent needs prices); a step that could pass it is not started",
    )


def parse_knobs(items: list[str], args: Any = None) -> dict[str, Any]:
    """The ``--set`` knobs, and the limit flags of ``args`` (:func:`add_limit_flags`)."""
    from toa_graph.cost import LIMIT_KNOBS

    out = _parse_set(items)
    for knob in LIMIT_KNOBS:
        if getattr(args, knob, None) is not None:
            out[knob] = getattr(args, knob)
    return out


@contextlib.contextmanager
def project_config(path: str | None, *, keep_servers: bool = False) -> Iterator[ProjectConfig]:
    """Yield a ready ProjectConfig: the given file, or the embedded stack (started here)."""
    from toa_graph.config import load_config

    if path and path != "embedded":
        cfg = load_config(path)
        if not any(u.startswith("embedded://") for a in cfg.agents for u in a.urls):
            yield cfg
            return
    from toa_graph.embedded import EmbeddedStack

    with EmbeddedStack(path if path and path != "embedded" else None, keep=keep_servers) as stack:
        yield stack.config()


def set_help(what: str = "context knobs") -> str:
    """``--set`` help: each method's knobs with their defaults, read from the registry."""
    from toa_graph.registry import knobs_help

    return f"{what}, e.g. --set alpha=0.05. Knobs: " + " | ".join(knobs_help().splitlines())


def method_choices() -> list[str]:
    from toa_graph.registry import method_names

    return method_names()


def settings_parser(
    *,
    method_help: str | None = "default: the config's, else toa",
    budget_help: str | None = "generations per prompt (default: the config's, else 8)",
    set_what: str = "context knobs",
    keep_help: str = "leave embedded servers running for later runs",
) -> argparse.ArgumentParser:
    """The options every command that runs a method shares, declared once: ``--config``,
    ``--method``, ``--budget`` (each left out when its help is ``None``), ``--set``, the
    limit flags (:func:`add_limit_flags`) and ``--keep-servers``. Pass it as
    ``parents=[...]`` to ``add_parser``; read the options back with :func:`run_settings`."""
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("method and config")
    g.add_argument("--config", default=None, help="model config YAML, or 'embedded' (default)")
    if method_help is not None:
        g.add_argument("--method", default=None, choices=method_choices(), help=method_help)
    if budget_help is not None:
        g.add_argument("--budget", type=int, default=None, help=budget_help)
    g.add_argument(
        "--set", action="append", default=[], metavar="KNOB=VALUE", help=set_help(set_what)
    )
    add_limit_flags(g)
    g.add_argument("--keep-servers", action="store_true", help=keep_help)
    return p


def run_settings(
    args: argparse.Namespace, cfg: ProjectConfig, *, default_budget: int | None = None
) -> RunSettings:
    """The run's settings from the shared options (:func:`settings_parser`) and the config,
    resolved once (:meth:`~toa_graph.registry.RunSettings.resolve`): a knob or option the
    method lacks, or a bad value, is a :class:`~toa_graph.errors.UserError`."""
    from toa_graph.registry import RunSettings

    return RunSettings.resolve(
        cfg,
        method=getattr(args, "method", None),
        knobs=parse_knobs(args.set, args),
        budget=getattr(args, "budget", None),
        default_budget=default_budget,
    )
