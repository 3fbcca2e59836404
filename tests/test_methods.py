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
from toa_graph import METHODS, best_sample, debate_tdpo_pairs
from toa_graph.methods.debate import answers_match, final_answer
from toa_graph.methods.moa import moa_plan
from toa_graph.methods.prs import prs_split
from toa_graph.methods.seq_refine import agent_order

SNAPSHOTS = Path(__file__).parent / "snapshots"
BASELINES = ["random", "prs", "ensemble", "seq_refine", "moa"]
ALL = [*BASELINES, "debate"]


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


@pytest.mark.parametrize("method", ALL)
async def test_failed_generations_count_and_are_recorded(method):
    agents = fake_agents(fail_on=frozenset({1}), reply=_never_agree if method == "debate" else None)
    out = await run(METHODS[method](agents=agents, reward=hash_reward), "Hi", budget=9, rounds=1)
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


# ---------------------------------------------------------------- random, PRS, ensemble, seq refine


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


async def test_seq_refine_cycles_a_seeded_shuffle_refining_the_previous_answer():
    names = ["a", "b", "c", "d"]
    order = agent_order(names, seed=3)
    assert order == agent_order(names, seed=3) and sorted(order) == names
    assert any(agent_order(names, s) != order for s in range(10))  # the seed matters
    agents = fake_agents(names)
    out = await run(
        METHODS["seq_refine"](agents=agents, reward=hash_reward), "Hi", budget=9, seed=3
    )
    samples = out["samples"]
    assert [s["agent"] for s in samples] == [order[i % 4] for i in range(9)]
    assert [s["kind"] for s in samples] == ["fresh"] + ["refine"] * 8
    assert [s["parent"] for s in samples] == [None] + [f"s{i}" for i in range(8)]
    assert [s["layer"] for s in samples] == list(range(9))
    second = agents[order[1]].calls[0][-1].content
    assert samples[0]["text"] in second and second.index("Hi") < second.index(samples[0]["text"])


async def test_seq_refine_skips_a_failed_step():
    names = ["a", "b", "c"]
    order = agent_order(names, seed=0)
    agents = fake_agents(names)
    agents[order[1]].fail_on = frozenset({0})
    out = await run(
        METHODS["seq_refine"](agents=agents, reward=hash_reward), "Hi", budget=3, seed=0
    )
    assert out["samples"][1]["error"]
    assert out["samples"][2]["parent"] == "s0"  # refines the latest answer that has text


# ---------------------------------------------------------------- MoA


def test_moa_plan():
    assert moa_plan(7, 3) == [3, 3, 1]
    assert moa_plan(7, 3, aggregator=True) == [3, 3]
    assert moa_plan(10, 3, layers=2) == [5, 5]
    assert moa_plan(4, 3, layers=9) == [1, 1, 1, 1]
    assert moa_plan(1, 3, aggregator=True) == []
    with pytest.raises(ValueError):
        moa_plan(4, 3, layers=0)


async def test_moa_layers_references_and_parents():
    agents = fake_agents()
    out = await run(METHODS["moa"](agents=agents, reward=by_agent_reward), "Hi", budget=7)
    samples = out["samples"]
    assert [(s["agent"], s["layer"], s["kind"]) for s in samples] == [
        ("a", 0, "fresh"), ("b", 0, "fresh"), ("c", 0, "fresh"),
        ("a", 1, "aggregate"), ("b", 1, "aggregate"), ("c", 1, "aggregate"),
        ("a", 2, "aggregate"),  # a partial last layer uses the first agents
    ]  # fmt: skip
    for s in samples[3:6]:
        assert s["references"] == ["s1", "s2", "s0"]  # all of layer 0, best first
        assert s["parent"] == "s1"  # the best referenced answer
    assert samples[6]["references"] == ["s4", "s5", "s3"] and samples[6]["parent"] == "s4"
    system = agents["a"].calls[1][0]
    assert system.type == "system"
    blocks = [system.content.index(f"## Response {i}") for i in (1, 2, 3)]
    assert blocks == sorted(blocks)
    assert samples[1]["text"] in system.content.split("## Response 1")[1].split("## Response 2")[0]


async def test_moa_num_references_layers_and_aggregator(compile_kwargs):
    agents = fake_agents()
    builder = METHODS["moa"](agents=agents, reward=by_agent_reward, aggregator="c")
    out = await run(builder, "Hi", compile_kwargs, budget=11, layers=2, num_references=2)
    samples = out["samples"]
    # 10 proposer generations over 2 layers of 5 (a, a, b, b, c), then the aggregator
    assert [s["agent"] for s in samples] == ["a", "a", "b", "b", "c"] * 2 + ["c"]
    assert [s["layer"] for s in samples] == [0] * 5 + [1] * 5 + [2]
    assert all(s["references"] == ["s2", "s3"] and s["parent"] == "s2" for s in samples[5:10])
    final = samples[10]
    assert (
        final["kind"] == "aggregate"
        and final["references"] == ["s7", "s8"]
        and final["parent"] == "s7"
    )
    assert total_calls(agents) == 11


async def test_moa_aggregator_must_be_an_agent():
    with pytest.raises(ValueError, match="aggregator"):
        METHODS["moa"](agents=fake_agents(), reward=hash_reward, aggregator="nope")


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


async def test_moa_layers_run_their_agents_concurrently():
    agents = fake_agents(("a", "b", "c", "d"), delay_s=0.05)
    graph = METHODS["moa"](agents=agents, reward=hash_reward).compile()
    start = time.perf_counter()
    out = await graph.ainvoke({"prompt": "Hi"}, context={"budget": 12})
    elapsed = time.perf_counter() - start
    assert {s["layer"] for s in out["samples"]} == {0, 1, 2}
    assert elapsed < 2 * 3 * 0.05, f"3 layers took {elapsed:.3f}s (one call each: 0.15s)"


async def test_debate_rounds_run_their_agents_concurrently():
    agents = fake_agents(("a", "b", "c"), delay_s=0.05, reply=_never_agree)
    graph = METHODS["debate"](agents=agents, reward=hash_reward).compile()
    start = time.perf_counter()
    out = await graph.ainvoke({"prompt": "Hi"}, context={"budget": 6, "rounds": 1})
    elapsed = time.perf_counter() - start
    assert len(out["samples"]) == 6  # opening + one debate step, no budget left to critique
    assert elapsed < 2 * 2 * 0.05, f"2 debate steps took {elapsed:.3f}s"


# ---------------------------------------------------------------- debate


def _never_agree(name: str, k: int, messages: Any) -> str:
    return f"{name} reasons.\nFinal answer: {name}{k}"


def _converge(name: str, k: int, messages: Any) -> str:
    return f"{name} reasons.\nFinal answer: {4 if k else {'a': 4, 'b': 5, 'c': 6}[name]}"


def _c_stays_wrong(name: str, k: int, messages: Any) -> str:
    if name == "a":
        return "a: 2 + 2 = 4.\nFinal answer: 4"
    if name == "b":
        return "b: 2 + 3 = 5.\nFinal answer: 5" if k == 0 else "b: 2 + 2 = 4.\nFinal answer: 4.0"
    return "c: 2 + 1 = 3.\nFinal answer: 3"


def test_final_answers():
    assert final_answer("...\nFinal answer: **42**.") == "42"
    assert final_answer("The final answer is: 1,234") == "1234"
    assert final_answer("so $\\boxed{\\frac{1}{2}}$") == "\\frac{1}{2}"
    assert final_answer("Final answer: (B)") == "b"
    assert final_answer("no conclusion") is None
    assert final_answer('I was told to end with "Final answer: ..." and forgot') is None
    assert answers_match("Final answer: 18", "Janet makes 9 * 2 = 18 dollars.\n#### 18")
    assert answers_match("Final answer: 3.50", ["x", "3.5"])
    assert not answers_match("Final answer: 17", "18")


async def test_debate_stops_early_when_agents_converge(compile_kwargs):
    agents = fake_agents(reply=_converge)
    out = await run(
        METHODS["debate"](agents=agents, reward=hash_reward),
        "What is 2+2?",
        compile_kwargs,
        budget=50,
        rounds=3,
    )
    samples = out["samples"]
    # opening (disagree) + round 1 (all say 4): consensus, no critique, no more rounds
    assert [(s["agent"], s["round"], s["role"]) for s in samples] == [
        ("a", 0, "debater"), ("b", 0, "debater"), ("c", 0, "debater"),
        ("a", 1, "debater"), ("b", 1, "debater"), ("c", 1, "debater"),
    ]  # fmt: skip
    assert all(s["kind"] == "debate" for s in samples)
    assert [s["parent"] for s in samples] == [None, None, None, "s0", "s1", "s2"]
    assert samples[3]["references"] == ["s1", "s2"]
    seen = str(agents["a"].calls[1][-1].content)  # a's debate turn shows the others' answers
    assert (
        seen.index("What is 2+2?") < seen.index(samples[1]["text"]) and samples[2]["text"] in seen
    )
    assert total_calls(agents) == 6


async def test_debate_full_round_with_critic_and_student():
    agents = fake_agents(reply=_c_stays_wrong)
    out = await run(
        METHODS["debate"](agents=agents, reward=hash_reward), "What is 2+2?", budget=100, rounds=2
    )
    samples = out["samples"]
    # d + rounds * (d + 2) = 3 + 2 * 5 (the critic is the first agent, the student the last)
    assert len(samples) == 13
    assert [(s["agent"], s["round"], s["role"]) for s in samples[3:8]] == [
        ("a", 1, "debater"), ("b", 1, "debater"), ("c", 1, "debater"), ("a", 1, "critic"), ("c", 1, "student"),
    ]  # fmt: skip
    critic, student = samples[6], samples[7]
    assert critic["parent"] == "s5" and critic["references"] == ["s3", "s4", "s5"]
    assert student["parent"] == "s5" and student["references"] == ["s6"]
    assert critic["reward"] is None and critic["error"] is None  # feedback is not an answer
    assert samples[10]["parent"] == "s7"  # the student's next turn continues from its reflection
    assert samples[8]["references"] == ["s4", "s7"]
    reflect_prompt = str(agents["c"].calls[2][-1].content)
    assert critic["text"] in reflect_prompt and "Agent 3" in reflect_prompt
    assert out["best"]["role"] != "critic"


async def test_debate_reflection_names_the_students_answer_as_the_critic_saw_it():
    agents = fake_agents(reply=_never_agree)
    agents["b"].fail_on = frozenset(range(10))  # b never answers: the critic reviews a and c
    out = await run(METHODS["debate"](agents=agents, reward=hash_reward), "Hi", budget=20, rounds=1)
    critic, student = out["samples"][-2:]
    assert critic["role"] == "critic" and critic["references"] == ["s3", "s5"]
    assert student["role"] == "student" and student["parent"] == "s5"
    assert "reviewed as Agent 2" in str(agents["c"].calls[-1][-1].content)


async def test_debate_budget_is_an_upper_bound():
    agents = fake_agents(reply=_never_agree)
    out = await run(METHODS["debate"](agents=agents, reward=hash_reward), "Hi", budget=9, rounds=5)
    # opening 3, round 1: 3 + critique 2 = 8; round 2 (3 more) does not fit
    assert len(out["samples"]) == 8 == total_calls(agents)
    out = await run(
        METHODS["debate"](agents=fake_agents(reply=_never_agree), reward=hash_reward),
        "Hi",
        budget=2,
    )
    assert [s["agent"] for s in out["samples"]] == ["a", "b"]


async def test_debate_stops_when_all_match_the_gold_answer():
    def four(name, k, messages):
        return "Final answer: 4"

    # one debater never reaches "consensus", but it matches the reference
    out = await run(METHODS["debate"](agents=fake_agents(["a"], reply=four), reward=hash_reward),
                    {"prompt": "2+2?", "reference": "4"}, budget=20, rounds=1)  # fmt: skip
    assert len(out["samples"]) == 1
    out = await run(METHODS["debate"](agents=fake_agents(["a"], reply=four), reward=hash_reward),
                    {"prompt": "2+2?"}, budget=20, rounds=1)  # fmt: skip
    assert [s["role"] for s in out["samples"]] == ["debater", "debater", "critic", "student"]


async def test_tdpo_pairs_from_a_recorded_debate():
    out = await run(
        METHODS["debate"](agents=fake_agents(reply=_c_stays_wrong), reward=hash_reward),
        "What is 2+2?",
        budget=100,
        rounds=1,
    )
    samples = out[
        "samples"
    ]  # s0 a=4, s1 b=5, s2 c=3 | s3 a=4, s4 b=4, s5 c=3, s6 critic, s7 student c=3
    pairs = debate_tdpo_pairs(samples, "What is 2+2?", "4", with_meta=True)
    assert [(p["round"], p["chosen_id"], p["rejected_id"]) for p in pairs] == [
        (0, "s0", "s1"), (0, "s0", "s2"), (1, "s3", "s5"), (1, "s4", "s5"),
    ]  # fmt: skip
    text = {s["id"]: s["text"] for s in samples}
    for p in pairs:
        assert p["chosen"] == [{"role": "assistant", "content": text[p["chosen_id"]]}]
        assert p["rejected"] == [{"role": "assistant", "content": text[p["rejected_id"]]}]
        assert p["prompt"][-1]["role"] == "user"
        assert p["prompt"][-1]["content"].startswith(
            "What is 2+2?" if p["round"] == 0 else "## Question\nWhat is 2+2?"
        )
    round1 = pairs[2]["prompt"][-1]["content"]
    assert all(text[i] in round1 for i in ("s0", "s1", "s2"))  # the debate context
    assert pairs[2]["prompt"] == pairs[3]["prompt"]  # one shared prompt per round
    # from a synthesis record: prompt and gold answer come from it; the rows are TRL's
    record = {"method": "debate", "prompt": "What is 2+2?", "reference": "4", "samples": samples}
    rows = debate_tdpo_pairs(record)
    assert len(rows) == 4 and set(rows[0]) == {"prompt", "chosen", "rejected"}
    assert debate_tdpo_pairs({**record, "reference": None}) == []
    assert len(debate_tdpo_pairs(record, max_pairs_per_round=1)) == 2
    assert json.loads(json.dumps(rows)) == rows


async def test_debate_best_is_over_the_whole_run_not_the_last_round():
    # the opening answers score highest; later rounds must not hide them
    def reward(prompt, responses):
        return [10.0 if "Final answer" not in r else 1.0 for r in responses]

    def reply(name, k, messages):
        return f"{name} opening {k}" if k == 0 else f"{name} turn {k}\nFinal answer: {k}{name}"

    agents = fake_agents(["a", "b", "c"], reply=reply)
    graph = METHODS["debate"](agents=agents, reward=reward).compile()
    out = await graph.ainvoke({"prompt": "Q?"}, context={"budget": 20, "rounds": 2})
    rounds = {s.get("round") for s in out["samples"]}
    assert len(rounds) > 1
    assert out["best"] == best_sample(out["samples"])
    assert out["best"]["round"] == 0
