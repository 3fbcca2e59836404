"""Every registered method against the real embedded stack (vLLM CPU + SmolLM2, real reward).

Small budgets and short answers keep this to a few minutes on 2 CPU cores.
"""

from __future__ import annotations

import pytest

from toa_graph import METHODS
from toa_graph.config import ProjectConfig
from toa_graph.rewards import build_reward

pytestmark = pytest.mark.integration

BUDGET = 4


def _agents(cfg: ProjectConfig) -> list:
    # short answers: the point is the real path (HTTP, vLLM, usage, reward), not quality
    return [a.model_copy(update={"max_tokens": 48}) for a in cfg.agents]


@pytest.mark.parametrize("method", sorted(METHODS))
async def test_method_on_real_stack(method: str, embedded_config: ProjectConfig) -> None:
    agents = _agents(embedded_config)
    reward = build_reward(embedded_config.reward, agents=agents)
    graph = METHODS[method](agents=agents, reward=reward).compile()
    # a translation prompt with a reference: the embedded reward scores it by chrF
    out = await graph.ainvoke(
        {
            "prompt": "Translate to English: Das Haus ist sehr alt.",
            "reference": "The house is very old.",
        },
        context={"budget": BUDGET, "rounds": 1},
    )
    samples = out["samples"]
    assert 1 <= len(samples) <= BUDGET
    if method != "debate":  # debate's budget is a cap (2 agents: one round fits exactly)
        assert len(samples) == BUDGET
    # debate feedback and reflections are not answers: they are never scored
    ok = [s for s in samples if not s["error"] and s.get("role") not in ("feedback", "reflection")]
    assert ok, [s["error"] for s in samples]
    for s in ok:
        assert s["text"].strip()
        assert s["usage"]["output_tokens"] > 0 and s["usage"]["input_tokens"] > 0
        assert s["reward"] is not None and 0.0 <= s["reward"] <= 1.0  # embedded reward is in [0, 1]
        assert s["latency_s"] > 0
    assert out["best"] is not None and out["best"]["reward"] == max(s["reward"] for s in ok)


async def test_toa_on_real_stack_uses_both_agents_and_refines(
    embedded_config: ProjectConfig,
) -> None:
    agents = _agents(embedded_config)
    reward = build_reward(embedded_config.reward, agents=agents)
    graph = METHODS["toa"](agents=agents, reward=reward).compile()
    out = await graph.ainvoke(
        {"prompt": "What is 6 times 7? Answer with the number.", "reference": "42"},
        context={"budget": 6, "width": 2, "plays_per_step": 2},
    )
    samples = out["samples"]
    assert len(samples) == 6
    assert {s["agent"] for s in samples} == {a.name for a in agents}
    assert any(s["kind"] == "refine" for s in samples)
    assert out["tree"]["plays"] == 6
