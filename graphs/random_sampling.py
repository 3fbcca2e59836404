"""random: Best of N samples from one agent. For LangGraph Studio. Generated from the method
registry by `python -m toa_graph.studio --write`.
"""

from toa_graph.studio import studio_graph

graph = studio_graph("random")
