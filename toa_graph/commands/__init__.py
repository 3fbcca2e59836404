"""Sub-commands of ``toa-graph`` (one module each) and the helpers they share."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from toa_graph.errors import UserError

if TYPE_CHECKING:
    from toa_graph.config import ProjectConfig


def parse_knobs(items: list[str]) -> dict[str, Any]:
    """``["alpha=0.05", "plays_per_step=4"]`` -> ``{"alpha": 0.05, "plays_per_step": 4}``."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise UserError(f"--set expects KNOB=VALUE, got {item!r}")
        try:
            out[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            out[key.strip()] = raw
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
    method lacks (listing its knobs) or a bad value."""
    from toa_graph.registry import get_method, method_context

    name = method or cfg.method.name
    spec = get_method(name)
    context = {k: v for k, v in cfg.method.context.items() if k in spec.knobs}
    context.update(knobs)
    method_context(name, context)
    options = dict(cfg.method.options) if name == cfg.method.name else {}
    return name, context, options
