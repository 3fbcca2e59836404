"""Mixture-of-Agents (stacks of layers, each reading its stack's previous layer), for LangGraph Studio."""

from toa_graph.studio import studio_graph

graph = studio_graph("moa")
