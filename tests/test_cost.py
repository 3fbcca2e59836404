"""What a run costs: prices, the cost ledger, and budgets in tokens or money (issue 26).

Runs against the fake OpenAI-compatible server (tests/fake_openai_server.py), which
honours ``max_tokens`` and reports usage as word counts, so every figure here comes from
a real HTTP response's ``usage``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

from tests.fake_servers import FakeServer
from tests.fakes import hash_reward
from toa_graph import METHODS
from toa_graph.config import AgentConfig, ConfigError, load_config
from toa_graph.cost import Prices, input_bound, ledger, plays_that_fit, usage_cost
from toa_graph.errors import UserError
from toa_graph.sampling import aggregate_messages, answer_messages, refine_messages

MAX_TOKENS = 6
PRICES = {
    "a": Prices(input=1.5, output=6.0),
    "b": Prices(input=0.25, output=2.0, reasoning=3.0),
}
PROMPT = "What is the capital of France? Answer in one word."


@pytest.fixture(scope="module")
def server() -> Iterator[FakeServer]:
    with FakeServer(delay=0.0, capacity=64, deterministic=True) as srv:
        yield srv


def agents(url: str, *, priced: bool = True, max_tokens: int | None = MAX_TOKENS) -> list[Any]:
    return [
        AgentConfig(
            name=n, model=n, base_url=url, max_tokens=max_tokens,
            price_per_million=PRICES[n] if priced else None,
        )
        for n in ("a", "b")
    ]  # fmt: skip


def expected_cost(usage: dict[str, Any], p: Prices) -> Fraction:
    """The bill, written out independently of toa_graph.cost."""
    thought = usage.get("reasoning_tokens", 0) if p.reasoning is not None else 0
    total = Fraction(usage["input_tokens"]) * Fraction(p.input)
    total += Fraction(usage["output_tokens"] - thought) * Fraction(p.output)
    total += Fraction(thought) * Fraction(p.reasoning or 0)
    return total / 1_000_000


# ---------------------------------------------------------------- prices and config


def test_usage_cost_bills_reasoning_apart_only_when_priced_apart() -> None:
    usage = {"input_tokens": 100, "output_tokens": 50, "reasoning_tokens": 30}
    as_output = usage_cost(usage, Prices(input=1, output=4))
    apart = usage_cost(usage, Prices(input=1, output=4, reasoning=10))
    assert as_output == Fraction(100 * 1 + 50 * 4, 1_000_000)
    assert apart == Fraction(100 * 1 + 20 * 4 + 30 * 10, 1_000_000)


def _write(tmp_path: Path, agents_yaml: str, context: str = "") -> Path:
    path = tmp_path / "cfg.yaml"
    method = f"method:\n  name: toa\n  context: {{{context}}}\n" if context else ""
    path.write_text(
        "agents:\n" + agents_yaml + "reward:\n  kind: math\n" + method, encoding="utf-8"
    )
    return path


def test_negative_price_is_a_config_error_naming_file_and_line(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "  - name: a\n    model: a\n    base_url: http://127.0.0.1:1/v1\n"
        "    price_per_million:\n      input: 1.0\n      output: -2.0\n",
    )
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert f"{path}:7" in str(err.value) and "price_per_million.output" in str(err.value)


def test_money_budget_with_an_unpriced_agent_is_a_config_error(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "  - name: a\n    model: a\n    base_url: http://127.0.0.1:1/v1\n    max_tokens: 8\n"
        "    price_per_million: {input: 1, output: 2}\n"
        "  - name: b\n    model: b\n    base_url: http://127.0.0.1:1/v1\n    max_tokens: 8\n",
        context="max_cost_per_prompt: 0.5",
    )
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(path) in str(err.value)
    assert "max_cost_per_prompt" in str(err.value) and "['b']" in str(err.value)


def test_a_limit_needs_every_agents_max_tokens(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "  - name: a\n    model: a\n    base_url: http://127.0.0.1:1/v1\n",
        context="max_tokens_per_prompt: 500",
    )
    with pytest.raises(ConfigError, match="max_tokens_per_prompt needs each play's max_tokens"):
        load_config(path)
    # the cli's knobs (--set / --max-cost-per-prompt) are checked the same way
    from toa_graph.registry import RunSettings

    cfg = load_config(_write(tmp_path, "  - name: a\n    model: a\n    base_url: http://x/v1\n"))
    with pytest.raises(UserError, match="max_cost_per_prompt needs prices"):
        RunSettings.resolve(cfg, method="toa", knobs={"max_cost_per_prompt": 1.0, "max_tokens": 8})


async def test_a_graph_refuses_an_unpriced_money_budget_before_any_request(server) -> None:
    server.reset_stats()
    graph = METHODS["toa"](agents=agents(server.url, priced=False), reward=hash_reward).compile()
    with pytest.raises(UserError, match="max_cost_per_prompt"):
        await graph.ainvoke({"prompt": PROMPT}, context={"max_cost_per_prompt": 1.0})
    assert server.stats()["requests"] == 0


def test_plays_that_fit_stops_at_the_first_play_over_either_limit() -> None:
    bounds = [(10, 0.5), (10, 0.5), (10, 0.5)]
    assert plays_that_fit((0, 0.0), bounds, max_tokens_per_prompt=25, max_cost_per_prompt=None) == (
        2,
        "max_tokens_per_prompt",
    )
    assert plays_that_fit(
        (0, 0.0), bounds, max_tokens_per_prompt=None, max_cost_per_prompt=1.2
    ) == (
        2,
        "max_cost_per_prompt",
    )
    assert plays_that_fit((0, 0.0), bounds, max_tokens_per_prompt=30, max_cost_per_prompt=1.5) == (
        3,
        None,
    )


# ---------------------------------------------------------------- the ledger


@pytest.mark.parametrize("method", ["toa", "ensemble", "moa"])
async def test_record_cost_is_the_sum_over_its_samples_at_the_configured_prices(
    server, tmp_path: Path, method: str
) -> None:
    from toa_graph.synthesis import read_records, run_synthesis

    inp = tmp_path / "in.jsonl"
    inp.write_text(
        "".join(json.dumps({"id": f"p{i}", "prompt": f"{PROMPT} ({i})"}) + "\n" for i in range(3))
    )
    out = tmp_path / "out"
    knobs = {"budget": 6, **({"layers": 2} if method == "moa" else {})}  # layers: MoA's own
    summary = await run_synthesis(
        inp, out, method=method, agents=agents(server.url), reward=hash_reward,
        context=knobs, progress=False,
    )  # fmt: skip
    records = list(read_records(out))
    assert summary.done == 3 == len(records)
    total = 0.0
    for rec in records:
        samples = rec["samples"]
        for s in samples:  # every sample: its server-reported usage at its agent's prices
            assert s["cost"] == float(expected_cost(s["usage"], PRICES[s["agent"]]))
        assert rec["totals"]["cost"] == math.fsum(s["cost"] for s in samples)
        by_agent = rec["totals"]["by_agent"]
        assert set(by_agent) == {"a", "b"}
        for name, row in by_agent.items():
            mine = [s for s in samples if s["agent"] == name]
            assert row["generations"] == len(mine)
            for k in ("input_tokens", "output_tokens", "total_tokens"):
                assert row[k] == sum(s["usage"][k] for s in mine)
            assert row["cost"] == math.fsum(s["cost"] for s in mine)
        assert (
            sum(r["total_tokens"] for r in by_agent.values())
            == (rec["totals"]["tokens"]["total_tokens"])
        )
        total += rec["totals"]["cost"]
    assert summary.cost == pytest.approx(total, rel=1e-12)
    from toa_graph.commands.synthesize import format_summary, format_table

    table = format_table(summary)
    assert table.splitlines()[0].split()[-1] == "cost" and "| cost " in format_summary(summary)


def test_ledger_without_prices_has_no_cost() -> None:
    usage = {"input_tokens": 3, "output_tokens": 4, "total_tokens": 7}
    spend = ledger([{"agent": "x", "usage": usage}])
    assert spend["cost"] is None and spend["by_agent"]["x"]["cost"] is None
    assert spend["by_agent"]["x"]["total_tokens"] == 7


# ---------------------------------------------------------------- budgets in tokens or money


def _play(name: str, msgs: list[dict[str, Any]]) -> tuple[int, float]:
    inp, p = input_bound(msgs), PRICES[name]
    return inp + MAX_TOKENS, (inp * p.input + MAX_TOKENS * p.worst_output) / 1_000_000


def _step_worst(method: str, samples: list[dict[str, Any]]) -> tuple[int, float]:
    """An upper bound of the worst case of the step the method did not start."""
    longest = max((s["text"] for s in samples), key=lambda t: len(t.encode()), default="")
    names = ["a", "b"]
    if method == "ensemble":  # a wave's next answer: one fresh play
        plays = [_play(n, answer_messages(PROMPT)) for n in names]
        return max(t for t, _ in plays), max(c for _, c in plays)
    if method in ("toa", "abmcts"):  # one play: any agent, fresh or refining any answer so far
        plays = [_play(n, m(n)) for n in names for m in (
            lambda n: answer_messages(PROMPT), lambda n: refine_messages(PROMPT, longest))]  # fmt: skip
        return max(t for t, _ in plays), max(c for _, c in plays)
    # moa: one whole layer, every agent shown every agent's answer
    plays = [_play(n, aggregate_messages(PROMPT, [longest] * len(names))) for n in names]
    return sum(t for t, _ in plays), sum(c for _, c in plays)


LIMITS = {"max_tokens_per_prompt": 1500, "max_cost_per_prompt": 0.0015}
SCALE = {"toa": 1, "abmcts": 1, "ensemble": 1, "moa": 5}
"""MoA's step is a whole layer of long aggregate prompts: a larger limit, several layers."""


@pytest.mark.parametrize("knob", list(LIMITS))
@pytest.mark.parametrize("method", ["toa", "abmcts", "ensemble", "moa"])
async def test_a_budget_in_tokens_or_money_is_never_passed_and_nearly_spent(
    server, method: str, knob: str
) -> None:
    limit = LIMITS[knob] * SCALE[method]
    budget = 200
    graph = METHODS[method](agents=agents(server.url), reward=hash_reward).compile()
    context = {"budget": budget, knob: limit, "layers": budget // 2}
    out = await graph.ainvoke({"prompt": PROMPT}, context=context)
    samples = out["samples"]
    assert out["stopped_by"] == knob  # the limit ended the search, not the budget
    assert 0 < len(samples) < budget
    tokens = sum(s["usage"]["total_tokens"] for s in samples)
    cost = math.fsum(s["cost"] for s in samples)
    spent = tokens if knob == "max_tokens_per_prompt" else cost
    worst = _step_worst(method, samples)[0 if knob == "max_tokens_per_prompt" else 1]
    assert spent <= limit  # never passed
    assert spent >= limit - worst  # and stopped only when the next step could pass it
    assert out["best"] is not None


@pytest.mark.parametrize("method", ["random", "prs", "seq_refine", "debate"])
async def test_every_other_method_keeps_a_token_budget(server, method: str) -> None:
    limit = 700
    graph = METHODS[method](agents=agents(server.url), reward=hash_reward).compile()
    out = await graph.ainvoke(
        {"prompt": PROMPT, "reference": "Paris"},
        context={"budget": 100, "max_tokens_per_prompt": limit, "rounds": 30},
    )
    samples = out["samples"]
    assert sum(s["usage"]["total_tokens"] for s in samples) <= limit
    assert out["stopped_by"] == "max_tokens_per_prompt" and len(samples) < 100


async def test_without_limits_nothing_changes(server) -> None:
    graph = METHODS["ensemble"](agents=agents(server.url), reward=hash_reward).compile()
    out = await graph.ainvoke({"prompt": PROMPT}, context={"budget": 5})
    assert len(out["samples"]) == 5 and "stopped_by" not in out
    assert [s["agent"] for s in out["samples"]] == ["a", "a", "a", "b", "b"]
