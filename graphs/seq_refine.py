"""Sequential refinement (agents in shuffled turns, each improving the previous answer), for LangGraph Studio."""

from toa_graph.studio import studio_graph

graph = studio_graph("seq_refine")
