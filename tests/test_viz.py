"""The TOA tree as text and as a matplotlib drawing (fake agents, no servers)."""

from __future__ import annotations

import asyncio
import doctest

import pytest

import toa_graph.viz
from tests.fakes import fake_agents, hash_reward
from toa_graph.methods import METHODS
from toa_graph.viz import draw_tree, tree_lines


def test_doctests() -> None:
    assert doctest.testmod(toa_graph.viz).failed == 0


def test_text_and_drawing_of_a_real_search() -> None:
    graph = METHODS["toa"](agents=fake_agents(("a", "b")), reward=hash_reward).compile()
    out = asyncio.run(graph.ainvoke({"prompt": "hi"}, context={"budget": 7}))
    lines = tree_lines(out["tree"], out["samples"], width=20)
    assert lines[0] == "prompt"
    shown = [s["id"] for s in out["samples"] if any(f"{s['id']} by " in ln for ln in lines)]
    assert shown == [s["id"] for s in out["samples"]]  # every sample appears once
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    ax = draw_tree(out["tree"])
    assert ax.get_title() == "TOA tree: 7 responses"
    assert len(ax.collections) == sum(
        1 for n in out["tree"]["nodes"] if n["type"] != "model" or n["children"]
    )
