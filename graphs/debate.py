"""Debate and reflect (agents debate, a teacher critiques, the student reflects), for LangGraph Studio."""

from toa_graph.studio import studio_graph

graph = studio_graph("debate")
