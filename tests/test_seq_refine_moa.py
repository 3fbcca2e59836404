"""Sequential refine as independent chains (TOA's ``Seq_thread``) and MoA as stacks (TOA's
``MoA_thread``, Together MoA's final aggregator), with fake agents."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.fakes import FakeAgent, fake_agents, hash_reward
from toa_graph import METHODS
from toa_graph.methods.moa import final_ids, moa_plan
from toa_graph.methods.seq_refine import agent_order, chain_lengths


async def run(builder, inp: Any, compile_kwargs=None, config=None, **context: Any):
    graph = builder.compile(**(compile_kwargs or {}))
    config = dict(config or {})
    if (compile_kwargs or {}).get("checkpointer"):
        config["configurable"] = {"thread_id": "t"}
    inp = {"prompt": inp} if isinstance(inp, str) else inp
    return await graph.ainvoke(inp, config=config or None, context=context)


def seen_by(agents: dict[str, FakeAgent], sample: dict[str, Any]) -> list[Any]:
    """The messages the agent was sent for ``sample`` (fake replies start "name#k:")."""
    name, k = sample["text"].split(":")[0].split("#")
    return agents[name].calls[int(k)]


# ---------------------------------------------------------------- sequential refine


def test_chain_lengths_and_orders():
    assert chain_lengths(12, 3) == [3, 3, 3, 3]
    assert chain_lengths(7, 3) == [3, 3, 1]
    names = ["a", "b", "c", "d"]
    assert agent_order(names, 5, 2) == agent_order(names, 5, 2)
    assert all(sorted(agent_order(names, 5, c)) == names for c in range(8))
    assert len({tuple(agent_order(names, 5, c)) for c in range(8)}) > 1  # reshuffled per chain
    assert any(agent_order(names, s, 0) != agent_order(names, 5, 0) for s in range(6))


async def test_seq_refine_budget_12_is_4_chains_of_3(compile_kwargs):
    agents = fake_agents(("a", "b", "c"))
    builder = METHODS["seq_refine"](agents=agents, reward=hash_reward)
    out = await run(builder, "What is 2+2?", compile_kwargs, budget=12, seed=7)
    samples = out["samples"]
    assert len(samples) == 12 and [s["id"] for s in samples] == [f"s{i}" for i in range(12)]
    chains = [[s for s in samples if s["chain"] == c] for c in range(4)]
    assert [len(c) for c in chains] == [3, 3, 3, 3]
    for c, chain in enumerate(chains):
        assert [s["agent"] for s in chain] == agent_order(["a", "b", "c"], 7, c)  # each once
        assert [s["kind"] for s in chain] == ["fresh", "refine", "refine"]
        assert [s["parent"] for s in chain] == [None, chain[0]["id"], chain[1]["id"]]
        assert [s["layer"] for s in chain] == [0, 1, 2]
        assert seen_by(agents, chain[0])[-1].content == "What is 2+2?"
        for step in chain[1:]:
            parent = next(s for s in chain if s["id"] == step["parent"])
            prompt = str(seen_by(agents, step)[-1].content)
            assert parent["text"] in prompt and prompt.index("What is 2+2?") < prompt.index(
                parent["text"]
            )
    assert all(s["reward"] is not None for s in samples)


async def test_seq_refine_cuts_the_last_chain_at_the_budget():
    out = await run(METHODS["seq_refine"](agents=fake_agents(), reward=hash_reward), "Hi", budget=7)
    assert [s["chain"] for s in out["samples"]] == [0, 0, 0, 1, 1, 1, 2]
    assert out["samples"][6]["kind"] == "fresh" and out["samples"][6]["parent"] is None


async def test_seq_refine_chains_run_concurrently():
    names = ("a", "b", "c")
    builder = METHODS["seq_refine"](agents=fake_agents(names), reward=hash_reward)
    await run(builder, "warm up", budget=3)
    agents = fake_agents(names, delay_s=0.05)
    builder = METHODS["seq_refine"](agents=agents, reward=hash_reward)
    start = time.perf_counter()
    out = await run(builder, "Hi", budget=12)
    elapsed = time.perf_counter() - start
    assert len(out["samples"]) == 12 and sum(len(a.calls) for a in agents.values()) == 12
    assert elapsed < 0.45, f"4 chains of 3 x 50 ms took {elapsed:.3f}s (one at a time: 0.6s)"


async def test_seq_refine_same_samples_and_parents_whatever_the_concurrency():
    def shape(out: dict[str, Any]) -> list[tuple[Any, ...]]:
        keys = ("id", "agent", "kind", "parent", "chain", "layer")
        return [tuple(s[k] for k in keys) for s in out["samples"]]

    shapes = []
    for delays, config in [
        ({"a": 0.0, "b": 0.0, "c": 0.0}, {"max_concurrency": 1}),
        ({"a": 0.03, "b": 0.0, "c": 0.01}, None),
        ({"a": 0.0, "b": 0.02, "c": 0.04}, None),
    ]:
        agents = {n: FakeAgent(name=n, delay_s=d) for n, d in delays.items()}
        builder = METHODS["seq_refine"](agents=agents, reward=hash_reward)
        shapes.append(shape(await run(builder, "Hi", config=config, budget=14, seed=3)))
    assert shapes[0] == shapes[1] == shapes[2]
    other = await run(METHODS["seq_refine"](agents=fake_agents(), reward=hash_reward), "Hi",
                      budget=14, seed=4)  # fmt: skip
    assert shape(other) != shapes[0]  # the seed decides the chains


async def test_seq_refine_skips_a_failed_step():
    names = ["a", "b", "c"]
    order = agent_order(names, 0, 0)
    agents = fake_agents(names)
    agents[order[1]].fail_on = frozenset({0})
    out = await run(METHODS["seq_refine"](agents=agents, reward=hash_reward), "Hi", budget=3)
    assert out["samples"][1]["error"]
    assert out["samples"][2]["parent"] == "s0"  # refines the chain's latest answer with text


# ---------------------------------------------------------------- MoA


def test_moa_plan():
    assert [s.layers for s in moa_plan(12, 3, layers=2)] == [[3, 3], [3, 3]]
    assert [s.layers for s in moa_plan(13, 3)] == [[3, 3, 3, 3], [1]]  # default: 4 layers
    plan = moa_plan(10, 3, layers=2, aggregator=True)
    assert [(s.layers, s.aggregate) for s in plan] == [([3, 3], True), ([2], True)]
    assert final_ids(plan) == ["s6", "s9"]
    assert [(s.layers, s.aggregate) for s in moa_plan(1, 3, aggregator=True)] == [([], True)]
    with pytest.raises(ValueError):
        moa_plan(4, 3, layers=0)


def _favour_c(prompt: Any, responses: list[str]) -> list[float]:
    return [{"a": 0.1, "b": 0.2, "c": 0.9}[r[0]] for r in responses]


async def test_moa_two_stacks_each_layer_sees_its_own_stack_in_agent_order(compile_kwargs):
    agents = fake_agents(("a", "b", "c"))
    builder = METHODS["moa"](agents=agents, reward=_favour_c)
    out = await run(builder, "Hi", compile_kwargs, budget=12, layers=2)
    samples = out["samples"]
    assert [(s["stack"], s["layer"], s["agent"]) for s in samples] == [
        (st, layer, a) for st in (0, 1) for layer in (0, 1) for a in "abc"
    ]
    for st in (0, 1):
        layer0 = [s for s in samples if s["stack"] == st and s["layer"] == 0]
        layer1 = [s for s in samples if s["stack"] == st and s["layer"] == 1]
        assert all(s["kind"] == "fresh" and s["parent"] is None for s in layer0)
        for s in layer1:
            assert s["kind"] == "aggregate"
            assert s["references"] == [r["id"] for r in layer0]  # a, b, c: not by reward
            system = str(seen_by(agents, s)[0].content)
            blocks = [system.index(f"## Response {i}:\n{r['text']}") for i, r in
                      enumerate(layer0, 1)]  # fmt: skip
            assert blocks == sorted(blocks) and "## Response 4" not in system
            assert seen_by(agents, s)[-1].content == "Hi"  # the user turn stays the query
            assert s["parent"] == next(r["id"] for r in layer0 if r["agent"] == s["agent"])
    assert out["best"]["agent"] == "c" and "final" not in out


async def test_moa_scores_once_at_the_end():
    calls: list[int] = []

    def reward(prompt: Any, responses: list[str]) -> list[float]:
        calls.append(len(responses))
        return [0.0] * len(responses)

    await run(METHODS["moa"](agents=fake_agents(), reward=reward), "Hi", budget=12, layers=2)
    assert calls == [12]


async def test_moa_num_references_is_a_seeded_subset_in_agent_order():
    def refs(out: dict[str, Any]) -> list[list[str]]:
        return [s["references"] for s in out["samples"] if s["layer"] == 1]

    names = ("a", "b", "c", "d")
    agents = fake_agents(names)
    out = await run(METHODS["moa"](agents=agents, reward=hash_reward), "Hi", budget=16,
                    layers=2, num_references=2, seed=1)  # fmt: skip
    for s in out["samples"][4:8]:
        assert len(s["references"]) == 2
        assert s["references"] == sorted(s["references"], key=lambda i: int(i[1:]))
        system = str(seen_by(agents, s)[0].content)
        shown = [r["id"] for r in out["samples"][:4] if r["text"] in system]
        assert shown == s["references"]  # exactly the subset, nothing else
        assert "## Response 2:" in system and "## Response 3" not in system
    again = await run(METHODS["moa"](agents=fake_agents(names), reward=hash_reward), "Hi",
                      budget=16, layers=2, num_references=2, seed=1)  # fmt: skip
    assert refs(again) == refs(out)
    subsets = set()
    for seed in range(5):
        o = await run(METHODS["moa"](agents=fake_agents(names), reward=hash_reward), "Hi",
                      budget=16, layers=2, num_references=2, seed=seed)  # fmt: skip
        subsets |= {tuple(r) for r in refs(o)}
    assert len(subsets) > 1


async def test_moa_final_aggregator_is_the_output(compile_kwargs):
    def reward(prompt: Any, responses: list[str]) -> list[float]:
        return [float(len(r)) for r in responses]

    agents = fake_agents(("a", "b", "c"))
    builder = METHODS["moa"](agents=agents, reward=reward, aggregator="b")
    out = await run(builder, "Hi", compile_kwargs, budget=14, layers=2)
    samples = out["samples"]
    assert len(samples) == 14 == sum(len(a.calls) for a in agents.values())
    finals = [samples[6], samples[13]]
    for st, f in enumerate(finals):
        assert f["agent"] == "b" and f["kind"] == "aggregate" and f["stack"] == st
        last_layer = [s["id"] for s in samples if s["stack"] == st and s["layer"] == 1]
        assert f["references"] == last_layer
    assert out["final"] == max(finals, key=lambda s: s["reward"])
    assert out["best"]["reward"] >= out["final"]["reward"]


async def test_moa_aggregator_must_be_an_agent():
    with pytest.raises(ValueError, match="aggregator"):
        METHODS["moa"](agents=fake_agents(), reward=hash_reward, aggregator="nope")


async def test_moa_shows_an_agents_latest_answer_when_its_last_one_failed():
    agents = fake_agents(("a", "b", "c"))
    agents["b"].fail_on = frozenset({1})  # b's layer-1 answer fails
    out = await run(METHODS["moa"](agents=agents, reward=hash_reward), "Hi", budget=9, layers=3)
    assert out["samples"][4]["error"]
    assert out["samples"][6]["references"] == ["s3", "s1", "s5"]


async def test_moa_stacks_and_layers_run_concurrently():
    names = ("a", "b", "c", "d")
    await run(METHODS["moa"](agents=fake_agents(names), reward=hash_reward), "w", budget=4)
    agents = fake_agents(names, delay_s=0.05)
    start = time.perf_counter()
    out = await run(METHODS["moa"](agents=agents, reward=hash_reward), "Hi", budget=16, layers=2)
    elapsed = time.perf_counter() - start
    assert {s["stack"] for s in out["samples"]} == {0, 1}
    assert elapsed < 0.35, f"2 stacks x 2 layers took {elapsed:.3f}s (one call at a time: 0.8s)"
