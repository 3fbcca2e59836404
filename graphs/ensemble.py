"""ensemble: Every agent samples its share of the budget in parallel. For LangGraph Studio.
Generated from the method registry by `python -m toa_graph.studio --write`.
"""

from toa_graph.studio import studio_graph

graph = studio_graph("ensemble")
