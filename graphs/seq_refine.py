"""Sequential refinement (independent chains, one refine step per agent), for LangGraph Studio."""

from toa_graph.studio import studio_graph

graph = studio_graph("seq_refine")
