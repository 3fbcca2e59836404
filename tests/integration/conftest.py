"""Integration fixtures: the embedded stack (vLLM CPU build + SmolLM2), once per session.

The stack is prepared (cached under ``$TOA_GRAPH_CACHE``; works from an empty cache) and
its servers are started on 127.0.0.1 once per test session and stopped by PID at the end.
A server kept running with ``python -m toa_graph.embedded start`` is reused (and left
running). Set ``TOA_GRAPH_SKIP_INTEGRATION=1`` to skip these tests; nothing else skips
them: a failing start fails the tests with the server log tail.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from toa_graph.config import ProjectConfig
from toa_graph.embedded import EmbeddedStack

_HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def embedded_stack() -> Iterator[EmbeddedStack]:
    """The running embedded stack (``model_configs/embedded.yaml``) for the whole session."""
    if os.environ.get("TOA_GRAPH_SKIP_INTEGRATION") == "1":
        pytest.skip("TOA_GRAPH_SKIP_INTEGRATION=1")
    with EmbeddedStack(keep=False, reuse=True, startup_timeout_s=900) as stack:
        yield stack


@pytest.fixture(scope="session")
def embedded_config(embedded_stack: EmbeddedStack) -> ProjectConfig:
    """The embedded ProjectConfig with agents pointed at the running servers."""
    return embedded_stack.config()
