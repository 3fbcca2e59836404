"""Sub-commands of ``toa-graph`` (one module each) and the helpers they share."""

from __future__ import annotations

import argparse
import contextlib
import json
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from toa_graph.context import DEFAULT_BUDGET
from toa_graph.errors import UserError

if TYPE_CHECKING:
    from toa_graph.config import ProjectConfig
    from toa_graph.registry import RunSettings


BUDGET_HELP = "generations per {what} (default: the config's, else {default})"
"""The --budget help of every command (one default: context.DEFAULT_BUDGET)."""


def budget_help_text(what: str = "prompt") -> str:
    return BUDGET_HELP.format(what=what, default=DEFAULT_BUDGET)


def check_budget_flag(flag: int | None) -> None:
    """``--budget`` below 1 is a :class:`UserError` (call it before starting anything)."""
    if flag is not None and int(flag) < 1:
        raise UserError(f"--budget must be >= 1, got {flag}")


def _parse_set(items: list[str]) -> dict[str, Any]:
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
def project_config(
    path: str | None, *, keep_servers: bool = False, check_agents: bool = True
) -> Iterator[ProjectConfig]:
    """Yield a ready ProjectConfig: the given file, or the embedded stack (started here).
    With ``check_agents``, every agent's endpoint is asked first (:func:`check_endpoints`),
    so an unreachable one stops the command before any prompt runs."""
    from toa_graph.config import load_config

    if path and path != "embedded":
        cfg = load_config(path)
        if not any(u.startswith("embedded://") for a in cfg.agents for u in a.urls):
            if check_agents:
                check_endpoints(cfg.agents)
            yield cfg
            return
    from toa_graph.embedded import EmbeddedStack

    with EmbeddedStack(path if path and path != "embedded" else None, keep=keep_servers) as stack:
        yield stack.config()


def _reachable(url: str, api_key: str, timeout_s: float) -> str | None:
    """``None`` when ``url`` answers ``GET /models`` with any HTTP status (a 401 still means
    the server is there), else why not."""
    import httpx

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        httpx.get(url.rstrip("/") + "/models", headers=headers, timeout=timeout_s)
    except httpx.HTTPError as exc:
        return f"{url}: {type(exc).__name__}{f' ({exc})' if str(exc) else ''}"
    return None


def check_endpoints(agents: Sequence[Any], timeout_s: float = 5.0) -> None:
    """Ask every OpenAI-compatible agent's endpoint(s) once, in parallel; a
    :class:`UserError` with one line per agent none of whose URLs answers (other providers
    are not checked: their SDKs own their endpoints)."""
    from concurrent.futures import ThreadPoolExecutor

    checks = [
        (a, url) for a in agents if getattr(a, "provider", "openai") == "openai" for url in a.urls
    ]
    if not checks:
        return
    with ThreadPoolExecutor(max_workers=min(16, len(checks))) as pool:
        errors = list(pool.map(lambda c: _reachable(c[1], c[0].api_key(), timeout_s), checks))
    down: dict[str, list[str]] = {}
    for (agent, _), error in zip(checks, errors, strict=True):
        if error is not None:
            down.setdefault(agent.name, []).append(error)
    lines = [
        f"agent {a.name!r} is unreachable: {'; '.join(down[a.name])}"
        for a in agents
        if a.name in down and len(down[a.name]) == len(a.urls)
    ]
    if lines:
        raise UserError("\n".join(lines))


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
    budget_help: str | None = BUDGET_HELP.format(what="prompt", default=DEFAULT_BUDGET),
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
    method lacks, or a bad value, is a :class:`~toa_graph.errors.UserError`; so is
    ``--budget`` below 1 (:func:`check_budget_flag`)."""
    from toa_graph.registry import RunSettings

    check_budget_flag(getattr(args, "budget", None))
    return RunSettings.resolve(
        cfg,
        method=getattr(args, "method", None),
        knobs=parse_knobs(args.set, args),
        budget=getattr(args, "budget", None),
        default_budget=default_budget,
    )
