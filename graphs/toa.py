"""toa: Tree search over agents and responses steered by a reward model. For LangGraph Studio.
Generated from the method registry by `python -m toa_graph.studio --write`.
"""

from toa_graph.studio import studio_graph

graph = studio_graph("toa")
