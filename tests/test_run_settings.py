"""One resolution of a run's settings (``RunSettings.resolve``): the config's method
section, then the caller's knobs, budget and options, checked once against the method;
the commands' shared options (one parent parser) read back into it."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from tests.fakes import fake_agents, hash_reward
from toa_graph.cli import build_parser, subparsers
from toa_graph.commands import run_settings
from toa_graph.config import load_config
from toa_graph.context import MoaContext, ToaContext
from toa_graph.method_spec import InputRejected
from toa_graph.registry import DEFAULT_BUDGET, RunSettings


@pytest.fixture
def cfg(tmp_path: Path):
    p = tmp_path / "c.yaml"
    p.write_text(
        textwrap.dedent("""\
        agents:
          - {name: a, model: m, base_url: "http://127.0.0.1:9/v1"}
          - {name: b, model: m, base_url: "http://127.0.0.1:9/v1"}
        reward: {kind: math}
        method:
          name: moa
          context: {budget: 6, layers: 2, num_references: 1}
          options: {aggregator: b}
        """)
    )
    return load_config(p)


def test_the_configs_section_then_the_callers_knobs_budget_and_options(cfg) -> None:
    s = RunSettings.resolve(cfg)
    assert (s.method, s.knobs, s.options) == (
        "moa",
        {"budget": 6, "layers": 2, "num_references": 1},
        {"aggregator": "b"},
    )
    assert type(s.context) is MoaContext and s.budget == 6 and s.context.layers == 2
    s = RunSettings.resolve(cfg, knobs={"layers": 3, "budget": 9}, budget=4)
    assert s.knobs == {"budget": 4, "layers": 3, "num_references": 1}  # --budget wins
    # another method: the config's knobs it has, none of the config's method's options
    s = RunSettings.resolve(cfg, method="toa", knobs={"alpha": 0.2})
    assert s.knobs == {"budget": 6, "alpha": 0.2} and s.options == {}
    assert type(s.context) is ToaContext
    # default budget only when neither the flags nor the config set one
    assert RunSettings.resolve(method="toa", default_budget=DEFAULT_BUDGET).budget == 16
    assert RunSettings.resolve(method="toa", default_budget=3).budget == 3
    assert RunSettings.resolve(cfg, default_budget=DEFAULT_BUDGET).budget == 6


@pytest.mark.parametrize(
    "kwargs, param, needle",
    [
        ({"knobs": {"alpha": 0.1}}, "context", "has no knob(s) ['alpha']; its knobs: budget=16"),
        ({"knobs": {"layers": 0}}, "context", "context.layers must be >= 1"),
        ({"options": {"agregator": "a"}}, "options", "its options: aggregator"),
        ({"options": {"aggregator": "z"}}, "options.aggregator", "'z' is not one of the agents"),
    ],
)
def test_what_is_wrong_is_named_once(cfg, kwargs, param, needle) -> None:
    with pytest.raises(InputRejected) as err:
        RunSettings.resolve(cfg, **kwargs)
    assert err.value.param == param and needle in str(err.value)
    assert isinstance(err.value, ValueError)  # a UserError: exit 2 on the command line


def test_the_shared_options_are_declared_once_and_read_back(cfg) -> None:
    parsers = subparsers(build_parser())
    for command in ("run", "synthesize", "chat", "serve"):
        options = {s for a in parsers[command]._actions for s in a.option_strings}
        assert {"--config", "--method", "--budget", "--set", "--keep-servers"} <= options
    compare = {s for a in parsers["compare"]._actions for s in a.option_strings}
    assert {"--config", "--set", "--keep-servers"} <= compare and "--method" not in compare
    args = parsers["synthesize"].parse_args(["--set", "layers=3", "--budget", "5"])
    s = run_settings(args, cfg, default_budget=DEFAULT_BUDGET)
    assert (s.method, s.budget, s.context.layers, s.options) == ("moa", 5, 3, {"aggregator": "b"})


async def test_a_resolved_context_runs_a_compiled_graph(cfg) -> None:
    s = RunSettings.resolve(cfg, method="random", budget=3)
    graph = s.compile(agents=fake_agents(), reward=hash_reward)
    out = await graph.ainvoke({"prompt": "q"}, context=s.context)
    assert len(out["samples"]) == 3
