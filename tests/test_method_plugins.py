"""A new method is one module and one registry entry: a toy method declared in a temporary
module (its factory, its own context class, one ``register_method`` call) shows up in the
CLI's ``--method`` choices, the server's model list, the contract tests' parametrisation
and the generated Studio files, with no other source file edited. Also: the generated
Studio files are current, and the input pre-check runs in the server and the graph."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakes import fake_agents, hash_reward
from toa_graph import registry
from toa_graph.server.protocol import ChatCompletionRequest
from toa_graph.server.serving import ChatServing, ServingError
from toa_graph.studio import stale_files, studio_files, write_studio_files

ROOT = Path(__file__).resolve().parents[1]

TOY_MODULE = '''
"""A toy method: one answer per budget unit from the first agent, shouted."""

from dataclasses import dataclass
from typing import Any

from langgraph.graph import StateGraph

from toa_graph.agents import as_agent_pool
from toa_graph.context import BaseContext
from toa_graph.method_spec import InputRejected
from toa_graph.registry import MethodSpec, register_method
from toa_graph.rewards.base import as_reward_model
from toa_graph.sampling import (
    FINISH, ContextReader, answer_messages, generate_samples, method_builder, sample_id,
    score_inbox, validate_prompt,
)


@dataclass(kw_only=True)
class ToyContext(BaseContext):
    layers: str = "loud"
    """A knob name MoA also has (an int there): knob names are the method's own."""


def check_toy_input(run_input: Any, ctx: Any, agents: Any) -> None:
    if ctx.layers == "forbidden":
        raise InputRejected("toy: layers='forbidden' cannot run", param="context.layers")


def create_toy_graph(agents: Any, reward: Any, *, defaults: Any = None) -> StateGraph:
    pool, reward_model = as_agent_pool(agents), as_reward_model(reward)
    read_context = ContextReader("toy", defaults, agents=pool.names)  # runs check_toy_input

    async def sample(state: Any, runtime: Any) -> dict[str, Any]:
        ctx = read_context(runtime)
        name = pool.names[0]
        msgs = answer_messages(validate_prompt(state["prompt"]), pool.system_prompt(name))
        samples = await generate_samples(
            pool, name, msgs, ctx, sample_ids=[sample_id(i) for i in range(ctx.budget)],
            kind="fresh", parent=None, layer=0,
        )
        return {"inbox": samples}

    async def reward_node(state: Any) -> dict[str, Any]:
        return await score_inbox(reward_model, state)

    builder = method_builder("sample", read_context)
    builder.add_node("sample", sample)
    builder.add_node("reward", reward_node)
    builder.add_edge("sample", "reward")
    builder.add_edge("reward", FINISH)
    return builder


register_method(
    MethodSpec(
        name="toy",
        factory_path=f"{__name__}:create_toy_graph",
        context=ToyContext,
        description="A toy method for the registry tests.",
        reference="tests/test_method_plugins.py",
        export_kinds=("sft",),
        check_input_path=f"{__name__}:check_toy_input",
    )
)
'''


@pytest.fixture
def toy_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The toy method's module on ``sys.path`` and in ``$TOA_GRAPH_METHODS``, loaded."""
    name = f"toy_method_{os.getpid()}"
    (tmp_path / f"{name}.py").write_text(TOY_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv(registry.PLUGINS_ENV, name)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), str(ROOT)]))
    try:
        assert registry.load_plugins() == ["toy"]
        yield name
    finally:
        registry.unregister_method("toy")
        registry._loaded_plugins.discard(name)
        sys.modules.pop(name, None)


def _method_choices(command: str) -> list[str]:
    from toa_graph.cli import build_parser, subparsers

    parser = subparsers(build_parser())[command]
    (action,) = [a for a in parser._actions if "--method" in a.option_strings]
    return list(action.choices or [])


async def test_a_toy_method_module_with_one_entry_is_everywhere(toy_module: str) -> None:
    # the CLI's --method choices
    for command in ("run", "synthesize", "chat"):
        assert "toy" in _method_choices(command), command
    # the server's model list, and a request served by it
    serving = ChatServing(fake_agents(), hash_reward)
    assert "toy" in [m.id for m in serving.list_models().data]
    req = ChatCompletionRequest(model="toy", messages=[{"role": "user", "content": "q"}], budget=2)
    resp = await serving.complete(req)
    assert resp.x_toa is not None and resp.x_toa["method"] == "toy"
    assert resp.x_toa["samples"] == 2
    # its own knobs: 'layers' is a string here, an int for MoA; the server checks them
    # against the toy's context class, and runs the toy's input pre-check
    ok = serving.prepare(req.model_copy(update={"context": {"layers": "quiet"}}))
    assert ok.context.layers == "quiet"  # type: ignore[attr-defined]
    with pytest.raises(ServingError) as err:
        serving.prepare(req.model_copy(update={"context": {"layers": "forbidden"}}))
    assert err.value.status == 400 and err.value.body.error.param == "context.layers"
    # ... and the graph runs the same pre-check as it starts
    graph = registry.compile_method("toy", agents=fake_agents(), reward=hash_reward)
    with pytest.raises(ValueError, match="layers='forbidden' cannot run"):
        await graph.ainvoke({"prompt": "q"}, context={"layers": "forbidden"})
    # the generated Studio list
    files = studio_files()
    assert "graphs/toy.py" in files and 'studio_graph("toy")' in files["graphs/toy.py"]
    assert '"toy": "./graphs/toy.py:graph"' in files["langgraph.json"]


def test_the_contract_tests_are_parametrised_over_a_registered_method(toy_module: str) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
         "tests/test_compose.py", "tests/test_toa_graph.py", "tests/test_server.py"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    ids = out.stdout.splitlines()
    assert (
        "tests/test_compose.py::test_every_method_answers_messages_and_is_chat_capable[toy]" in ids
    )
    assert "tests/test_toa_graph.py::test_each_invocation_on_a_thread_is_a_fresh_run[toy]" in ids
    assert "tests/test_server.py::test_every_method_serves[toy]" in ids


def test_studio_files_are_generated_from_the_registry(tmp_path: Path) -> None:
    assert stale_files(ROOT) == [], "run: python -m toa_graph.studio --write"
    # the check notices a changed module, a missing one and a leftover one
    for rel, text in studio_files().items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    assert stale_files(tmp_path) == []
    (tmp_path / "graphs" / "moa.py").write_text("graph = None\n")
    (tmp_path / "graphs" / "toa.py").unlink()
    (tmp_path / "graphs" / "gone.py").write_text("")
    assert sorted(stale_files(tmp_path)) == ["graphs/gone.py", "graphs/moa.py", "graphs/toa.py"]
    assert sorted(write_studio_files(tmp_path)) == sorted(
        stale_files(ROOT) or ["graphs/gone.py", "graphs/moa.py", "graphs/toa.py"]
    )
    assert stale_files(tmp_path) == [] and not (tmp_path / "graphs" / "gone.py").exists()


@pytest.mark.parametrize(
    "fields, param, needle",
    [
        ({"budget": 4, "context": {"correct_threshold": 0.5}}, "budget", "too small for one"),
        ({"budget": 16}, "context.correct_threshold", "needs a gold answer"),
    ],
)
async def test_debate_pre_check_runs_in_the_server_and_the_graph(fields, param, needle) -> None:
    agents = fake_agents()
    serving = ChatServing(agents, hash_reward)
    req = ChatCompletionRequest(
        model="debate", messages=[{"role": "user", "content": "q"}], **fields
    )
    with pytest.raises(ServingError) as err:
        serving.prepare(req)
    assert err.value.status == 400 and err.value.body.error.param == param
    assert needle in err.value.body.error.message
    graph = registry.compile_method("debate", agents=agents, reward=hash_reward)
    context = {"budget": fields["budget"], **fields.get("context", {})}
    with pytest.raises(ValueError, match=needle):
        await graph.ainvoke({"prompt": "q"}, context=context)


def test_a_plugin_that_fails_to_load_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(registry.PLUGINS_ENV, "no_such_method_module_r23")
    try:
        with pytest.raises(ValueError, match="'no_such_method_module_r23' failed to load"):
            registry.load_plugins()
        registry._loaded_plugins.discard("no_such_method_module_r23")
        with pytest.warns(UserWarning, match="no_such_method_module_r23"):
            assert registry.load_plugins(strict=False) == []
    finally:
        registry._loaded_plugins.discard("no_such_method_module_r23")
