"""The method registry: one declaration per method, read by every caller; reward kinds
derived from one table; typed sample failures; the text module."""

from __future__ import annotations

import ast
import dataclasses
import json
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.fakes import FakeAgent, fake_agents, hash_reward
from toa_graph import METHODS, SamplingContext
from toa_graph.builtin_methods import BUILTIN_METHODS
from toa_graph.config import REWARD_KINDS, ConfigError, MethodConfig, load_config
from toa_graph.context import BaseContext, DebateContext, MoaContext, ToaContext
from toa_graph.errors import UserError
from toa_graph.registry import (
    METHOD_SPECS,
    compile_method,
    knobs_help,
    method_context,
    method_options,
)
from toa_graph.sampling import has_text, score_samples
from toa_graph.server.protocol import ChatCompletionRequest
from toa_graph.server.serving import ChatServing, ServerSettings, ServingError
from toa_graph.state import failure_stage
from toa_graph.text import content_text, message_text, prompt_messages

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- every reader agrees


def _studio_method(module: Path) -> str:
    """The method name a ``graphs/<m>.py`` module passes to ``studio_graph``."""
    calls = [
        n
        for n in ast.walk(ast.parse(module.read_text()))
        if isinstance(n, ast.Call) and getattr(n.func, "id", None) == "studio_graph"
    ]
    assert len(calls) == 1, f"{module}: expected one studio_graph(...) call"
    arg = calls[0].args[0]
    assert isinstance(arg, ast.Constant), f"{module}: the method must be a literal name"
    return str(arg.value)


def test_langgraph_json_graphs_modules_config_and_methods_agree():
    names = set(METHOD_SPECS)
    assert set(METHODS) == names
    assert all(METHODS[n] is spec.factory for n, spec in METHOD_SPECS.items())
    graphs = json.loads((ROOT / "langgraph.json").read_text())["graphs"]
    assert set(graphs) == names
    for name, spec in METHOD_SPECS.items():
        assert graphs[name] == f"./graphs/{spec.studio_module}.py:graph"
    modules = {p.stem: p for p in (ROOT / "graphs").glob("*.py") if p.stem != "__init__"}
    assert set(modules) == {s.studio_module for s in METHOD_SPECS.values()}
    for name, spec in METHOD_SPECS.items():
        assert _studio_method(modules[spec.studio_module]) == name
    for name in names:  # config validation takes every method and nothing else
        assert MethodConfig(name=name).name == name
    with pytest.raises(ValueError, match="toa"):
        MethodConfig(name="mcts")


def test_each_spec_is_complete_and_its_knobs_belong_to_the_compat_context():
    all_knobs = {f.name for f in dataclasses.fields(SamplingContext)}
    for spec in BUILTIN_METHODS:  # SamplingContext: the built-in methods' knobs in one
        assert issubclass(spec.context, BaseContext) and spec.description and spec.reference
        assert set(spec.knobs) <= all_knobs
        assert issubclass(SamplingContext, spec.context)  # a dict context works for all
    assert "alpha" in METHOD_SPECS["toa"].knobs and "alpha" not in METHOD_SPECS["moa"].knobs
    assert "rounds" in METHOD_SPECS["debate"].knobs and "layers" in METHOD_SPECS["moa"].knobs
    helptext = knobs_help()
    lines = dict(line.split(": ", 1) for line in helptext.splitlines())
    assert lines["every method"].startswith("budget=16, agent=None")
    assert lines["toa"].startswith("alpha=0.01, tau=0.1") and "budget" not in lines["toa"]
    assert lines["moa"] == (
        "layers=4, num_references=None, proposers='all', seq_window=None, "
        "config options: aggregator"
    )
    assert lines["abmcts"] == (
        "tau=0.1, score_transform='sigmoid', plays_per_step=1, config options: algorithm"
    )
    assert lines["debate"] == "rounds=3, task=None, correct_threshold=None"
    assert "random" not in lines  # nothing beyond the shared knobs


# ---------------------------------------------------------------- knobs and options


def test_unknown_knob_names_the_method_and_lists_its_knobs():
    with pytest.raises(ValueError) as err:
        method_context("moa", {"budget": 4, "alpha": 0.1})
    msg = str(err.value)
    assert "'moa'" in msg and "['alpha']" in msg and "layers=4" in msg and "budget=16" in msg
    ctx = method_context("moa", {"budget": 4, "layers": 2})
    assert isinstance(ctx, MoaContext) and (ctx.budget, ctx.layers) == (4, 2)
    assert isinstance(method_context("toa", {}), ToaContext)
    assert isinstance(method_context("debate", {"rounds": 0}), DebateContext)


@pytest.mark.parametrize(
    "method, knobs, field",
    [
        ("moa", {"layers": 0}, "layers"),
        ("moa", {"num_references": 0}, "num_references"),
        ("debate", {"rounds": -1}, "rounds"),
        ("toa", {"tau": 0}, "tau"),
        ("random", {"budget": 0}, "budget"),
    ],
)
def test_bad_knob_values_fail_before_the_run(method, knobs, field):
    with pytest.raises(ValueError, match=f"context.{field} must be"):
        method_context(method, knobs)
    with pytest.raises(ValueError, match=f"context.{field} must be"):
        SamplingContext(**knobs)  # what a plain dict context becomes at ainvoke


def test_options_are_checked():
    assert method_options("moa", {"aggregator": "a"}).model_dump() == {"aggregator": "a"}
    with pytest.raises(ValueError, match="its options: aggregator"):
        method_options("moa", {"agregator": "a"})
    with pytest.raises(ValueError, match="its options: none"):
        method_options("toa", {"aggregator": "a"})


def _write(tmp_path: Path, method: str) -> Path:
    p = tmp_path / "c.yaml"
    body = """\
        agents:
          - {name: a, model: m, base_url: "http://127.0.0.1:9/v1"}
          - {name: b, model: m, base_url: "http://127.0.0.1:9/v1"}
        reward: {kind: math}
        method:
    """
    p.write_text(textwrap.dedent(body) + textwrap.indent(textwrap.dedent(method), "  "))
    return p


def test_config_sets_moa_aggregator_and_debate_roles(tmp_path):
    cfg = load_config(_write(tmp_path, "name: moa\noptions: {aggregator: b}\n"))
    assert cfg.method.name == "moa" and cfg.method.options == {"aggregator": "b"}
    with pytest.raises(UserError, match="student"):  # debate has no options (no student)
        load_config(_write(tmp_path, "name: debate\noptions: {student: a}\n"))


@pytest.mark.parametrize(
    "method, expected",
    [
        ("name: moa\ncontext: {alpha: 0.1}\n", ["c.yaml:7", "'moa'", "its knobs: budget=16"]),
        ("name: moa\ncontext: {layers: 0}\n", ["c.yaml:7", "context.layers must be >= 1"]),
        ("name: debate\ncontext: {rounds: -2}\n", ["context.rounds must be >= 0"]),
        ("name: moa\noptions: {agregator: b}\n", ["c.yaml:7", "its options: aggregator"]),
        ("name: moa\noptions: {aggregator: z}\n", ["'z' is not one of the agents"]),
        ("name: mcts\n", ["c.yaml:6", "'toa'"]),
    ],
)
def test_config_method_section_is_validated_at_load(tmp_path, method, expected):
    with pytest.raises(ConfigError) as err:
        load_config(_write(tmp_path, method))
    for part in expected:
        assert part in str(err.value), str(err.value)


def _agg_reply(name: str, k: int, messages: list[Any]) -> str:
    shown = any(m.type == "system" and "## Response" in str(m.content) for m in messages)
    return f"{name}#{k}: {'AGG' if shown else 'plain'}"


def _agg_reward(prompt: Any, responses: list[str]) -> list[float]:
    return [1.0 if r.startswith("c#") and "AGG" in r else 0.0 for r in responses]


async def test_compile_method_passes_options_to_the_factory():
    agents = fake_agents(("a", "b", "c"), reply=_agg_reply)
    graph = compile_method("moa", agents=agents, reward=_agg_reward, options={"aggregator": "c"})
    out = await graph.ainvoke({"prompt": "q?"}, context={"budget": 3})
    last = out["samples"][-1]
    assert (last["agent"], last["kind"], last["layer"]) == ("c", "aggregate", 1)
    assert out["best"]["id"] == last["id"]
    plain = compile_method("moa", agents=agents, reward=_agg_reward)
    out = await plain.ainvoke({"prompt": "q?"}, context={"budget": 3})
    assert {s["kind"] for s in out["samples"]} == {"fresh"}  # one layer, no aggregator


async def test_server_request_options_and_default_options():
    agents = fake_agents(("a", "b", "c"), reply=_agg_reply)
    serving = ChatServing(agents, _agg_reward, settings=ServerSettings(default_context={}))
    msgs = [{"role": "user", "content": "q?"}]
    req = ChatCompletionRequest(model="moa", messages=msgs, budget=3, options={"aggregator": "c"})
    resp = await serving.complete(req)
    assert resp.x_toa is not None
    assert (resp.x_toa["best_agent"], resp.x_toa["best_id"]) == ("c", "s2")
    assert resp.x_toa["best_reward"] == 1.0 and resp.choices[0].message.content == "c#0: AGG"
    plain = await serving.complete(ChatCompletionRequest(model="moa", messages=msgs, budget=3))
    assert plain.x_toa is not None and plain.x_toa["best_reward"] == 0.0
    # the config's options for its method apply when a request gives none
    settings = ServerSettings(default_method="moa", default_options={"moa": {"aggregator": "c"}})
    served = ChatServing(agents, _agg_reward, settings=settings)
    resp = await served.complete(ChatCompletionRequest(model="moa", messages=msgs, budget=3))
    assert resp.x_toa is not None and resp.x_toa["best_reward"] == 1.0


@pytest.mark.parametrize(
    "model, fields, param, needle",
    [
        ("moa", {"options": {"aggregator": "zz"}}, "options.aggregator", "not one of the agents"),
        ("moa", {"options": {"agregator": "c"}}, "options", "its options: aggregator"),
        ("moa", {"context": {"alpha": 0.1}}, "context", "its knobs: budget, agent"),
        ("toa", {"context": {"rounds": 2}}, "context", "for method 'toa'"),
        ("moa", {"context": {"layers": 0}}, "context", "context.layers must be >= 1"),
    ],
)
def test_server_refuses_bad_knobs_and_options_before_running(model, fields, param, needle):
    serving = ChatServing(fake_agents(), hash_reward)
    req = ChatCompletionRequest(model=model, messages=[{"role": "user", "content": "q"}], **fields)
    with pytest.raises(ServingError) as err:
        serving.prepare(req)
    assert err.value.status == 400 and err.value.body.error.param == param
    assert needle in err.value.body.error.message


def test_server_default_knobs_apply_where_the_method_has_them():
    settings = ServerSettings(default_context={"budget": 5, "alpha": 0.2, "rounds": 1})
    serving = ChatServing(fake_agents(), hash_reward, settings=settings)
    msgs = [{"role": "user", "content": "q"}]
    moa = serving.prepare(ChatCompletionRequest(model="moa", messages=msgs)).context
    assert type(moa) is MoaContext and moa.budget == 5
    toa = serving.prepare(ChatCompletionRequest(model="toa", messages=msgs)).context
    assert isinstance(toa, ToaContext) and toa.alpha == 0.2
    with pytest.raises(ValueError, match="belong to no served method"):
        ChatServing(fake_agents(), hash_reward, settings=ServerSettings(default_context={"x": 1}))


# ---------------------------------------------------------------- reward kinds


def test_reward_kinds_are_derived_from_the_config_union():
    from toa_graph.config import _KIND_TAGS, remote_reward_kinds
    from toa_graph.distributed import REMOTE_REWARD_KINDS

    assert set(REWARD_KINDS) == {
        "hf", "vllm", "judge", "comet", "math", "reference", "python", "embedded", "remote",
    }  # fmt: skip
    assert set(REWARD_KINDS) == _KIND_TAGS
    assert remote_reward_kinds() == REMOTE_REWARD_KINDS == {"vllm", "judge", "remote"}
    for kind, cls in REWARD_KINDS.items():
        if kind == "python":
            assert cls.implementation is None
        else:
            assert cls.implementation and cls.implementation.startswith("toa_graph.rewards.")


def test_build_reward_uses_the_kinds_implementation():
    from toa_graph.config import MathRewardConfig
    from toa_graph.rewards import build_reward
    from toa_graph.rewards.math import MathReward

    assert isinstance(build_reward(MathRewardConfig(kind="math")), MathReward)


# ---------------------------------------------------------------- typed failures


def _sample(sid: str, text: str, error: str | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "id": sid, "agent": "a", "text": text, "reward": None, "parent": None, "kind": "fresh",
        "layer": 0, "usage": {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0},
        "latency_s": 0.0, "error": error, "stage": "generate" if error else None, "scored": True,
        **extra,
    }  # fmt: skip


async def test_reward_failure_is_stage_reward_and_keeps_the_text_usable():
    from toa_graph.rewards.base import as_reward_model

    def broken(prompt: Any, responses: list[str]) -> list[float]:
        raise RuntimeError("reward server down")

    samples = [_sample("s0", "an answer"), _sample("s1", "", error="HTTP 500")]
    out = await score_samples(as_reward_model(broken), "q", None, samples)
    assert out[0]["stage"] == "reward" and "reward server down" in str(out[0]["error"])
    assert out[1]["stage"] == "generate" and out[1]["error"] == "HTTP 500"
    assert [failure_stage(s) for s in out] == ["reward", "generate"]
    assert has_text(out[0]) and not has_text(out[1])  # text survives a reward failure


async def test_non_finite_score_is_a_reward_failure():
    from toa_graph.rewards.base import as_reward_model

    nan = as_reward_model(lambda p, r: [float("nan")])
    out = await score_samples(nan, "q", None, [_sample("s0", "x")])
    assert out[0]["reward"] is None and out[0]["stage"] == "reward"


def test_failure_stage_reads_records_written_before_the_field():
    old = _sample("s0", "x", error="reward: timeout")
    del old["stage"]
    assert failure_stage(old) == "reward"
    old["error"] = "HTTP 500"
    assert failure_stage(old) == "generate"
    assert failure_stage(_sample("s1", "x")) is None


async def test_debate_feedback_and_reflections_are_not_scored():
    seen: list[str] = []

    def reward(prompt: Any, responses: list[str]) -> list[float]:
        seen.extend(responses)
        return [0.5] * len(responses)

    def reply(name: str, k: int, messages: list[Any]) -> str:  # a right, b wrong
        return f"{name}#{k}: reasoning\nFinal answer: {'7' if name == 'a' else '8'}"

    agents = fake_agents(("a", "b"), reply=reply)
    graph = compile_method("debate", agents=agents, reward=reward, options={})
    out = await graph.ainvoke({"prompt": "q?", "reference": "7"}, context={"budget": 16})
    notes = [s for s in out["samples"] if s.get("role") != "answer"]
    answers = [s for s in out["samples"] if s.get("role") == "answer"]
    assert {s["role"] for s in notes} == {"feedback", "reflection"}
    assert all(not s["scored"] and s["reward"] is None for s in notes)
    assert all(s["scored"] and s["reward"] == 0.5 for s in answers)
    assert not {s["text"] for s in notes} & set(seen)


async def test_a_generation_failure_is_stage_generate():
    agent = FakeAgent(name="a", fail_on=frozenset({0}))
    graph = compile_method("random", agents={"a": agent}, reward=hash_reward)
    out = await graph.ainvoke({"prompt": "q"}, context={"budget": 1})
    (s,) = out["samples"]
    assert s["stage"] == "generate" and s["error"] and s["reward"] is None


# ---------------------------------------------------------------- text


def test_content_text_and_prompt_messages():
    parts = [{"type": "text", "text": "a"}, {"type": "image_url", "image_url": {}}, "b"]
    assert content_text(parts) == "ab" and content_text(None) == "" and content_text("x") == "x"
    assert message_text({"content": parts}) == "ab"

    from langchain_core.messages import AIMessage

    assert message_text(AIMessage(content=[{"type": "text", "text": "hi"}])) == "hi"
    assert prompt_messages("q") == [{"role": "user", "content": "q"}]
    msgs = [{"role": "user", "content": parts}]
    copied = prompt_messages(msgs)
    assert copied == msgs and copied[0] is not msgs[0]
    assert prompt_messages(msgs, text_only=True) == [{"role": "user", "content": "ab"}]
    with pytest.raises(ValueError, match="string or chat messages"):
        prompt_messages(3)


def test_prompts_module_has_no_dead_judge_template():
    import toa_graph.prompts as prompts

    assert not hasattr(prompts, "JUDGE_TEMPLATE")


# ---------------------------------------------------------------- synthesis


async def test_synthesis_passes_method_options_and_digests_them(tmp_path):
    from toa_graph.synthesis import config_digest, run_synthesis

    inp = tmp_path / "in.jsonl"
    inp.write_text("".join(json.dumps({"id": f"p{i}", "prompt": f"q{i}?"}) + "\n" for i in (0, 1)))
    agents = fake_agents(("a", "b", "c"), reply=_agg_reply)
    s = await run_synthesis(
        inp, tmp_path / "out", method="moa", agents=agents, reward=_agg_reward,
        context={"budget": 3}, method_options={"aggregator": "c"}, progress=False,
    )  # fmt: skip
    assert s.done == 2 and s.failed == 0
    records = [json.loads(x) for x in (tmp_path / "out" / "records.jsonl").read_text().splitlines()]
    for r in records:
        last = r["samples"][-1]
        assert (last["agent"], last["kind"]) == ("c", "aggregate") and r["best"]["reward"] == 1.0
    plain = config_digest(method="moa", context={"budget": 3}, agents=agents, reward=_agg_reward)
    assert records[0]["config_digest"] != plain  # options are part of what made the record
    assert plain == config_digest(
        method="moa", context={"budget": 3}, agents=agents, reward=_agg_reward, options={}
    )  # no options: the digest of runs before options existed
    with pytest.raises(ValueError, match="its options: aggregator"):
        await run_synthesis(
            inp, tmp_path / "o2", method="moa", agents=agents, reward=_agg_reward,
            method_options={"agregator": "c"}, progress=False,
        )  # fmt: skip
