"""OpenAI-compatible HTTP server over the sampling methods (``toa-graph serve``).

Split like vLLM's entrypoints: :mod:`.protocol` (pydantic request/response models),
:mod:`.serving` (the handler), :mod:`.app` (the thin FastAPI router). Needs the
``server`` extra (``pip install 'toa-graph[server]'``).
"""

from toa_graph.server.app import build_app, create_app
from toa_graph.server.serving import ChatServing, ServerSettings, ServingError

__all__ = ["ChatServing", "ServerSettings", "ServingError", "build_app", "create_app"]
