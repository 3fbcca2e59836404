"""Method graphs composed into other LangGraph apps (docs/design.md "Shape"):
``messages`` in and the best answer appended as an ``AIMessage``; factory ``defaults`` for
knobs the run's context does not set; a foreign context (the app's dataclass, pydantic
model, or a dict with other keys) read for the knobs it has. TOA and MoA as a node of each
kind of parent app, with fake agents: each spends exactly its budget and hands back the
best answer."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, MessagesState, StateGraph
from pydantic import BaseModel
from typing_extensions import TypedDict

from tests.fakes import FakeAgent, fake_agents, hash_reward
from toa_graph import METHODS
from toa_graph.context import GraphContext, read_context
from toa_graph.errors import UserError
from toa_graph.registry import compile_method

COMPOSED = ["toa", "moa"]


class RecordingReward:
    """``hash_reward`` that remembers every response it scored (to know the best one)."""

    def __init__(self) -> None:
        self.scores: dict[str, float] = {}

    def __call__(self, prompt: Any, responses: list[str]) -> list[float]:
        scores = hash_reward(prompt, responses)
        self.scores.update(zip(responses, scores, strict=True))
        return scores

    def best_text(self) -> str:
        return max(self.scores, key=lambda t: self.scores[t])


def calls(agents: dict[str, FakeAgent]) -> int:
    return sum(len(a.calls) for a in agents.values())


def method(name: str, **defaults: Any) -> tuple[Any, dict[str, FakeAgent], RecordingReward]:
    agents, reward = fake_agents(), RecordingReward()
    graph = METHODS[name](agents=agents, reward=reward, defaults=defaults or None).compile()
    return graph, agents, reward


# ---------------------------------------------------------------- (1) a MessagesState app


def _chat_app(node: Any, **compile_kw: Any) -> Any:
    app = StateGraph(MessagesState)
    app.add_node("reply", node)
    app.add_edge(START, "reply")
    app.add_edge("reply", END)
    return app.compile(**compile_kw)


@pytest.mark.parametrize("name", COMPOSED)
async def test_node_of_a_messages_state_app(name):
    graph, agents, reward = method(name)
    app = _chat_app(graph, checkpointer=InMemorySaver())
    thread = {"configurable": {"thread_id": "chat"}}
    out = await app.ainvoke(
        {"messages": [HumanMessage("What is 2+2?")]}, thread, context={"budget": 5}
    )
    assert calls(agents) == 5
    human, reply = out["messages"]
    assert isinstance(human, HumanMessage) and isinstance(reply, AIMessage)
    assert reply.content == reward.best_text()
    assert reply.response_metadata["method"] == name
    assert reply.response_metadata["reward"] == max(reward.scores.values())

    # the next turn on the same thread answers the new message, with the whole conversation
    reward.scores.clear()
    out = await app.ainvoke({"messages": [HumanMessage("And 3+3?")]}, thread, context={"budget": 4})
    assert calls(agents) == 9
    assert [type(m) for m in out["messages"]] == [HumanMessage, AIMessage, HumanMessage, AIMessage]
    assert out["messages"][-1].content == reward.best_text()
    fresh = [c for a in agents.values() for c in a.calls if str(c[-1].content) == "And 3+3?"]
    assert fresh, "no agent was asked the second turn as given"
    assert [str(m.content) for m in fresh[-1]][-3:] == ["What is 2+2?", reply.content, "And 3+3?"]


@pytest.mark.parametrize("name", COMPOSED)
async def test_messages_as_plain_dicts_and_a_system_turn(name, compile_kwargs):
    agents, reward = fake_agents(), RecordingReward()
    graph = METHODS[name](agents=agents, reward=reward).compile(**compile_kwargs)
    config = {"configurable": {"thread_id": "t"}} if compile_kwargs else None
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    out = await graph.ainvoke({"messages": msgs}, config, context={"budget": 3})
    assert len(out["samples"]) == calls(agents) == 3
    assert [m.type for m in out["messages"]] == ["system", "human", "ai"]
    assert out["messages"][-1].content == out["best"]["text"] == reward.best_text()
    sent = agents["a"].calls[0]
    assert isinstance(sent[0], SystemMessage) and "Be brief." in str(sent[0].content)
    assert str(sent[-1].content) == "Hi"


# ---------------------------------------------------------------- (2) the app's own context


@dataclass
class AppContext:
    """A parent app's own context: one knob the methods know (``seed``), others they don't."""

    user_id: str
    seed: int = 7
    temperature: float | None = None


class PromptState(TypedDict, total=False):
    prompt: str
    best: dict[str, Any] | None
    answered_by: str


def _prompt_app(node: Any, context_schema: Any = None) -> Any:
    """A parent sharing ``prompt``/``best`` with the method, and reading ``best`` after it."""

    def after(state: PromptState) -> dict[str, Any]:
        return {"answered_by": state["best"]["agent"] if state.get("best") else "nobody"}

    app = StateGraph(PromptState, context_schema=context_schema)
    app.add_node("search", node)
    app.add_node("after", after)
    app.add_edge(START, "search")
    app.add_edge("search", "after")
    app.add_edge("after", END)
    return app.compile()


@pytest.mark.parametrize("name", COMPOSED)
async def test_node_of_an_app_with_its_own_context_dataclass_and_factory_defaults(name):
    defaults = {"budget": 6, "layers": 1} if name == "moa" else {"budget": 6}
    graph, agents, reward = method(name, **defaults)
    app = StateGraph(MessagesState, context_schema=AppContext)
    app.add_node("reply", graph)
    app.add_edge(START, "reply")
    out = await app.compile().ainvoke(
        {"messages": [("user", "Name a colour.")]}, context=AppContext(user_id="u1")
    )
    assert calls(agents) == 6  # the factory's budget: the app's context has none
    assert out["messages"][-1].content == reward.best_text()
    if name == "moa":  # the factory's layers=1: every call answers afresh, no references
        assert all(len(c) == 1 for a in agents.values() for c in a.calls)

    # the app's context sharing prompt/best instead of messages
    graph, agents, reward = method(name, budget=4)
    out = await _prompt_app(graph, AppContext).ainvoke(
        {"prompt": "Hi"}, context=AppContext(user_id="u2")
    )
    assert calls(agents) == 4
    assert out["best"]["text"] == reward.best_text()
    assert out["answered_by"] == out["best"]["agent"]


@pytest.mark.parametrize("name", COMPOSED)
async def test_a_knob_the_apps_context_sets_reaches_every_agent_call(name):
    seen: list[Any] = []

    class Spy(FakeAgent):
        async def _agenerate(self, messages, stop=None, run_manager=None, **kw):
            seen.append(kw.get("temperature"))
            return await super()._agenerate(messages, stop, run_manager, **kw)

    agents = {n: Spy(name=n) for n in "ab"}
    graph = METHODS[name](agents=agents, reward=hash_reward, defaults={"budget": 3}).compile()
    out = await _prompt_app(graph, AppContext).ainvoke(
        {"prompt": "Hi"}, context=AppContext(user_id="u", temperature=0.25)
    )
    assert out["best"] is not None and seen == [0.25, 0.25, 0.25]


class PydanticContext(BaseModel):
    tenant: str
    budget: int = 3
    layers: int = 1


@pytest.mark.parametrize("name", COMPOSED)
async def test_a_pydantic_app_context_is_read_for_the_knobs_it_has(name):
    graph, agents, reward = method(name, budget=9)
    out = await _prompt_app(graph, PydanticContext).ainvoke(
        {"prompt": "Hi"}, context=PydanticContext(tenant="acme")
    )
    assert calls(agents) == 3  # the app's budget wins over the factory's
    assert out["best"]["text"] == reward.best_text()


# ---------------------------------------------------------------- (3) a dict context


@pytest.mark.parametrize("name", COMPOSED)
async def test_a_dict_context_with_other_keys(name):
    graph, agents, reward = method(name, budget=8)
    ctx = {"budget": 5, "user_id": "u1", "locale": "fr", "layers": 1}
    out = await _prompt_app(graph).ainvoke({"prompt": "Hi"}, context=ctx)
    assert calls(agents) == 5
    assert out["best"]["text"] == reward.best_text()

    # the graph invoked directly: LangGraph builds its context schema from the dict
    graph, agents, reward = method(name, budget=8)
    out = await graph.ainvoke({"prompt": "Hi"}, context={"tenant": "acme", "max_tokens": 9})
    assert len(out["samples"]) == calls(agents) == 8  # budget: the factory's default
    assert out["best"]["text"] == reward.best_text()


def test_a_foreign_context_is_checked_and_named_when_a_knob_is_wrong():
    with pytest.raises(ValueError, match=r"budget must be >= 1.*a AppBudget"):

        @dataclass
        class AppBudget:
            budget: int = 0

        read_context(AppBudget())
    ctx = read_context({"budget": None, "alpha": 0.5, "other": object()})
    assert isinstance(ctx, GraphContext) and ctx.budget == 16 and ctx.alpha == 0.5


# ---------------------------------------------------------------- (4) sharing prompt / best


@pytest.mark.parametrize("name", COMPOSED)
async def test_node_of_a_parent_sharing_prompt_and_best(name):
    graph, agents, reward = method(name)
    out = await _prompt_app(graph).ainvoke({"prompt": "What is 2+2?"}, context={"budget": 7})
    assert calls(agents) == 7
    assert out["best"]["text"] == reward.best_text()
    assert set(out) == {"prompt", "best", "answered_by"}  # no messages: none were given


# ---------------------------------------------------------------- (5) two methods, one app


class TwoState(TypedDict, total=False):
    prompt: str
    best: dict[str, Any] | None
    toa_best: dict[str, Any] | None


async def test_two_methods_in_one_app_with_different_defaults():
    toa, toa_agents, toa_reward = method("toa", budget=6)
    moa, moa_agents, moa_reward = method("moa", budget=4, layers=2)
    app = StateGraph(TwoState)
    app.add_node("toa", toa)
    app.add_node("keep", lambda s: {"toa_best": s["best"]})
    app.add_node("moa", moa)
    app.add_edge(START, "toa")
    app.add_edge("toa", "keep")
    app.add_edge("keep", "moa")
    out = await app.compile().ainvoke({"prompt": "Hi"}, context={"user": "u1", "seed": 1})
    assert calls(toa_agents) == 6 and calls(moa_agents) == 4
    assert out["toa_best"]["text"] == toa_reward.best_text()
    assert out["best"]["text"] == moa_reward.best_text()

    # a context that sets the budget sets it for both
    for agents in (toa_agents, moa_agents):
        for a in agents.values():
            a.calls.clear()
    await app.compile().ainvoke({"prompt": "Hi"}, context={"budget": 2})
    assert calls(toa_agents) == 2 and calls(moa_agents) == 2


# ---------------------------------------------------------------- every method, the edges


ALL = list(METHODS)


@pytest.mark.parametrize("name", ALL)
async def test_every_method_answers_messages_and_is_chat_capable(name):
    agents, reward = fake_agents(), RecordingReward()
    graph = METHODS[name](agents=agents, reward=reward).compile()
    schema = graph.get_input_jsonschema()
    assert {"prompt", "messages"} <= set(schema["properties"])
    assert "prompt" not in schema.get("required", [])  # Studio's chat sends messages only
    assert "messages" in graph.get_output_jsonschema()["properties"]
    out = await graph.ainvoke(
        {"messages": [HumanMessage("Hi")]},
        context={"budget": 9, "correct_threshold": 2.0, "rounds": 1},  # debate: no gold
    )
    assert out["messages"][-1].content == out["best"]["text"] == reward.best_text()
    assert len(out["messages"]) == 2


async def test_conversations_that_cannot_be_answered_are_errors():
    graph = METHODS["random"](agents=fake_agents(), reward=hash_reward).compile()
    with pytest.raises(ValueError, match="last of the messages must be a user turn"):
        await graph.ainvoke({"messages": [HumanMessage("Hi"), AIMessage("Hello")]})
    with pytest.raises(ValueError, match=r"messages\[1\] is a 'tool' message"):
        msgs = [HumanMessage("Hi"), ToolMessage("42", tool_call_id="c1"), HumanMessage("So?")]
        await graph.ainvoke({"messages": msgs})
    with pytest.raises(ValueError, match="needs a 'prompt' or a non-empty 'messages'"):
        await graph.ainvoke({})


async def test_a_prompt_given_with_messages_wins_and_messages_are_untouched():
    agents = fake_agents()
    graph = METHODS["random"](agents=agents, reward=hash_reward).compile()
    out = await graph.ainvoke(
        {"prompt": "Q from prompt", "messages": [HumanMessage("Q from chat")]},
        context={"budget": 2},
    )
    assert str(agents["a"].calls[0][-1].content) == "Q from prompt"
    assert [m.content for m in out["messages"]] == ["Q from chat"]


async def test_a_thread_alternates_prompt_and_messages_runs():
    agents = fake_agents()
    graph = METHODS["random"](agents=agents, reward=hash_reward).compile(
        checkpointer=InMemorySaver()
    )
    thread = {"configurable": {"thread_id": "t"}}
    await graph.ainvoke({"messages": [("user", "first")]}, thread, context={"budget": 1})
    out = await graph.ainvoke({"prompt": "second"}, thread, context={"budget": 1})
    assert len(out["messages"]) == 2  # a prompt run does not answer the chat
    out = await graph.ainvoke({"messages": [("user", "third")]}, thread, context={"budget": 1})
    assert [str(c[-1].content) for c in agents["a"].calls] == ["first", "second", "third"]
    assert len(out["messages"]) == 4


async def test_no_answer_appends_nothing_and_the_next_turn_is_answered():
    agents = fake_agents(fail_on=frozenset({0, 1}))
    graph = METHODS["random"](agents=agents, reward=hash_reward).compile(
        checkpointer=InMemorySaver()
    )
    thread = {"configurable": {"thread_id": "t"}}
    out = await graph.ainvoke({"messages": [("user", "Hi")]}, thread, context={"budget": 2})
    assert out["best"] is None and [m.type for m in out["messages"]] == ["human"]
    out = await graph.ainvoke({"messages": [("user", "Hi?")]}, thread, context={"budget": 1})
    assert [m.type for m in out["messages"]] == ["human", "human", "ai"]
    assert [str(m.content) for m in agents["a"].calls[-1]] == ["Hi", "Hi?"]


# ---------------------------------------------------------------- factory defaults


def test_factory_defaults_are_checked_against_the_methods_knobs():
    with pytest.raises(UserError, match=r"method 'toa' has no knob\(s\) \['layers'\].*alpha="):
        METHODS["toa"](agents=fake_agents(), reward=hash_reward, defaults={"layers": 2})
    with pytest.raises(UserError, match="budget must be >= 1"):
        METHODS["moa"](agents=fake_agents(), reward=hash_reward, defaults={"budget": 0})
    with pytest.raises(UserError, match=r"method 'random' has no knob"):
        compile_method("random", agents=fake_agents(), reward=hash_reward, defaults={"tau": 1})


async def test_factory_defaults_through_compile_method_and_the_context_schema():
    agents = fake_agents()
    graph = compile_method("toa", agents=agents, reward=hash_reward, defaults={"budget": 5})
    knobs = graph.get_context_jsonschema()["properties"]
    assert knobs["budget"]["default"] == 5 and knobs["alpha"]["default"] == 0.01
    out = await graph.ainvoke({"prompt": "Hi"})
    assert len(out["samples"]) == calls(agents) == 5
    out = await graph.ainvoke({"prompt": "Hi"}, context={"budget": 2})  # the run's wins
    assert len(out["samples"]) == 2 and calls(agents) == 7


# ---------------------------------------------------------------- the README's chatbot

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "docs" / "examples" / "chatbot.py"


def test_the_readme_shows_the_chatbot_example_verbatim():
    readme = (ROOT / "README.md").read_text()
    assert f"```python\n{EXAMPLE.read_text()}```" in readme


async def test_the_readme_chatbot_replies_with_a_toa_search():
    spec = importlib.util.spec_from_file_location("chatbot_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    agents, reward = fake_agents(), RecordingReward()
    bot = example.build_chatbot(agents, reward)
    ctx = example.ChatContext(user_id="u1")
    first = await example.chat(bot, "t1", "What is 2+2?", ctx)
    assert calls(agents) == 8 and first == reward.best_text()  # the factory's budget
    reward.scores.clear()
    second = await example.chat(bot, "t1", "And 3+3?", example.ChatContext("u1", budget=3))
    assert calls(agents) == 11 and second == reward.best_text()  # the app context's budget
    state = await bot.aget_state({"configurable": {"thread_id": "t1"}})
    assert [m.content for m in state.values["messages"]] == [
        "What is 2+2?",
        first,
        "And 3+3?",
        second,
    ]
