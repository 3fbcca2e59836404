"""One module per sampling method; each exposes a ``create_<method>_graph`` factory that
returns an uncompiled ``StateGraph`` with the shared input/output contract."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from langgraph.graph import StateGraph

from toa_graph.methods.abmcts import create_abmcts_graph
from toa_graph.methods.debate import create_debate_graph, debate_tdpo_pairs
from toa_graph.methods.ensemble import create_ensemble_graph
from toa_graph.methods.moa import create_moa_graph
from toa_graph.methods.prs import create_prs_graph
from toa_graph.methods.random_sampling import create_random_sampling_graph
from toa_graph.methods.seq_refine import create_seq_refine_graph
from toa_graph.methods.toa import create_toa_graph
from toa_graph.registry import METHOD_SPECS, MethodSpec, compile_method

MethodFactory = Callable[..., StateGraph[Any, Any, Any, Any]]


class _Factories(Mapping[str, MethodFactory]):
    """A live view of the registry's factories (methods registered later appear too)."""

    def __getitem__(self, name: str) -> MethodFactory:
        try:
            factory: MethodFactory = METHOD_SPECS[name].factory
        except KeyError:
            raise KeyError(name) from None
        return factory

    def __iter__(self) -> Iterator[str]:
        return iter(METHOD_SPECS)

    def __len__(self) -> int:
        return len(METHOD_SPECS)

    def __repr__(self) -> str:
        return f"METHODS({', '.join(METHOD_SPECS)})"


METHODS: Mapping[str, MethodFactory] = _Factories()
"""Method name -> factory ``(agents=..., reward=...) -> uncompiled StateGraph``, read from
the registry (:mod:`toa_graph.registry`), where each method is declared."""

__all__ = [
    "METHODS",
    "METHOD_SPECS",
    "MethodFactory",
    "MethodSpec",
    "compile_method",
    "create_abmcts_graph",
    "create_debate_graph",
    "create_ensemble_graph",
    "create_moa_graph",
    "create_prs_graph",
    "create_random_sampling_graph",
    "create_seq_refine_graph",
    "create_toa_graph",
    "debate_tdpo_pairs",
]
