"""Sub-commands of ``toa-graph`` (one module each) and the helpers they share."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from toa_graph.config import ProjectConfig


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


def method_settings(
    cfg: ProjectConfig, method: str | None, knobs: dict[str, Any]
) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """The method to run with its knobs and options: the config's ``method:`` section (its
    knobs that the chosen method has; its options when it is the same method), then the
    ``--set`` knobs, checked now: :class:`~toa_graph.errors.UserError` for a knob the
    method lacks (listing its knobs), a bad value or an unknown ``agent``."""
    from toa_graph.cost import check_limits
    from toa_graph.errors import UserError
    from toa_graph.registry import get_method, method_context

    name = method or cfg.method.name
    spec = get_method(name)
    context = {k: v for k, v in cfg.method.context.items() if k in spec.knobs}
    context.update(knobs)
    method_context(name, context)
    agents = [a.name for a in cfg.agents]
    if context.get("agent") is not None and context["agent"] not in agents:
        raise UserError(f"context.agent: {context['agent']!r} is not one of the agents {agents}")
    check_limits({a.name: (a.price_per_million, a.max_tokens) for a in cfg.agents}, context)
    options = dict(cfg.method.options) if name == cfg.method.name else {}
    return name, context, options
