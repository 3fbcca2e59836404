"""Reasoning models: the answer/trace split in every shape, over real HTTP against the fake
OpenAI-compatible server and with fake LangChain chat models for content blocks; what the
reward and the other agents' prompts see; the reasoning settings of the config."""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from typing import Any

import pytest
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import Field

from tests.fake_openai_server import fake_trace
from tests.fake_servers import spawn, stop_process
from tests.fakes import FakeAgent
from toa_graph import (
    CallableReward,
    create_moa_graph,
    create_random_sampling_graph,
    create_seq_refine_graph,
)
from toa_graph.agents import AgentPool
from toa_graph.config import AgentConfig, ConfigError, load_config
from toa_graph.reasoning import estimate_tokens, reasoning_request, split_message, split_text
from toa_graph.rewards.reference import chrf_scores

QUESTION = [{"role": "user", "content": "What is 2 + 2?"}]


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    proc, port = spawn(
        "tests.fake_openai_server", "--delay", "0", "--capacity", "16", "--deterministic"
    )
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        stop_process(proc)


def thinker(url: str, shape: str | None, **kw: Any) -> AgentConfig:
    body = {"fake_reasoning": shape} if shape else {}
    return AgentConfig(
        name="m", model="m", base_url=url, max_retries=0, timeout_s=5, extra_body=body, **kw
    )


# ---------------------------------------------------------------- the split, offline


@pytest.mark.parametrize(
    ("text", "answer", "trace"),
    [
        ("<think>a</think>\n\nB", "B", "a"),
        ("<thinking>\na\n</thinking>B", "B", "a"),
        ("<THINK>a</THINK>B", "B", "a"),
        ("a\n</think>\n\nB", "B", "a"),  # R1 distill: the template opened the tag
        ("<think>a</think>B<think>c</think>D", "BD", "a\n\nc"),  # interleaved
        ("x < y, so B", "x < y, so B", None),
        ("<think>\n\n</think>\n\nB", "B", None),  # Qwen3, enable_thinking false: empty block
    ],
)
def test_tags_in_the_content(text: str, answer: str, trace: str | None) -> None:
    split = split_text(text)
    assert (split.answer, split.reasoning, split.unfinished) == (answer, trace, False)


@pytest.mark.parametrize(
    ("message", "trace"),
    [
        ({"content": "B", "reasoning_content": "a"}, "a"),
        ({"content": "B", "reasoning": "a"}, "a"),
        ({"content": "B", "reasoning_details": [{"type": "reasoning.text", "text": "a"}]}, "a"),
        ({"content": "B", "reasoning_details": [{"type": "reasoning.summary", "summary": "a"}]}, "a"),
        ({"content": [{"type": "thinking", "thinking": "a"}, {"type": "text", "text": "B"}]}, "a"),
        ({"content": [{"type": "reasoning", "reasoning": "a"}, {"type": "text", "text": "B"}]}, "a"),
        (
            {"content": [
                {"type": "reasoning", "summary": [{"type": "summary_text", "text": "a"}]},
                {"type": "text", "text": "B"},
            ]},
            "a",
        ),
        (AIMessage("B", additional_kwargs={"reasoning_content": "a"}), "a"),
        (AIMessage([{"type": "thinking", "thinking": "a"}, "B"]), "a"),
    ],
)  # fmt: skip
def test_every_message_shape(message: Any, trace: str) -> None:
    split = split_message(message)
    assert (split.answer, split.reasoning, split.unfinished) == ("B", trace, False)


def test_a_trace_with_no_answer_is_unfinished() -> None:
    assert split_text("<think>still going").unfinished
    assert split_message({"content": None, "reasoning_content": "still going"}).unfinished
    assert split_message({"content": "B"}).reasoning is None


# ---------------------------------------------------------------- over HTTP, each shape


FIELD_SHAPES = ["reasoning_content", "reasoning", "reasoning_details"]
TAG_SHAPES = ["tags", "open-tag-missing"]


@pytest.mark.parametrize("shape", FIELD_SHAPES + TAG_SHAPES)
async def test_http_shapes_answer_and_trace(server: str, shape: str) -> None:
    (plain,) = await AgentPool([thinker(server, None)]).generate("m", QUESTION)
    (g,) = await AgentPool([thinker(server, shape)]).generate("m", QUESTION)
    assert g.error is None
    assert g.text == plain.text  # the same answer, without its trace
    assert g.reasoning == fake_trace(plain.text)
    assert "reasoning_tokens" not in plain.usage and "estimated" not in plain.usage
    if shape in FIELD_SHAPES:  # the server's count, exact
        assert g.usage["reasoning_tokens"] == len(g.reasoning.split())
        assert "estimated" not in g.usage
    else:  # no count sent: from the trace's length, marked
        assert g.usage["reasoning_tokens"] == estimate_tokens(g.reasoning)
        assert g.usage["estimated"] is True


async def test_n_choices_split_the_request_reasoning_tokens(server: str) -> None:
    pool = AgentPool([thinker(server, "reasoning_content")])
    gens = await pool.generate("m", QUESTION, n=3)
    assert all(g.error is None and g.reasoning for g in gens)
    total = sum(len(fake_trace(g.text).split()) for g in gens)
    assert sum(g.usage["reasoning_tokens"] for g in gens) == total


@pytest.mark.parametrize("shape", ["cutoff-tags", "cutoff-field"])
async def test_cut_off_inside_the_thinking_is_a_failure(server: str, shape: str) -> None:
    (g,) = await AgentPool([thinker(server, shape)]).generate("m", QUESTION)
    assert g.text == "" and g.reasoning
    assert g.error is not None and "cut off inside its thinking" in g.error


async def test_reasoning_settings_are_sent_only_when_set(server: str) -> None:
    import httpx

    await AgentPool([thinker(server, None)]).generate("m", QUESTION)
    body = httpx.get(server.removesuffix("/v1") + "/stats").json()["last_body"]
    assert not {"reasoning_effort", "chat_template_kwargs", "thinking_token_budget"} & set(body)
    cfg = thinker(server, None, reasoning_effort="low", enable_thinking=False, thinking_budget=64)
    await AgentPool([cfg]).generate("m", QUESTION)
    body = httpx.get(server.removesuffix("/v1") + "/stats").json()["last_body"]
    assert body["reasoning_effort"] == "low"
    assert body["chat_template_kwargs"] == {"enable_thinking": False}
    assert body["thinking_token_budget"] == 64


# ---------------------------------------------------------------- what the reward sees


async def test_a_correct_answer_gets_the_same_reward_with_and_without_a_trace(
    server: str,
) -> None:
    (plain,) = await AgentPool([thinker(server, None)]).generate("m", QUESTION)
    reward = CallableReward(lambda prompt, responses, refs: chrf_scores(responses, refs * 2))

    async def best(shape: str | None, **context: Any) -> dict[str, Any]:
        graph = create_random_sampling_graph([thinker(server, shape)], reward).compile()
        out = await graph.ainvoke(
            {"prompt": QUESTION, "reference": plain.text}, context={"budget": 1, **context}
        )
        return out["best"]

    without, with_trace = await best(None), await best("tags")
    assert with_trace["reasoning"] and "reasoning" not in without
    assert with_trace["reward"] == without["reward"] == pytest.approx(1.0)
    scored_trace = await best("tags", score_reasoning=True)  # switched on: trace scored too
    assert scored_trace["reward"] < without["reward"]


# ---------------------------------------------------------------- what other agents see


def _reply(name: str, k: int, messages: list[BaseMessage]) -> str:
    return f"<think>SECRET-{name}-{k}</think>ANSWER-{name}-{k}"


def _prompts(agent: FakeAgent) -> list[str]:
    return ["\n".join(str(m.content) for m in call) for call in agent.calls]


async def test_refine_and_aggregate_prompts_show_answers_not_traces() -> None:
    reward = CallableReward(lambda prompt, responses: [float(len(r)) for r in responses])
    a, b = FakeAgent(name="a", reply=_reply), FakeAgent(name="b", reply=_reply)
    moa = create_moa_graph({"a": a, "b": b}, reward).compile()
    out = await moa.ainvoke({"prompt": "q"}, context={"budget": 4, "layers": 2})
    assert all(
        s["text"].startswith("ANSWER-") and "SECRET" in s["reasoning"] for s in out["samples"]
    )
    aggregation = [p for p in _prompts(a) + _prompts(b) if "## Response" in p]
    assert aggregation and all("ANSWER-" in p and "SECRET" not in p for p in aggregation)

    for show in (False, True):  # a chain of two steps: the second refines the first
        c, d = FakeAgent(name="c", reply=_reply), FakeAgent(name="d", reply=_reply)
        refine = create_seq_refine_graph({"c": c, "d": d}, reward).compile()
        await refine.ainvoke({"prompt": "q"}, context={"budget": 2, "show_reasoning": show})
        (refinement,) = [p for p in _prompts(c) + _prompts(d) if "ANSWER-" in p]
        assert ("SECRET" in refinement) is show  # the trace only when switched on


# ---------------------------------------------------------------- LangChain content blocks


class BlockThinker(BaseChatModel):
    """A chat model answering with content blocks, as LangChain's Anthropic, Gemini and
    OpenAI Responses models do, with the provider's reasoning-token count."""

    block: dict[str, Any]
    calls: list[Any] = Field(default_factory=list)

    @property
    def _llm_type(self) -> str:
        return "block-thinker"

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> ChatResult:
        self.calls.append(messages)
        msg = AIMessage(
            [self.block, {"type": "text", "text": "The answer is 4."}],
            usage_metadata={
                "input_tokens": 5, "output_tokens": 20, "total_tokens": 25,
                "output_token_details": {"reasoning": 13},
            },
        )  # fmt: skip
        return ChatResult(generations=[ChatGeneration(message=msg)])


@pytest.mark.parametrize(
    "block",
    [
        {"type": "thinking", "thinking": "2 and 2 make 4", "signature": "x"},  # Anthropic
        {"type": "reasoning", "reasoning": "2 and 2 make 4"},  # LangChain standard (Gemini)
        {"type": "reasoning", "summary": [{"type": "summary_text", "text": "2 and 2 make 4"}]},
    ],
)
async def test_content_block_shapes(block: dict[str, Any]) -> None:
    (g,) = await AgentPool({"t": BlockThinker(block=block)}).generate("t", QUESTION)
    assert (g.text, g.reasoning, g.error) == ("The answer is 4.", "2 and 2 make 4", None)
    assert g.usage["reasoning_tokens"] == 13 and "estimated" not in g.usage


# ---------------------------------------------------------------- config


def test_setting_the_same_thing_twice_names_both(tmp_path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "agents:\n  - name: q\n    model: q\n    base_url: http://127.0.0.1:1/v1\n"
        "    enable_thinking: false\n"
        "    extra_body: {chat_template_kwargs: {enable_thinking: true}}\n"
        "reward: {kind: python, target: 'tests.fakes:length_reward'}\n"
    )
    with pytest.raises(ConfigError, match=r"enable_thinking and extra_body\.chat_template_kwargs"):
        load_config(path)
    with pytest.raises(ValueError, match=r"reasoning_effort and client_options\.reasoning"):
        AgentConfig(
            name="o", model="o", provider="ollama", reasoning_effort="low",
            client_options={"reasoning": True},
        )  # fmt: skip


def test_translated_per_provider() -> None:
    assert reasoning_request("openai") == {}
    assert reasoning_request("openai", reasoning_effort="high") == {"reasoning_effort": "high"}
    assert reasoning_request("google_genai", thinking_budget=512) == {
        "thinking_budget": 512,
        "include_thoughts": True,
    }
    assert reasoning_request("ollama", enable_thinking=True) == {"reasoning": True}
    with pytest.raises(ValueError, match="needs a thinking_budget"):
        reasoning_request("anthropic", enable_thinking=True)


def test_provider_kwargs_carry_the_settings() -> None:
    from toa_graph.agents.providers import provider_kwargs

    cfg = AgentConfig(name="c", model="claude", provider="anthropic", thinking_budget=1024)
    assert provider_kwargs(cfg, "")["thinking"] == {"type": "enabled", "budget_tokens": 1024}


# ---------------------------------------------------------------- langchain-openai contract


def test_chat_openai_private_api_contract() -> None:
    """``reasoning_chat_openai`` overrides two private methods of ``ChatOpenAI``: fail here,
    not silently in a run, when an upgrade renames them or changes what they take."""
    from langchain_openai import ChatOpenAI

    from toa_graph.agents.client import reasoning_chat_openai

    params = inspect.signature(ChatOpenAI._create_chat_result).parameters
    assert list(params) == ["self", "response", "generation_info"]
    params = inspect.signature(ChatOpenAI._convert_chunk_to_generation_chunk).parameters
    assert list(params) == ["self", "chunk", "default_chunk_class", "base_generation_info"]

    llm = reasoning_chat_openai()(model="m", api_key="x", base_url="http://127.0.0.1:1/v1")
    response = {
        "id": "c", "object": "chat.completion", "created": 0, "model": "m",
        "choices": [{
            "index": 0, "finish_reason": "stop",
            "message": {"role": "assistant", "content": "4", "reasoning_content": "2+2"},
        }],
        "usage": {
            "prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8,
            "completion_tokens_details": {"reasoning_tokens": 4},
        },
    }  # fmt: skip
    from openai.types.chat import ChatCompletion

    for raw in (response, ChatCompletion.model_validate(response)):  # a dict, the SDK's object
        msg = llm._create_chat_result(raw).generations[0].message
        assert msg.additional_kwargs["reasoning_content"] == "2+2"
        assert msg.usage_metadata["output_token_details"]["reasoning"] == 4
    from langchain_core.messages import AIMessageChunk

    chunk = {"choices": [{"index": 0, "delta": {"role": "assistant", "reasoning": "2+"}}]}
    out = llm._convert_chunk_to_generation_chunk(chunk, AIMessageChunk, None)
    assert out is not None and out.message.additional_kwargs["reasoning"] == "2+"


# ---------------------------------------------------------------- a judge and evaluate


def _sdk_completion(message: dict[str, Any], logprobs: Any = None) -> Any:
    """A reply parsed by the OpenAI SDK itself (extra fields land in ``model_extra``)."""
    from openai.types.chat import ChatCompletion

    return ChatCompletion.model_validate(
        {
            "id": "c", "object": "chat.completion", "created": 0, "model": "j",
            "choices": [{"index": 0, "finish_reason": "stop", "logprobs": logprobs,
                         "message": {"role": "assistant", **message}}],
        }
    )  # fmt: skip


@pytest.mark.parametrize(
    "message",
    [
        {"content": "<think>Maybe a 2? No: it is right.</think>Rating: 9"},
        {"content": "Rating: 9", "reasoning_content": "Maybe a 2? No: it is right."},
    ],
)
async def test_a_reasoning_judge_is_read_from_its_answer(message: dict[str, Any]) -> None:
    import asyncio
    from types import SimpleNamespace

    from toa_graph.rewards.judge import JudgeReward

    # logprobs of a reasoning reply begin inside the thinking: never read as the rating
    logprobs = {"content": [{"token": "2", "logprob": 0.0, "top_logprobs": []}]}

    async def create(**kw: Any) -> Any:
        return _sdk_completion(message, logprobs)

    judge = JudgeReward(model="j", base_url="http://127.0.0.1:9/v1")
    client = SimpleNamespace(chat=SimpleNamespace(completions=SimpleNamespace(create=create)))
    judge._get_client = lambda: client  # type: ignore[method-assign]
    judge._sem = asyncio.Semaphore(1)
    assert await judge.ascore("q?", ["an answer"]) == [9.0]


async def test_evaluate_extracts_from_the_answer() -> None:
    from types import SimpleNamespace

    from toa_graph.evaluation.runner import _generate
    from toa_graph.evaluation.tasks import EvalItem

    async def create(**kw: Any) -> Any:
        return _sdk_completion({"content": "The answer is 4.", "reasoning": "Maybe 5? No, 4."})

    client = SimpleNamespace(chat=SimpleNamespace(completions=SimpleNamespace(create=create)))
    spec = SimpleNamespace(max_tokens=64, temperature=0.0)
    row = await _generate(client, "m", EvalItem(id="1", prompt="2+2?", gold="4"), spec)  # type: ignore[arg-type]
    assert row["output"] == "The answer is 4." and row["reasoning"] == "Maybe 5? No, 4."


def test_doctests() -> None:
    import doctest

    from toa_graph import reasoning

    result = doctest.testmod(reasoning)
    assert result.attempted >= 10 and result.failed == 0
