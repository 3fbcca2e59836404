"""One module per sampling method; each exposes a ``create_<method>_graph`` factory that
returns an uncompiled ``StateGraph`` with the shared input/output contract."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from langgraph.graph import StateGraph

from toa_graph.methods.debate import create_debate_graph, debate_tdpo_pairs
from toa_graph.methods.ensemble import create_ensemble_graph
from toa_graph.methods.moa import create_moa_graph
from toa_graph.methods.prs import create_prs_graph
from toa_graph.methods.random_sampling import create_random_sampling_graph
from toa_graph.methods.seq_refine import create_seq_refine_graph
from toa_graph.methods.toa import create_toa_graph

MethodFactory = Callable[..., StateGraph[Any, Any, Any, Any]]

METHODS: dict[str, MethodFactory] = {
    "random": create_random_sampling_graph,
    "prs": create_prs_graph,
    "ensemble": create_ensemble_graph,
    "seq_refine": create_seq_refine_graph,
    "moa": create_moa_graph,
    "debate": create_debate_graph,
    "toa": create_toa_graph,
}
"""Method name -> factory ``(agents=..., reward=...) -> uncompiled StateGraph``."""

__all__ = [
    "METHODS",
    "MethodFactory",
    "create_debate_graph",
    "create_ensemble_graph",
    "create_moa_graph",
    "create_prs_graph",
    "create_random_sampling_graph",
    "create_seq_refine_graph",
    "create_toa_graph",
    "debate_tdpo_pairs",
]
