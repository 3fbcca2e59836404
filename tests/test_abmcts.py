"""AB-MCTS: the graph makes TreeQuest's own plays, spends the budget, keeps each prompt's
randomness its own, survives checkpointers, and says which extra is missing."""

from __future__ import annotations

import asyncio
import hashlib
import sys
from typing import Any

import numpy as np
import pytest
from langgraph.checkpoint.memory import InMemorySaver

from tests.fakes import FakeAgent, fake_agents, hash_reward
from toa_graph import METHODS
from toa_graph.errors import UserError
from toa_graph.methods import abmcts
from toa_graph.methods.abmcts import Search, load_algorithm, minmax_score, told_score
from toa_graph.sampling import answer_messages, refine_messages

treequest = pytest.importorskip("treequest")

PROMPT = "Name a prime."
NAMES = ("a", "b", "c")


def reply_of(name: str, last_user_text: str) -> str:
    """A reply that depends only on the agent and what it is asked (no call counter), so
    the graph and the library's loop below produce the same text for the same play."""
    return f"{name}>{hashlib.sha256(last_user_text.encode()).hexdigest()[:12]}"


def agents(delay_s: float = 0.0) -> dict[str, FakeAgent]:
    return fake_agents(
        NAMES, delay_s=delay_s, reply=lambda n, k, m: reply_of(n, str(m[-1].content))
    )


Play = tuple[str, str, str | None]  # agent, fresh|refine, parent sample id


def library_plays(budget: int, seed: int, tau: float = 0.1) -> list[Play]:
    """TreeQuest's own loop: ``ABMCTSA.step`` over one generate function per agent, with
    numpy's global RNG seeded as the graph seeds each prompt's."""
    algo = treequest.ABMCTSA()
    plays: list[Play] = []

    def generate(name: str) -> Any:
        def fn(parent: dict[str, str] | None) -> tuple[dict[str, str], float]:
            msgs = (
                answer_messages(PROMPT)
                if parent is None
                else refine_messages(PROMPT, parent["text"])
            )
            text = reply_of(name, msgs[-1]["content"])
            sid = f"s{len(plays)}"
            plays.append((name, "fresh" if parent is None else "refine", parent and parent["id"]))
            return {"id": sid, "text": text}, told_score(hash_reward(PROMPT, [text])[0], tau)

        return fn

    fns = {n: generate(n) for n in NAMES}
    saved = np.random.get_state()
    np.random.seed(seed)
    try:
        state = algo.init_tree()
        for _ in range(budget):
            state = algo.step(state, fns)
    finally:
        np.random.set_state(saved)
    return plays


def graph_plays(out: dict[str, Any]) -> list[Play]:
    return [(s["agent"], s["kind"], s["parent"]) for s in out["samples"]]


async def run(budget: int, prompt: str = PROMPT, compile_kwargs=None, **ctx: Any) -> dict[str, Any]:
    kw = compile_kwargs or {}
    graph = METHODS["abmcts"](agents=agents(ctx.pop("delay_s", 0.0)), reward=hash_reward).compile(
        **kw
    )
    config = {"configurable": {"thread_id": "t"}} if kw.get("checkpointer") else None
    return await graph.ainvoke({"prompt": prompt}, config=config, context={"budget": budget, **ctx})


@pytest.mark.parametrize("seed", [0, 7])
async def test_one_play_a_step_makes_the_library_loops_plays(seed, compile_kwargs):
    budget = 24
    expected = library_plays(budget, seed)
    before = np.random.get_state()[1].copy()
    out = await run(budget, seed=seed, compile_kwargs=compile_kwargs)
    assert graph_plays(out) == expected
    assert any(kind == "refine" for _, kind, _ in expected)  # the search goes deeper too
    assert len({a for a, _, _ in expected}) > 1  # and uses more than one agent
    assert (np.random.get_state()[1] == before).all()  # the global RNG is left as it was
    # the record carries the tree: every node, its parent, agent and the score told
    nodes = out["tree"]["nodes"]
    assert [(n["sample"], n["agent"], n["parent"]) for n in nodes] == [
        (s["id"], s["agent"], s["parent"]) for s in out["samples"]
    ]
    for n, s in zip(nodes, out["samples"], strict=True):
        assert n["score"] == pytest.approx(told_score(s["reward"], 0.1))
    assert out["tree"]["plays"] == budget


@pytest.mark.parametrize("budget", [1, 5, 13])
@pytest.mark.parametrize("per_step", [2, 4])
async def test_several_plays_a_step_spend_exactly_the_budget(budget, per_step, compile_kwargs):
    out = await run(budget, plays_per_step=per_step, compile_kwargs=compile_kwargs)
    assert [s["id"] for s in out["samples"]] == [f"s{i}" for i in range(budget)]
    assert len(out["tree"]["nodes"]) == budget == out["tree"]["plays"]
    ids = {s["id"] for s in out["samples"]}
    assert all(s["parent"] is None or s["parent"] in ids for s in out["samples"])


async def test_concurrent_prompts_make_the_plays_each_makes_alone():
    alone = [await run(16, prompt=p, seed=3, delay_s=0.002) for p in ("p one", "p two")]
    together = await asyncio.gather(
        *(run(16, prompt=p, seed=3, delay_s=0.002) for p in ("p one", "p two"))
    )
    assert [graph_plays(o) for o in together] == [graph_plays(o) for o in alone]
    assert graph_plays(alone[0]) != graph_plays(alone[1])  # the prompts do differ


async def test_a_failed_play_is_told_zero_and_keeps_its_error():
    ags = fake_agents(NAMES, fail_on=frozenset({0}))
    graph = METHODS["abmcts"](agents=ags, reward=hash_reward).compile()
    out = await graph.ainvoke({"prompt": PROMPT}, context={"budget": 9})
    failed = [s for s in out["samples"] if s["error"]]
    assert failed and all(s["stage"] == "generate" and s["reward"] is None for s in failed)
    told = {n["sample"]: n["score"] for n in out["tree"]["nodes"]}
    assert all(told[s["id"]] == 0.0 for s in failed)
    assert len(out["samples"]) == 9


def test_score_transforms():
    assert told_score(None, 0.1) == 0.0 and told_score(0.0, 0.1) == 0.5
    assert told_score(1.0, 0.1) == pytest.approx(1 / (1 + np.exp(-10)))
    assert minmax_score(None, [1.0, 2.0]) == 0.0
    assert minmax_score(3.0, [3.0]) == 0.5
    assert minmax_score(2.0, [1.0, 3.0, 2.0]) == 0.5 and minmax_score(3.0, [1.0, 3.0]) == 1.0


async def test_minmax_runs_tell_scores_in_unit_range():
    out = await run(10, score_transform="minmax", seed=1)
    scores = [n["score"] for n in out["tree"]["nodes"]]
    assert all(0.0 <= x <= 1.0 for x in scores) and 1.0 in scores


async def test_search_state_is_plain_data_and_a_thread_reruns_the_same():
    saver = InMemorySaver()
    graph = METHODS["abmcts"](agents=agents(), reward=hash_reward).compile(checkpointer=saver)
    config: Any = {"configurable": {"thread_id": "x"}}
    first = await graph.ainvoke({"prompt": PROMPT}, config=config, context={"budget": 6})
    again = await graph.ainvoke({"prompt": PROMPT}, config=config, context={"budget": 6})
    assert graph_plays(first) == graph_plays(again) and len(again["samples"]) == 6
    history = [c async for c in graph.aget_state_history(config)]
    blobs = [h.values.get("search") for h in history if h.values.get("search")]
    assert blobs and all(isinstance(b, str) for b in blobs)
    assert isinstance(Search.loads(blobs[0]), Search)


async def test_streams_toa_step_events():
    graph = METHODS["abmcts"](agents=agents(), reward=hash_reward).compile()
    events = [
        e
        async for e in graph.astream(
            {"prompt": PROMPT}, context={"budget": 5, "plays_per_step": 2}, stream_mode="custom"
        )
    ]
    assert [e["plays"] for e in events] == [2, 4, 5]
    assert all(e["event"] == "toa_step" and e["budget"] == 5 for e in events)
    assert sum(len(e["new"]) for e in events) == 5


def test_missing_extras_are_one_line_naming_the_extra(monkeypatch):
    monkeypatch.setattr(abmcts.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(UserError, match=r"toa-graph\[abmcts-m\]") as exc:
        METHODS["abmcts"](agents=agents(), reward=hash_reward, algorithm="abmcts-m")
    assert "\n" not in str(exc.value)
    monkeypatch.setitem(sys.modules, "treequest", None)
    with pytest.raises(UserError, match=r"toa-graph\[treequest\]") as exc:
        load_algorithm()
    assert "\n" not in str(exc.value)


def test_the_graph_is_toas_shape():
    """Same nodes and edges as TOA (controller, agent, refine, reward): TOA's play nodes."""
    from pathlib import Path

    drawing = (
        METHODS["abmcts"](agents=agents(), reward=hash_reward).compile().get_graph().draw_mermaid()
    )
    assert drawing == (Path(__file__).parent / "snapshots" / "toa.mmd").read_text()
