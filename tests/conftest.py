"""Fixtures shared by the unit tests."""

from __future__ import annotations

import pytest
from langgraph.checkpoint.memory import InMemorySaver


@pytest.fixture(params=["none", "memory"])
def compile_kwargs(request: pytest.FixtureRequest) -> dict[str, object]:
    """Compile each graph twice: without a checkpointer and with an in-memory one (which
    catches state that is unserialisable or mutated in place)."""
    return {} if request.param == "none" else {"checkpointer": InMemorySaver()}
