"""Graphs for LangGraph Studio / ``langgraph dev`` and other servers.

The config comes from ``$TOA_GRAPH_CONFIG`` (default: the embedded config). Agents that
point at ``embedded://`` endpoints are resolved against the embedded servers kept running
by ``python -m toa_graph.embedded start``; nothing is started, connected or loaded at
import: clients and the reward model are built on first use.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from toa_graph.config import ProjectConfig, load_config
from toa_graph.registry import compile_method
from toa_graph.rewards import LazyReward

logger = logging.getLogger(__name__)


def studio_config(path: str | None = None) -> ProjectConfig:
    """Load the serving config and point embedded agents at running kept servers."""
    from toa_graph import embedded

    cfg = load_config(path or os.environ.get("TOA_GRAPH_CONFIG") or embedded.default_config_path())
    try:
        running = {s.model: s for s in embedded.status()}
    except Exception as exc:  # no cache dir yet, lock trouble: leave URLs unresolved
        logger.warning("could not read the embedded servers' state: %s", exc)
        running = {}
    agents = []
    for a in cfg.agents:
        key = embedded.embedded_key(a)
        if key in running and a.model in running[key].aliases:
            a = a.model_copy(update={"base_url": running[key].base_url})
        agents.append(a)
    return cfg.model_copy(update={"agents": agents})


def studio_graph(method: str, config_path: str | None = None, **options: Any) -> Any:
    """A compiled graph of ``method`` (no checkpointer: the server brings its own), with the
    config's ``method.options`` when the config's method is this one, then ``options``."""
    cfg = studio_config(config_path)
    configured = cfg.method.options if cfg.method.name == method else {}
    return compile_method(
        method,
        agents=cfg.agents,
        reward=LazyReward(cfg.reward, agents=cfg.agents),
        options={**configured, **options},
    )
