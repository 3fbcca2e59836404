"""Parallel ensemble (the budget split over every agent, all asked at once), for LangGraph Studio."""

from toa_graph.studio import studio_graph

graph = studio_graph("ensemble")
