"""AB-MCTS (TreeQuest's ABMCTSA over the configured agents) for LangGraph Studio."""

from toa_graph.studio import studio_graph

graph = studio_graph("abmcts")
