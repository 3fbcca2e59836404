"""The README's composition snippet and docs/examples/chatbot.py with the embedded stack's
own agents and reward section (``reward=cfg.reward``), as a new user runs them."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from toa_graph import METHODS
from toa_graph.config import ProjectConfig

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "chatbot.py"


async def test_the_composition_snippet_takes_the_config_reward(
    embedded_config: ProjectConfig,
) -> None:
    cfg = embedded_config
    graph = METHODS["toa"](agents=cfg.agents, reward=cfg.reward).compile()
    out = await graph.ainvoke({"prompt": "What is 2+2?"}, context={"budget": 4})
    assert len(out["samples"]) == 4 and out["best"] is not None and out["best"]["text"].strip()


async def test_the_chatbot_example_answers_two_turns(embedded_config: ProjectConfig) -> None:
    spec = importlib.util.spec_from_file_location("chatbot_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    bot = example.build_chatbot(embedded_config.agents, embedded_config.reward)
    ctx = example.ChatContext(user_id="u1", budget=4)
    first = await example.chat(bot, "t", "What is 2+2?", ctx)
    second = await example.chat(bot, "t", "And 3+3?", ctx)
    assert first.strip() and second.strip()
