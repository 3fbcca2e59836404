"""Debate & Reflect (D&R: rounds, feedback and reflections, one shared prompt), for LangGraph Studio."""

from toa_graph.studio import studio_graph

graph = studio_graph("debate")
