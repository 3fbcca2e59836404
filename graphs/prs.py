"""PRS (sample half the budget from one agent, refine the best with the other half), for LangGraph Studio."""

from toa_graph.studio import studio_graph

graph = studio_graph("prs")
