"""moa: Mixture-of-Agents: stacks of layers, each agent reading the previous layer's answers of
its stack; optional final aggregator. For LangGraph Studio. Generated from the method
registry by `python -m toa_graph.studio --write`.
"""

from toa_graph.studio import studio_graph

graph = studio_graph("moa")
