"""Fixtures shared by the unit tests."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from langgraph.checkpoint.memory import InMemorySaver

from toa_graph import cli


@pytest.fixture(params=["none", "memory"])
def compile_kwargs(request: pytest.FixtureRequest) -> dict[str, object]:
    """Compile each graph twice: without a checkpointer and with an in-memory one (which
    catches state that is unserialisable or mutated in place)."""
    return {} if request.param == "none" else {"checkpointer": InMemorySaver()}


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """cli.main configures the root logger; put it back for the tests that follow."""
    names = ("", *cli.QUIET_LOGGERS)
    levels = {n: logging.getLogger(n).level for n in names}
    handlers = list(logging.getLogger().handlers)
    yield
    for n, level in levels.items():
        logging.getLogger(n).setLevel(level)
    logging.getLogger().handlers[:] = handlers
