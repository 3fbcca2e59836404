"""The embedded stack end to end: real text from both agents, real judge scores."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import HumanMessage, SystemMessage
from langchain_openai import ChatOpenAI

from toa_graph.config import AgentConfig, ProjectConfig
from toa_graph.embedded import EmbeddedStack
from toa_graph.rewards import build_reward
from toa_graph.rewards.embedded import EmbeddedReward
from toa_graph.rewards.judge import JudgeReward

pytestmark = pytest.mark.integration


def _chat(agent: AgentConfig, **kwargs: Any) -> ChatOpenAI:
    return ChatOpenAI(
        model=agent.model,
        base_url=agent.base_url,
        api_key=agent.api_key(),
        temperature=agent.temperature,
        top_p=agent.top_p,
        max_tokens=agent.max_tokens,
        timeout=agent.timeout_s,
        max_retries=1,
        **kwargs,
    )


def test_config_has_two_distinct_agents(embedded_config: ProjectConfig) -> None:
    agents = embedded_config.agents
    assert len(agents) >= 2
    assert len({a.name for a in agents}) == len(agents)
    assert len({a.system_prompt for a in agents}) == len(agents)
    for a in agents:
        assert a.base_url is not None and a.base_url.startswith("http://127.0.0.1:")


async def test_every_agent_returns_real_text_with_usage(embedded_config: ProjectConfig) -> None:
    for agent in embedded_config.agents:
        msg = await _chat(agent).ainvoke(
            [
                SystemMessage(agent.system_prompt or ""),
                HumanMessage("Name one fruit that is yellow, and say why people eat it."),
            ]
        )
        text = msg.content
        assert isinstance(text, str)
        assert len(text.split()) >= 3, f"{agent.name}: {text!r}"
        usage = msg.usage_metadata
        assert usage is not None
        assert usage["input_tokens"] > 0
        assert 0 < usage["output_tokens"] <= agent.max_tokens
        # vLLM names the first served alias in every response, whichever alias was asked.
        assert msg.response_metadata.get("model_name") in {a.model for a in embedded_config.agents}


async def test_n_choices_in_one_request(embedded_config: ProjectConfig) -> None:
    agent = embedded_config.agents[0]
    out = await _chat(agent, n=3).agenerate([[HumanMessage("Say a color.")]])
    texts = [g.text for g in out.generations[0]]
    assert len(texts) == 3 and all(t.strip() for t in texts)


async def test_judge_returns_real_scores(embedded_config: ProjectConfig) -> None:
    agent = embedded_config.agents[0]
    judge = JudgeReward.from_agent(agent)
    ratings = await judge.ascore(
        "What is the capital of France?",
        ["The capital of France is Paris.", "Bananas are yellow."],
    )
    assert len(ratings) == 2
    assert all(1.0 <= r <= 10.0 for r in ratings)
    # vLLM supports both: the rating comes from the token probabilities, not a parse.
    assert judge.prefill and judge.use_logprobs
    assert any(r != round(r) for r in ratings), ratings


async def test_embedded_reward_from_config_scores_with_the_judge(
    embedded_config: ProjectConfig,
) -> None:
    reward = build_reward(embedded_config.reward, agents=embedded_config.agents)
    assert isinstance(reward, EmbeddedReward)
    scores = await reward.ascore(
        [{"role": "user", "content": "Give me one tip for sleeping well."}],
        ["Keep a regular bedtime and avoid screens before bed.", "Purple."],
    )
    assert reward.last_kind == "judge"
    assert len(scores) == 2 and all(0.0 <= s <= 1.0 for s in scores)


def test_kept_server_registry_lists_live_servers_and_prunes_dead_ones(
    embedded_stack: EmbeddedStack, tmp_path: Path
) -> None:
    from toa_graph.embedded import ServerInfo, _write_state, status

    live = next(iter(embedded_stack.servers.values()))
    dead = ServerInfo(model=live.model, pid=2**22 + 7, port=1, aliases=[], log="", proc_start="1")
    _write_state(tmp_path, [live, dead])
    assert [s.pid for s in status(tmp_path)] == [live.pid]
    assert [s.pid for s in status(tmp_path)] == [live.pid]  # the dead entry was pruned
