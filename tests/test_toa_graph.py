"""The TOA graph with fake agents and deterministic rewards."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import pytest
from langgraph.checkpoint.memory import InMemorySaver

from tests.fakes import CONTRACT_KEYS, FakeAgent, fake_agents, generations_ok, hash_reward
from toa_graph import METHODS, SamplingContext, create_toa_graph
from toa_graph.mcts import tree_reward
from toa_graph.prompts import REFINE_TEMPLATE

SNAPSHOTS = Path(__file__).parent / "snapshots"


def play_sequence(out):
    return [(s["agent"], s["kind"], s["parent"]) for s in out["samples"]]


async def ainvoke(graph, inp, context, **kw):
    config = {"configurable": {"thread_id": "t1"}} if graph.checkpointer else None
    return await graph.ainvoke(inp, context=context, config=config, **kw)


@pytest.mark.parametrize("budget", [1, 5, 17, 40])
async def test_spends_exactly_the_budget(budget, compile_kwargs):
    graph = create_toa_graph(fake_agents(), hash_reward).compile(**compile_kwargs)
    out = await ainvoke(graph, {"prompt": "Name a prime."}, {"budget": budget})
    assert set(out) >= {"samples", "best", "tree"}
    assert len(out["samples"]) == budget
    assert [s["id"] for s in out["samples"]] == [f"s{i}" for i in range(budget)]
    assert out["tree"]["plays"] == budget
    for s in out["samples"]:
        assert set(s) >= CONTRACT_KEYS
        assert s["kind"] in ("fresh", "refine")
        assert s["usage"]["total_tokens"] > 0 and s["latency_s"] >= 0
    assert out["best"] == max(out["samples"], key=lambda s: s["reward"])


@pytest.mark.parametrize("plays_per_step", [1, 4])
async def test_refine_parent_is_the_response_refined(plays_per_step):
    """Also with several plays per step, where one task runs a step's fresh plays and
    another its refinements: each refinement gets its own parent's text."""

    def reply(name: str, k: int, messages: list[Any]) -> str:  # names what the call saw
        return f"{name}#{k} saw {hashlib.sha256(str(messages[-1].content).encode()).hexdigest()}"

    agents = fake_agents(reply=reply)
    graph = create_toa_graph(agents, hash_reward).compile()
    ctx = {"budget": 30, "width": 3, "plays_per_step": plays_per_step, "pending_value": "zero"}
    out = await graph.ainvoke({"prompt": "Explain rain."}, context=ctx)
    by_id = {s["id"]: s for s in out["samples"]}
    refines = [s for s in out["samples"] if s["kind"] == "refine"]
    assert refines, "a 30-play search with width 3 must refine"
    if plays_per_step > 1:  # some step refines two different parents in one task
        steps: dict[int, set[str]] = {}
        for s in refines:
            steps.setdefault(int(s["id"][1:]) // plays_per_step, set()).add(s["parent"])
        assert max(len(p) for p in steps.values()) >= 2
    order = [s["id"] for s in out["samples"]]
    for s in refines:
        parent = by_id[s["parent"]]
        assert order.index(parent["id"]) < order.index(s["id"])
        assert s["layer"] == parent["layer"] + 1
    # the agent really saw the parent's text in a refinement prompt, question first
    seen = [str(m[-1].content) for a in agents.values() for m in a.calls]
    for s in refines:
        expected = REFINE_TEMPLATE.format(
            question="Explain rain.", answer=by_id[s["parent"]]["text"]
        )
        assert expected in seen
        # ... and this very sample was generated from it
        assert s["text"].endswith(hashlib.sha256(expected.encode()).hexdigest())
    # the tree mirrors the samples: each response node's parent model sits under its parent
    nodes = out["tree"]["nodes"]
    for n in nodes:
        if n["type"] == "response" and by_id[n["sample"]]["kind"] == "refine":
            model = nodes[n["parent"]]
            assert model["mode"] == "refine"
            assert nodes[model["parent"]]["sample"] == by_id[n["sample"]]["parent"]


async def test_two_runs_give_the_identical_play_sequence():
    outs = []
    for _ in range(2):
        graph = create_toa_graph(fake_agents(), hash_reward).compile()
        outs.append(await graph.ainvoke({"prompt": "Why is the sky blue?"}, context={"budget": 40}))
    assert play_sequence(outs[0]) == play_sequence(outs[1])
    assert [s["reward"] for s in outs[0]["samples"]] == [s["reward"] for s in outs[1]["samples"]]
    assert outs[0]["tree"] == outs[1]["tree"]


@pytest.mark.parametrize("budget", [16, 18])
async def test_plays_per_step_spends_exactly_the_budget(budget, compile_kwargs):
    agents = fake_agents()
    graph = create_toa_graph(agents, hash_reward).compile(**compile_kwargs)
    out = await ainvoke(graph, {"prompt": "Sum 2+2"}, {"budget": budget, "plays_per_step": 4})
    assert len(out["samples"]) == budget
    assert sum(len(a.calls) for a in agents.values()) == budget
    assert out["tree"]["inflight"] == []
    ids = {s["id"] for s in out["samples"]}
    assert all(s["parent"] in ids for s in out["samples"] if s["kind"] == "refine")


async def test_plays_per_step_runs_plays_concurrently():
    import time

    agents = fake_agents(delay_s=0.05)
    graph = create_toa_graph(agents, hash_reward).compile()
    t0 = time.perf_counter()
    await graph.ainvoke({"prompt": "Hi"}, context={"budget": 12, "plays_per_step": 4})
    parallel = time.perf_counter() - t0
    # 3 steps of 4 concurrent 50 ms calls: well under 12 sequential calls (600 ms)
    assert parallel < 0.45


async def test_tree_uses_sigmoid_of_reward_over_tau_and_samples_keep_raw_rewards():
    tau = 0.5
    graph = create_toa_graph(fake_agents(), hash_reward).compile()
    out = await graph.ainvoke({"prompt": "Hello"}, context={"budget": 9, "tau": tau})
    raw = [s["reward"] for s in out["samples"]]
    assert raw == hash_reward(None, [s["text"] for s in out["samples"]])
    root = out["tree"]["nodes"][0]
    assert root["value_count"] == 9
    assert root["value_sum"] == pytest.approx(sum(tree_reward(r, tau) for r in raw))
    assert any(r < 0 for r in raw)  # raw values (not squashed) are what samples carry
    for n in out["tree"]["nodes"]:
        if n["type"] == "response":
            assert n["reward"] == next(
                s["reward"] for s in out["samples"] if s["id"] == n["sample"]
            )


async def test_context_knobs_and_defaults():
    graph = create_toa_graph(fake_agents(), hash_reward).compile()
    out = await graph.ainvoke(
        {"prompt": "x"}, context=SamplingContext(budget=6, width=1, alpha=0.5)
    )
    assert len(out["samples"]) == 6
    assert SamplingContext(budget=160).effective_width == 53
    with pytest.raises(ValueError):
        SamplingContext(budget=0)


async def test_failing_agent_is_recorded_and_search_goes_on():
    agents = fake_agents()
    agents["b"] = FakeAgent(name="b", fail_on=frozenset(range(100)))
    graph = create_toa_graph(agents, hash_reward).compile()
    out = await graph.ainvoke({"prompt": "Hi"}, context={"budget": 12})
    assert len(out["samples"]) == 12
    failed = [s for s in out["samples"] if s["error"]]
    assert failed and all(s["agent"] == "b" and s["reward"] is None for s in failed)
    assert "injected failure" in failed[0]["error"]
    assert out["best"]["agent"] != "b" and out["best"]["error"] is None
    # a failing agent is not retried forever: the others got most plays
    assert len(failed) < 6


async def test_reward_failure_never_becomes_a_score():
    def broken(prompt, responses):
        raise RuntimeError("reward server down")

    graph = create_toa_graph(fake_agents(), broken).compile()
    out = await graph.ainvoke({"prompt": "Hi"}, context={"budget": 3})
    assert len(out["samples"]) == 3
    assert all(s["reward"] is None and "reward server down" in s["error"] for s in out["samples"])
    assert out["best"] is None


async def test_async_reward_and_chat_message_prompts():
    seen = []

    async def areward(prompt, responses, references):
        seen.append((prompt, references))
        return [1.0] * len(responses)

    msgs = [
        {"role": "user", "content": "Translate: Hallo"},
        {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": "And: Welt"},
    ]
    agents = fake_agents(["a"])
    graph = create_toa_graph(agents, areward).compile()
    out = await graph.ainvoke({"prompt": msgs, "reference": "World"}, context={"budget": 2})
    assert len(out["samples"]) == 2
    assert seen[0] == (msgs, ["World"])
    first_call = agents["a"].calls[0]
    assert [m.type for m in first_call] == ["human", "ai", "human"]


async def test_bad_prompt_fails_clearly():
    graph = create_toa_graph(fake_agents(), hash_reward).compile()
    with pytest.raises(ValueError, match="prompt is empty"):
        await graph.ainvoke({"prompt": "   "}, context={"budget": 2})


async def test_streams_tree_growth_as_custom_events():
    graph = create_toa_graph(fake_agents(), hash_reward).compile()
    events = [
        chunk
        async for chunk in graph.astream(
            {"prompt": "Hi"}, context={"budget": 5}, stream_mode="custom"
        )
    ]
    assert [e["plays"] for e in events] == [1, 2, 3, 4, 5]
    assert all(e["event"] == "toa_step" and e["budget"] == 5 for e in events)


async def test_registry_and_state_is_json_serialisable():
    builder = METHODS["toa"](agents=fake_agents(), reward=hash_reward)
    assert not hasattr(builder, "ainvoke")  # uncompiled StateGraph
    graph = builder.compile()
    out = await graph.ainvoke({"prompt": "Hi"}, context={"budget": 4})
    assert json.loads(json.dumps(out)) == out


def test_mermaid_drawing_snapshot():
    graph = create_toa_graph(fake_agents(), hash_reward).compile()
    drawing = graph.get_graph().draw_mermaid()
    for node in ("controller", "agent", "refine", "reward"):
        assert node in drawing
    assert "backprop" not in drawing  # backed up inside the reward node (one superstep)
    for edge in (
        "controller -.-> agent",
        "controller -.-> refine",
        "agent --> reward",
        "refine --> reward",
        "reward -.-> agent",
        "reward -.-> refine",
        "reward -.-> finish",
    ):
        assert edge in drawing, edge
    snap = SNAPSHOTS / "toa.mmd"
    assert drawing == snap.read_text(), "drawing changed: review and update tests/snapshots/toa.mmd"


def test_no_clients_created_at_construction(monkeypatch):
    import langchain_openai

    from toa_graph.agents import AgentPool
    from toa_graph.config import AgentConfig

    built: list[str] = []
    real_init = langchain_openai.ChatOpenAI.__init__

    def spy(self: Any, *args: Any, **kwargs: Any) -> None:
        built.append(str(kwargs.get("base_url")))
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(langchain_openai.ChatOpenAI, "__init__", spy)
    cfg = AgentConfig(name="m", model="m", base_url="http://127.0.0.1:9/v1")
    pool = AgentPool([cfg])
    create_toa_graph(pool, hash_reward).compile()
    assert built == [], "building or compiling the graph created a client"
    pool.build_clients()  # the spy does see a client being made
    assert built == ["http://127.0.0.1:9/v1"]


async def test_fresh_child_under_a_response_generates_from_the_prompt_alone():
    """A fresh play one layer down (under s0) asks the agent the prompt, not a refinement."""
    agent = FakeAgent(name="a")

    def reward(prompt: Any, responses: list[str]) -> list[float]:
        return [1.0 if r.startswith("a#0:") else 0.0 for r in responses]

    graph = create_toa_graph({"a": agent}, reward).compile()
    ctx = {"budget": 3, "alpha": 0.0, "tau": 1.0, "width": 1}
    out = await graph.ainvoke({"prompt": "Name a prime."}, context=ctx)
    s0, s1, s2 = out["samples"]
    assert (s0["kind"], s0["reward"], s1["reward"]) == ("fresh", 1.0, 0.0)
    assert (s1["kind"], s1["parent"], s1["layer"]) == ("refine", "s0", 1)
    assert (s2["kind"], s2["parent"], s2["layer"]) == ("fresh", None, 1)
    third_call = agent.calls[2]
    assert [(m.type, m.content) for m in third_call] == [("human", "Name a prime.")]


def test_uct_is_the_readme_formula():
    """README: ``UCT = mean(tree rewards) + alpha·sqrt(2 ln N / visits)``, +inf unrewarded."""
    from toa_graph import mcts

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert "`UCT = mean(tree rewards) + alpha·sqrt(2 ln N / visits)`" in readme
    node = mcts.new_tree(["a"])["nodes"][1]
    node.update(value_sum=2.0, value_count=4, visits=4)  # mean 0.5
    # 0.5 + 0.3 * sqrt(2 * ln 10 / 4) = 0.5 + 0.3 * 1.07298 (worked by hand)
    assert mcts.uct(node, 10, 0.3) == pytest.approx(0.82189, abs=1e-5)
    assert mcts.uct(node, 10, 0.0) == pytest.approx(0.5)
    node.update(visits=16)  # more visits, smaller bonus
    assert mcts.uct(node, 10, 0.3) == pytest.approx(0.5 + 0.3 * 0.53649, abs=1e-5)
    node.update(value_sum=0.0, value_count=0)
    assert mcts.uct(node, 10, 0.3) == math.inf


@pytest.mark.parametrize("method", sorted(METHODS))
async def test_each_invocation_on_a_thread_is_a_fresh_run(method):
    """Studio and chat apps re-run graphs on one checkpointer thread: no state may leak."""
    graph = METHODS[method](agents=fake_agents(), reward=hash_reward).compile(
        checkpointer=InMemorySaver()
    )
    config = {"configurable": {"thread_id": "same"}}
    # the debate judges answers against a gold one and needs a budget of at least one
    # full round (3 answers + 4 feedback/reflections)
    budget = 8 if method == "debate" else 6
    ctx = {"budget": budget}
    first = await graph.ainvoke(
        {"prompt": "First question?", "reference": "42"}, context=ctx, config=config
    )
    second = await graph.ainvoke(
        {"prompt": "Second question?", "reference": "42"}, context=ctx, config=config
    )
    assert generations_ok(method, len(second["samples"]), budget)
    assert [s["id"] for s in second["samples"]] == [f"s{i}" for i in range(len(second["samples"]))]
    assert len(second["samples"]) == len(first["samples"])
    assert second["best"] is None or second["best"]["id"] in {s["id"] for s in second["samples"]}
    if method == "toa":
        assert second["tree"]["plays"] == budget


async def test_graph_runs_the_same_search_as_the_pure_loop_for_each_pending_rule():
    """The graph's controller/backprop and benchmarks/parallel_plays.run_toa agree, and the
    ``pending_value`` knob reaches the search (the two rules pick different plays)."""
    from benchmarks.parallel_plays import run_toa
    from toa_graph.simulate import SimReward, SimWorld, sim_agents, sim_prompts, true_quality

    world = SimWorld(seed=3)
    prompt = sim_prompts(1, start=7)[0]["prompt"]
    sequences = {}
    for rule in ("mean", "zero"):
        graph = create_toa_graph(sim_agents(world), SimReward(world)).compile()
        ctx = {"budget": 24, "plays_per_step": 4, "pending_value": rule}
        out = await graph.ainvoke({"prompt": prompt}, context=ctx)
        sequences[rule] = play_sequence(out)
        q, steps, best = run_toa(world, 7, budget=24, k=4, pending=rule, alpha=0.01, tau=0.1)
        assert (true_quality(out["best"]["text"]), out["best"]["reward"]) == (q, best)
        assert steps == 6
    assert sequences["mean"] != sequences["zero"]
    with pytest.raises(ValueError, match="pending_value"):
        SamplingContext(pending_value="optimistic")
