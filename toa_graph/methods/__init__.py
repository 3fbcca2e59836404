"""One module per sampling method; each exposes a ``create_<method>_graph`` factory that
returns an uncompiled ``StateGraph`` with the shared input/output contract."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from langgraph.graph import StateGraph

from toa_graph.methods.toa import create_toa_graph

MethodFactory = Callable[..., StateGraph[Any, Any, Any, Any]]

METHODS: dict[str, MethodFactory] = {
    "toa": create_toa_graph,
}
"""Method name -> factory ``(agents=..., reward=...) -> uncompiled StateGraph``."""

__all__ = ["METHODS", "MethodFactory", "create_toa_graph"]
