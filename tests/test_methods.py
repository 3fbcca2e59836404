"""The baseline and multi-agent methods (random, PRS, ensemble, seq refine, MoA, debate)
with fake agents: budget accounting, parents and kinds, concurrency, drawings."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from tests.fakes import CONTRACT_KEYS, FakeAgent, fake_agents, hash_reward
from toa_graph import METHODS, best_sample
from toa_graph.methods.prs import prs_split
from toa_graph.registry import METHOD_SPECS

SNAPSHOTS = Path(__file__).parent / "snapshots"
# every registered method but TOA (tests/test_toa_graph.py); debate spends at most its
# budget, the others exactly
ALL = [m for m in METHOD_SPECS if m != "toa"]
BASELINES = [m for m in ALL if m != "debate"]


async def run(
    builder, inp: dict[str, Any] | str, compile_kwargs=None, **context: Any
) -> dict[str, Any]:
    graph = builder.compile(**(compile_kwargs or {}))
    config = (
        {"configurable": {"thread_id": "t"}} if (compile_kwargs or {}).get("checkpointer") else None
    )
    inp = {"prompt": inp} if isinstance(inp, str) else inp
    return await graph.ainvoke(inp, config=config, context=context)


def ids(out: dict[str, Any]) -> list[str]:
    return [s["id"] for s in out["samples"]]


def total_calls(agents: dict[str, FakeAgent]) -> int:
    return sum(len(a.calls) for a in agents.values())


def by_agent_reward(prompt: Any, responses: list[str]) -> list[float]:
    """Rewards by the replying agent (the fakes' text starts with their name): b > c > a."""
    return [{"a": 0.1, "b": 0.9, "c": 0.5}.get(r[0], 0.0) for r in responses]


# ---------------------------------------------------------------- the shared contract


def test_registry():
    assert {"random", "prs", "ensemble", "seq_refine", "moa", "debate"} <= set(ALL)
    assert set(ALL) | {"toa"} <= set(METHODS)
    for name in ALL:
        builder = METHODS[name](agents=fake_agents(), reward=hash_reward)
        assert not hasattr(builder, "ainvoke"), name  # uncompiled StateGraph


@pytest.mark.parametrize("method", BASELINES)
@pytest.mark.parametrize("budget", [1, 2, 5, 7, 12])
async def test_exactly_budget_generations(method, budget, compile_kwargs):
    agents = fake_agents()
    out = await run(
        METHODS[method](agents=agents, reward=hash_reward),
        "What is 2+2?",
        compile_kwargs,
        budget=budget,
    )
    assert set(out) <= {"samples", "best", "tree"} and {"samples", "best"} <= set(out)
    assert len(out["samples"]) == budget
    assert total_calls(agents) == budget
    assert ids(out) == [f"s{i}" for i in range(budget)]  # generation order
    for s in out["samples"]:
        assert set(s) >= CONTRACT_KEYS
        assert s["error"] is None and s["reward"] is not None
        assert s["kind"] in ("fresh", "refine", "aggregate")
        assert (s["parent"] is None) == (s["kind"] == "fresh")
        assert s["parent"] is None or int(s["parent"][1:]) < int(s["id"][1:])
        assert s["usage"]["total_tokens"] > 0
    assert out["best"] == best_sample(out["samples"])
    assert json.loads(json.dumps(out)) == out


@pytest.mark.parametrize("method", ["random", "prs"])
async def test_single_agent_methods_call_the_chosen_agent(method):
    agents = fake_agents()
    out = await run(METHODS[method](agents=agents, reward=hash_reward), "Hi", budget=5, agent="b")
    assert {s["agent"] for s in out["samples"]} == {"b"}
    assert len(agents["b"].calls) == 5 and not agents["a"].calls and not agents["c"].calls
    out = await run(METHODS[method](agents=fake_agents(), reward=hash_reward), "Hi", budget=3)
    assert {s["agent"] for s in out["samples"]} == {"a"}  # default: the first agent
    with pytest.raises(ValueError, match="not one of the agents"):
        await run(
            METHODS[method](agents=fake_agents(), reward=hash_reward), "Hi", budget=3, agent="zz"
        )


def _never_right(name: str, k: int, messages: Any) -> str:
    return f"{name} reasons.\nFinal answer: {name}{k}"


@pytest.mark.parametrize("method", ALL)
async def test_failed_generations_count_and_are_recorded(method):
    agents = fake_agents(fail_on=frozenset({1}), reply=_never_right if method == "debate" else None)
    inp = {"prompt": "Hi", "reference": "4"}
    out = await run(METHODS[method](agents=agents, reward=hash_reward), inp, budget=9, rounds=1)
    assert len(out["samples"]) == total_calls(agents) <= 9
    if method != "debate":
        assert len(out["samples"]) == 9
    failed = [s for s in out["samples"] if s["error"]]
    assert failed and all(s["reward"] is None and "injected failure" in s["error"] for s in failed)
    assert out["best"] is not None and not out["best"]["error"]


@pytest.mark.parametrize("method", ALL)
def test_mermaid_drawing_snapshot(method):
    drawing = (
        METHODS[method](agents=fake_agents(), reward=hash_reward)
        .compile()
        .get_graph()
        .draw_mermaid()
    )
    snap = SNAPSHOTS / f"{method}.mmd"
    if os.environ.get("UPDATE_SNAPSHOTS"):
        snap.write_text(drawing)
    assert drawing == snap.read_text(), (
        f"drawing changed: review and update {snap} (UPDATE_SNAPSHOTS=1)"
    )


# ---------------------------------------------------------------- random, PRS, ensemble
# (sequential refine and MoA: tests/test_seq_refine_moa.py; debate: tests/test_debate.py)


async def test_random_sampling_is_fresh_from_one_agent():
    out = await run(METHODS["random"](agents=fake_agents(), reward=hash_reward), "Hi", budget=4)
    assert [(s["agent"], s["kind"], s["parent"], s["layer"]) for s in out["samples"]] == [
        ("a", "fresh", None, 0)
    ] * 4


@pytest.mark.parametrize(("budget", "split"), [(1, (1, 0)), (2, (1, 1)), (7, (4, 3)), (8, (4, 4))])
async def test_prs_refines_the_best_fresh_answer(budget, split):
    assert prs_split(budget) == split
    agents = fake_agents()

    def reward(prompt, responses):  # the 2nd fresh answer is the best
        return [1.0 if r.startswith("a#1:") else 0.0 for r in responses]

    out = await run(METHODS["prs"](agents=agents, reward=reward), "Hi", budget=budget)
    fresh, refined = out["samples"][: split[0]], out["samples"][split[0] :]
    assert [s["kind"] for s in fresh] == ["fresh"] * split[0]
    assert [s["kind"] for s in refined] == ["refine"] * split[1]
    best_fresh = best_sample(fresh)
    assert all(s["parent"] == best_fresh["id"] and s["layer"] == 1 for s in refined)
    for call in agents["a"].calls[split[0] :]:  # the refinement prompt holds the best answer
        assert best_fresh["text"] in str(call[-1].content)


async def test_prs_with_no_usable_fresh_answer_spends_the_rest_fresh():
    agents = fake_agents(fail_on=frozenset({0, 1, 2}))
    out = await run(METHODS["prs"](agents=agents, reward=hash_reward), "Hi", budget=6)
    assert [s["kind"] for s in out["samples"]] == ["fresh"] * 6
    assert [bool(s["error"]) for s in out["samples"]] == [True] * 3 + [False] * 3


@pytest.mark.parametrize(("budget", "shares"), [(7, [3, 2, 2]), (2, [1, 1, 0]), (9, [3, 3, 3])])
async def test_ensemble_splits_the_budget_in_agent_order(budget, shares):
    agents = fake_agents()
    out = await run(METHODS["ensemble"](agents=agents, reward=hash_reward), "Hi", budget=budget)
    expected = [name for name, k in zip("abc", shares, strict=True) for _ in range(k)]
    assert [s["agent"] for s in out["samples"]] == expected
    assert [len(agents[n].calls) for n in "abc"] == shares
    assert all(s["kind"] == "fresh" and s["parent"] is None for s in out["samples"])


async def test_ensemble_asks_once_with_n_where_supported():
    from toa_graph.agents import AgentPool, Generation

    requests: list[tuple[str, int]] = []

    class CountingPool(AgentPool):
        async def generate(self, name, messages, *, temperature=None, max_tokens=None, n=1):
            requests.append((name, n))
            usage = {"input_tokens": 1, "output_tokens": 1, "total_tokens": 2}
            return [Generation(f"{name} {i}", usage, 0.01) for i in range(n)]

    pool = CountingPool(fake_agents())
    out = await run(METHODS["ensemble"](agents=pool, reward=hash_reward), "Hi", budget=8)
    assert sorted(requests) == [("a", 3), ("b", 3), ("c", 2)]
    assert len(out["samples"]) == 8


# ---------------------------------------------------------------- concurrency


async def test_ensemble_runs_agents_and_samples_concurrently():
    graph = METHODS["ensemble"](
        agents=fake_agents(("a", "b", "c", "d")), reward=hash_reward
    ).compile()
    await graph.ainvoke({"prompt": "warm up"}, context={"budget": 4})
    agents = fake_agents(("a", "b", "c", "d"), delay_s=0.05)
    graph = METHODS["ensemble"](agents=agents, reward=hash_reward).compile()
    start = time.perf_counter()
    out = await graph.ainvoke({"prompt": "Hi"}, context={"budget": 32})
    elapsed = time.perf_counter() - start
    assert len(out["samples"]) == 32 and total_calls(agents) == 32
    assert elapsed < 0.4, f"4 agents x 8 samples took {elapsed:.3f}s (sequential: 1.6s)"
