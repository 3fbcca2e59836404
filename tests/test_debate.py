"""Debate & Reflect as D&R ran it (``debate_teachers_student_w_critique.py``), with fake
agents that answer per a script: rounds, round ends, the shared prompt, the stop rule, the
budget, the reward-threshold extension, and the D&R SFT / T-DPO exports."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from tests.fakes import CONTRACT_KEYS, FakeAgent, hash_reward
from toa_graph import METHODS, best_sample
from toa_graph.methods.debate import answers_match, debate_tdpo_pairs, final_answer
from toa_graph.methods.debate_rounds import (
    answer_prompt_text,
    dr_sft_examples,
    infer_task,
    round_cost,
    round_prompt_text,
    tdpo_examples,
)
from toa_graph.prompts import DEBATE_FORMAT_HINTS

Script = Any
"""(agent, round) -> that agent's final answer in that round."""


def _kind(text: str) -> str:
    if "provide a feedback to other agents" in text:
        return "feedback"
    if "provide a feedback to yourself" in text:
        return "reflection"
    return "answer"


def debaters(script: Script, names: str = "abcd", **kw: Any) -> dict[str, FakeAgent]:
    """Fake agents that answer per ``script`` and write numbered feedback / reflections."""
    agents = {n: FakeAgent(name=n, **kw) for n in names}

    def reply(name: str, k: int, messages: Any) -> str:
        kinds = [_kind(str(call[-1].content)) for call in agents[name].calls]
        kind, n = kinds[-1], kinds.count(kinds[-1]) - 1  # this agent's earlier such turns
        if kind == "answer":
            return f"{name} reasons, round {n}.\nFinal answer: {script(name, n)}"
        return f"{kind} {n} by {name}"

    for agent in agents.values():
        agent.reply = reply
    return agents


async def debate(agents: dict[str, FakeAgent], gold: str | None = "42", compile_kwargs=None,
                 reward=hash_reward, **context: Any) -> dict[str, Any]:  # fmt: skip
    graph = METHODS["debate"](agents=agents, reward=reward).compile(**(compile_kwargs or {}))
    config = {"configurable": {"thread_id": "t"}} if compile_kwargs else None
    inp: dict[str, Any] = {"prompt": "What is six times seven?", "reference": gold}
    return await graph.ainvoke(inp, config=config, context={"budget": 40, **context})


def turns(out: dict[str, Any], role: str, rnd: int | None = None) -> list[dict[str, Any]]:
    return [s for s in out["samples"] if s["role"] == role and (rnd is None or s["round"] == rnd)]


def prompts_of(agents: dict[str, FakeAgent], out: dict[str, Any]) -> dict[str, str]:
    """Sample id -> the user turn its agent was sent (each agent's calls are in id order)."""
    result = {}
    for name, agent in agents.items():
        mine = [s for s in out["samples"] if s["agent"] == name]
        assert len(mine) == len(agent.calls)
        for s, call in zip(mine, agent.calls, strict=True):
            result[s["id"]] = str(call[-1].content)
    return result


# ---------------------------------------------------------------- must show


async def test_a_two_right_two_wrong_then_all_right(compile_kwargs):
    agents = debaters(lambda name, r: "42" if name in "ab" or r >= 1 else "7")
    out = await debate(agents, compile_kwargs=compile_kwargs)
    answers, feedback, reflections = (turns(out, r) for r in ("answer", "feedback", "reflection"))
    assert len(answers) == 8 and len(out["samples"]) == 8 + 4 + 2
    assert [(s["agent"], s["round"], s["correct"]) for s in answers] == [
        ("a", 0, True), ("b", 0, True), ("c", 0, False), ("d", 0, False),
        ("a", 1, True), ("b", 1, True), ("c", 1, True), ("d", 1, True),
    ]  # fmt: skip
    assert sorted((s["agent"], s["to"]) for s in feedback) == [
        ("a", "c"), ("a", "d"), ("b", "c"), ("b", "d"),
    ]  # fmt: skip
    assert sorted((s["agent"], s["to"]) for s in reflections) == [("c", "c"), ("d", "d")]
    prompts = prompts_of(agents, out)
    round0 = {s["agent"]: s for s in answers if s["round"] == 0}
    for s in feedback:  # the feedback giver sees its own correct and the other's answer
        assert s["parent"] == round0[s["to"]]["id"] and s["references"] == [
            round0[s["agent"]]["id"], round0[s["to"]]["id"],
        ]  # fmt: skip
        assert round0[s["agent"]]["text"] in prompts[s["id"]]
        assert round0[s["to"]]["text"] in prompts[s["id"]]
    for s in reflections:
        assert "$42$" in prompts[s["id"]] and round0[s["agent"]]["text"] in prompts[s["id"]]
    round1 = [prompts[s["id"]] for s in answers if s["round"] == 1]
    assert len(set(round1)) == 1  # ONE shared prompt
    shared = round1[0]
    for s in [*answers[:4], *feedback, *reflections]:
        assert s["text"] in shared
    assert [f"Answer {i}:" in shared for i in (1, 2, 3, 4, 5)] == [True] * 4 + [False]
    assert "Do not explicitly mention other agents" in shared
    assert all(s["kind"] == "debate" and set(s) >= CONTRACT_KEYS for s in out["samples"])
    assert json.loads(json.dumps(out)) == out


async def test_b_agreeing_on_a_wrong_answer_does_not_stop_the_debate():
    agents = debaters(lambda name, r: "42" if r == 2 else "7")
    out = await debate(agents)
    assert len(turns(out, "answer")) == 12
    assert [len(turns(out, "reflection", r)) for r in (0, 1, 2)] == [4, 4, 0]
    assert not turns(out, "feedback")  # nobody was right to give any
    assert all(s["correct"] for s in turns(out, "answer", 2))


async def test_c_one_agent_always_right_runs_every_round():
    agents = debaters(lambda name, r: "42" if name == "a" else "7")
    out = await debate(agents, budget=40)
    assert len(turns(out, "answer")) == 16
    assert [s["round"] for s in turns(out, "answer")] == [r for r in range(4) for _ in range(4)]
    # after every round, round 3 included: a -> b, c, d feedback and three reflections
    assert [len(turns(out, "feedback", r)) for r in range(4)] == [3, 3, 3, 3]
    assert [len(turns(out, "reflection", r)) for r in range(4)] == [3, 3, 3, 3]
    assert len(out["samples"]) == 40


# ---------------------------------------------------------------- the rest of the spec


def test_round_cost_and_task_inference():
    assert [round_cost(n) for n in (1, 2, 3, 4, 5)] == [2, 4, 7, 10, 14]
    assert [infer_task(g) for g in ("42", "-3.5", "1,000", "B", "(c)", "\\frac{1}{2}", None)] == [
        "numeric", "numeric", "numeric", "choice", "choice", "math", "free",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("gold", "task", "hint"),
    [("42", None, "numeric"), ("B", None, "choice"), ("\\sqrt{2}", None, "math"),
     ("42", "math", "math")],
)  # fmt: skip
async def test_answer_template_carries_the_task_format_hint(gold, task, hint):
    agents = debaters(lambda name, r: gold)
    out = await debate(agents, gold, **({"task": task} if task else {}))
    first = str(agents["a"].calls[0][-1].content)
    assert DEBATE_FORMAT_HINTS[hint] in first and "Final answer: <your final answer>" in first
    assert first.endswith("### Question\nWhat is six times seven?\n")
    assert "500 words" in first and len(out["samples"]) == 4  # all right: stop after round 0


async def test_a_budget_too_small_for_one_round_is_an_error():
    with pytest.raises(ValueError, match=r"too small for one debate round of 4 agents.*10"):
        await debate(debaters(lambda n, r: "7"), budget=9)


async def test_the_budget_caps_the_rounds():
    agents = debaters(lambda name, r: "42" if name == "a" else "7")
    out = await debate(agents, budget=29)  # 3 rounds x 10 do not fit: two do
    assert len(out["samples"]) == 20 and max(s["round"] for s in out["samples"]) == 1
    out = await debate(debaters(lambda name, r: "42" if name == "a" else "7"), rounds=1)
    assert max(s["round"] for s in out["samples"]) == 1 and len(out["samples"]) == 20


async def test_feedback_and_reflections_are_not_answers():
    agents = debaters(lambda name, r: "42" if name == "a" else "7")
    out = await debate(agents, rounds=0)
    notes = [s for s in out["samples"] if s["role"] != "answer"]
    assert notes and all(s["reward"] is None and s["error"] is None for s in notes)
    assert all("correct" not in s for s in notes)
    assert out["best"] == best_sample(turns(out, "answer"))


async def test_next_round_parents_are_each_agents_own_last_answer():
    agents = debaters(lambda name, r: "42" if name == "a" else "7")
    out = await debate(agents, rounds=1)
    r0 = {s["agent"]: s["id"] for s in turns(out, "answer", 0)}
    shown = turns(out, "answer", 1)[0]["references"]
    for s in turns(out, "answer", 1):
        assert s["parent"] == r0[s["agent"]] and s["references"] == shown
    # every round-0 turn is shown once: 4 answers, 3 reflections, 3 feedback
    assert sorted(shown, key=lambda i: int(i[1:])) == [f"s{i}" for i in range(10)]


async def test_a_failed_answer_is_incorrect_and_gets_no_round_end():
    agents = debaters(lambda name, r: "42")
    agents["d"].fail_on = frozenset({0})
    out = await debate(agents, rounds=1)
    d0 = turns(out, "answer", 0)[3]
    assert d0["error"] and d0["correct"] is False
    assert not [s for s in out["samples"] if s["role"] != "answer"]
    assert len(turns(out, "answer", 1)) == 4 and all(turns(out, "answer", 1)[i]["correct"]
                                                     for i in range(4))  # fmt: skip


async def test_open_prompts_need_a_threshold_and_then_judge_by_reward():
    with pytest.raises(ValueError, match="correct_threshold"):
        await debate(debaters(lambda n, r: "7"), gold=None)

    def reward(prompt: Any, responses: list[str]) -> list[float]:
        return [1.0 if r.startswith("a ") else 0.0 for r in responses]

    agents = debaters(lambda name, r: "42" if name == "a" else "7")
    out = await debate(agents, gold=None, reward=reward, correct_threshold=0.5, rounds=0)
    assert [s["correct"] for s in turns(out, "answer")] == [True, False, False, False]
    prompts = prompts_of(agents, out)
    for s in turns(out, "reflection"):
        assert "$42$" in prompts[s["id"]]  # the best correct answer's final answer


async def test_a_round_runs_its_agents_concurrently():
    await debate(debaters(lambda n, r: "42"))
    agents = debaters(lambda name, r: "42" if name in "ab" or r >= 1 else "7", delay_s=0.05)
    start = time.perf_counter()
    out = await debate(agents)
    elapsed = time.perf_counter() - start
    assert len(out["samples"]) == 14
    assert elapsed < 0.4, f"3 steps (answers, round end, answers) took {elapsed:.3f}s"


def test_final_answers_follow_dr_parse_answer():
    # D&R reads the text after the FIRST "Final answer:"; the answers module reads it
    assert final_answer("...\nFinal answer: **42**.") == "42"
    assert answers_match("Final answer: $\\frac{1}{2}$\nFinal answer: 3", "\\frac{1}{2}")
    assert not answers_match("Final answer: $\\frac{1}{2}$\nFinal answer: 3", "3")
    assert final_answer("Final answer: (B)", "choice") == "B"
    # no marker: unanswered, even with a boxed or "the answer is" conclusion (as in D&R)
    assert final_answer("so $\\boxed{\\frac{1}{2}}$") is None
    assert final_answer("The final answer is: 1,234") is None
    assert final_answer('End with a line "Final answer: ..."') is None
    assert answers_match("Final answer: 18", "Janet makes 9 * 2 = 18 dollars.\n#### 18")
    assert answers_match("Final answer: 1,000 apples", "1000")
    assert answers_match("Final answer: (b)", "B")
    assert not answers_match("Final answer: 17", "18")
    assert not answers_match("\\boxed{18}", "18")


# ---------------------------------------------------------------- exports


async def test_tdpo_prompts_are_what_each_round_was_sent():
    agents = debaters(lambda name, r: "42" if name == "a" else "7")
    out = await debate(agents, rounds=2)
    record = {"method": "debate", "prompt": "What is six times seven?", **out}
    rows = tdpo_examples(record, with_meta=True)
    assert [(r["round"], r["chosen_id"]) for r in rows][::3] == [(0, "s0"), (1, "s10"), (2, "s20")]
    assert len(rows) == 9  # 1 correct x 3 incorrect, per round
    prompts = prompts_of(agents, out)
    text = {s["id"]: s["text"] for s in out["samples"]}
    for row in rows:
        assert row["prompt"] == [{"role": "user", "content": prompts[row["chosen_id"]]}]
        assert prompts[row["rejected_id"]] == prompts[row["chosen_id"]]  # one shared prompt
        assert row["chosen"] == [{"role": "assistant", "content": text[row["chosen_id"]]}]
        assert row["rejected"] == [{"role": "assistant", "content": text[row["rejected_id"]]}]
    assert debate_tdpo_pairs(record) == tdpo_examples(record)


async def test_tdpo_chunks_long_debate_prompts():
    agents = debaters(lambda name, r: "42" if name == "a" else "7")
    out = await debate(agents, rounds=1)
    record = {"method": "debate", "prompt": "What is six times seven?", **out}
    whole = tdpo_examples(record, with_meta=True)
    shared = next(r for r in whole if r["round"] == 1)["prompt"][-1]["content"]

    def words(t: str) -> int:
        return len(t.split())

    base = words(round_prompt_text("What is six times seven?", "numeric", []))
    limit = base + (words(shared) - base) // 2 + 1  # room for about half the answers
    rows = [r for r in tdpo_examples(record, max_prompt_tokens=limit, count_tokens=words,
                                     with_meta=True) if r["round"] == 1]  # fmt: skip
    chunks = sorted({r["prompt"][-1]["content"] for r in rows})
    assert len(chunks) >= 2 and len(rows) == 3 * len(chunks)
    assert all(words(c) <= limit for c in chunks)
    assert all("Answer 1:" in c and "### Question\nWhat is six times seven?" in c for c in chunks)
    for s in out["samples"]:  # every round-0 turn is in some chunk
        if s["round"] == 0:
            assert any(s["text"] in c for c in chunks)


async def test_dr_sft_every_correct_answer_with_the_plain_answer_prompt():
    agents = debaters(lambda name, r: "42" if name in "ab" or r >= 1 else "7")
    out = await debate(agents)
    record = {"method": "debate", "prompt": "What is six times seven?", **out}
    rows = dr_sft_examples(record)
    correct = [s for s in turns(out, "answer") if s["correct"]]
    assert len(rows) == len(correct) == 6
    plain = answer_prompt_text("What is six times seven?", "numeric")
    for row, s in zip(rows, correct, strict=True):
        assert row == {"messages": [{"role": "user", "content": plain},
                                    {"role": "assistant", "content": s["text"]}]}  # fmt: skip
