"""Random sampling (one agent, best of budget by reward), for LangGraph Studio."""

from toa_graph.studio import studio_graph

graph = studio_graph("random")
