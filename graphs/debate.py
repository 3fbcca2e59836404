"""debate: Debate & Reflect: agents debate; correct ones give feedback, others reflect. For
LangGraph Studio. Generated from the method registry by `python -m toa_graph.studio
--write`.
"""

from toa_graph.studio import studio_graph

graph = studio_graph("debate")
