"""Mixture-of-Agents (layers of agents reading the previous layer's answers), for LangGraph Studio."""

from toa_graph.studio import studio_graph

graph = studio_graph("moa")
