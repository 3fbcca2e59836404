"""seq_refine: Independent chains, each reshuffling the agents: a fresh answer, then each agent
refines the previous step's answer. For LangGraph Studio. Generated from the method registry
by `python -m toa_graph.studio --write`.
"""

from toa_graph.studio import studio_graph

graph = studio_graph("seq_refine")
