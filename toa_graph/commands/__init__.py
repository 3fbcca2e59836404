"""Sub-commands of ``toa-graph`` (one module each) and the helpers they share."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from toa_graph.errors import UserError

if TYPE_CHECKING:
    from toa_graph.config import ProjectConfig


BUDGET_HELP = "generations per {what} (default: the config's, else {default})"
"""The --budget help of every command (one default: context.DEFAULT_BUDGET)."""


def budget_help(what: str) -> str:
    from toa_graph.context import DEFAULT_BUDGET

    return BUDGET_HELP.format(what=what, default=DEFAULT_BUDGET)


def budget_setting(flag: int | None, context: Mapping[str, Any] | None = None) -> int:
    """The budget of a run: ``--budget``, else the config's, else
    :data:`~toa_graph.context.DEFAULT_BUDGET`; below 1 it is a :class:`UserError` (call it
    before starting anything, with ``context`` omitted, to check the flag alone)."""
    from toa_graph.context import DEFAULT_BUDGET

    budget = flag if flag is not None else (context or {}).get("budget") or DEFAULT_BUDGET
    if int(budget) < 1:
        raise UserError(f"--budget must be >= 1, got {budget}")
    return int(budget)


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
