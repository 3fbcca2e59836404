"""abmcts: AB-MCTS: TreeQuest's Thompson-sampling tree search over agents (answer afresh or
refine a response), on TOA's nodes. For LangGraph Studio. Generated from the method registry
by `python -m toa_graph.studio --write`.
"""

from toa_graph.studio import studio_graph

graph = studio_graph("abmcts")
