"""Self-MoA and Self-MoA-Seq as MoA options: the same prompts as MoA over copies of one
agent, windows that show every proposal once, and the bad-input errors."""

from __future__ import annotations

import hashlib
import itertools
from typing import Any

import pytest
from langchain_core.messages import BaseMessage

from tests.fakes import FakeAgent, hash_reward
from toa_graph import METHODS
from toa_graph.config import ProjectConfig
from toa_graph.errors import UserError
from toa_graph.methods.moa import seq_final_ids
from toa_graph.methods.self_moa import seq_plan, seq_windows
from toa_graph.registry import method_context


def by_prompt(name: str, k: int, messages: list[BaseMessage]) -> str:
    """A reply fixed by what the agent is shown (not by its name or call count), so one
    agent and its copies answer the same prompt the same way."""
    seen = "\n".join(f"{m.type}:{m.content}" for m in messages)
    return "ans-" + hashlib.sha256(seen.encode()).hexdigest()[:10]


def agents(*names: str) -> dict[str, FakeAgent]:
    return {n: FakeAgent(name=n, reply=by_prompt) for n in names}


def prompts_seen(ags: dict[str, FakeAgent]) -> list[str]:
    return sorted(
        "\n".join(f"{m.type}:{m.content}" for m in call) for a in ags.values() for call in a.calls
    )


def shape(out: dict[str, Any]) -> list[tuple[Any, ...]]:
    keys = ("id", "text", "kind", "layer", "parent", "stack", "reward")
    return [(*(s.get(k) for k in keys), tuple(s.get("references", ()))) for s in out["samples"]]


async def run(ags: dict[str, FakeAgent], **ctx: Any) -> dict[str, Any]:
    graph = METHODS["moa"](agents=ags, reward=hash_reward).compile()
    return await graph.ainvoke({"prompt": "Explain tides."}, context=ctx)


@pytest.mark.parametrize(
    "knobs",
    [{"budget": 14, "layers": 2}, {"budget": 9, "layers": 3}, {"budget": 11, "seq_window": 2}],
)
async def test_self_moa_over_a_is_moa_over_copies_of_a(knobs):
    mixed = agents("a", "b", "c")  # Self-MoA samples "b" in every slot; "a", "c" stay idle
    self_out = await run(mixed, proposers="self", agent="b", **knobs)
    copies = agents("b1", "b2", "b3")
    copy_out = await run(copies, **knobs)
    assert shape(self_out) == shape(copy_out)
    assert prompts_seen(mixed) == prompts_seen(copies)
    assert {s["agent"] for s in self_out["samples"]} == {"b"}
    assert (
        not mixed["a"].calls and not mixed["c"].calls and len(mixed["b"].calls) == knobs["budget"]
    )
    assert any(s["kind"] == "aggregate" for s in self_out["samples"])


async def test_self_moa_defaults_to_the_first_agent():
    ags = agents("a", "b")
    out = await run(ags, proposers="self", budget=4, layers=2)
    assert {s["agent"] for s in out["samples"]} == {"a"} and not ags["b"].calls


@pytest.mark.parametrize("window", [2, 3, 4])
@pytest.mark.parametrize("budget", [1, 2, 5, 8, 13])
async def test_self_moa_seq_windows_show_every_proposal_once(window, budget):
    ags = agents("a", "b", "c", "d", "e")
    out = await run(ags, proposers="self", seq_window=window, budget=budget)
    samples = out["samples"]
    assert [s["id"] for s in samples] == [f"s{i}" for i in range(budget)]
    aggregates = {s["id"] for s in samples if s["kind"] == "aggregate"}
    for stack in {s["stack"] for s in samples}:
        mine = [s for s in samples if s["stack"] == stack]
        proposals = [s["id"] for s in mine if s["kind"] == "fresh"]
        shown = [r for s in mine for r in s.get("references", []) if r not in aggregates]
        if len(proposals) > 1:
            assert sorted(shown) == sorted(proposals)  # each proposal in exactly one window
        chain = [s for s in mine if s["kind"] == "aggregate"]
        for prev, s in itertools.pairwise(chain):
            assert s["references"][0] == prev["id"] == s["parent"]  # the previous aggregate
        assert all(len(s["references"]) <= window for s in chain)
    finals = set(seq_final_ids(budget, 5, window))
    assert (out.get("final") is None) == (not finals)
    if finals:
        assert out["final"]["id"] in finals


def test_seq_plan_spends_the_budget():
    for window in (2, 3, 5):
        for budget in range(1, 40):
            plan = seq_plan(budget, 4, window)
            assert sum(p + len(seq_windows(p, window)) for p in plan) == budget
    assert seq_windows(5, 2) == [[0, 1], [2], [3], [4]]


@pytest.mark.parametrize(
    ("knobs", "needle"),
    [({"seq_window": 1}, "seq_window"), ({"proposers": "best"}, "proposers")],
)
def test_bad_knobs_name_themselves(knobs, needle):
    with pytest.raises(UserError, match=needle):
        method_context("moa", knobs)


async def test_unknown_self_agent_is_an_error_naming_it():
    with pytest.raises(ValueError, match="'zed'"):
        await run(agents("a", "b"), proposers="self", agent="zed", budget=4)
    cfg: dict[str, Any] = {
        "agents": [{"name": "a", "model": "m", "base_url": "http://127.0.0.1:1/v1"}],
        "reward": {"kind": "math"},
        "method": {"name": "moa", "context": {"proposers": "self", "agent": "zed"}},
    }
    with pytest.raises(ValueError, match=r"method\.context\.agent: 'zed'"):
        ProjectConfig.model_validate(cfg)
    cfg["method"]["context"]["agent"] = "a"
    assert ProjectConfig.model_validate(cfg).method.context["proposers"] == "self"


def test_cli_set_knobs_reach_the_moa_context():
    from toa_graph.commands import parse_knobs
    from toa_graph.registry import RunSettings

    cfg = ProjectConfig.model_validate(
        {
            "agents": [
                {"name": n, "model": "m", "base_url": f"http://127.0.0.1:{p}/v1"}
                for n, p in (("a", 1), ("b", 2))
            ],
            "reward": {"kind": "math"},
        }
    )
    knobs = parse_knobs(["proposers=self", "agent=b", "seq_window=3"])
    settings = RunSettings.resolve(cfg, method="moa", knobs=knobs)
    ctx = method_context(settings.method, settings.knobs)
    assert (ctx.proposers, ctx.agent, ctx.seq_window) == ("self", "b", 3)  # type: ignore[attr-defined]
    with pytest.raises(UserError, match="seq_window"):
        RunSettings.resolve(cfg, method="moa", knobs=parse_knobs(["seq_window=1"]))
    with pytest.raises(UserError, match="'zed'"):
        RunSettings.resolve(cfg, method="moa", knobs=parse_knobs(["proposers=self", "agent=zed"]))
