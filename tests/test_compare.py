"""`compare`: methods x budgets on the same prompts -> table, CSV and a reward-vs-budget PNG."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

from tests.fakes import fake_agents, length_reward
from toa_graph.commands.compare import aggregate, format_table, run_compare
from toa_graph.methods import METHODS


async def test_compare_writes_png_and_csv(tmp_path: Path) -> None:
    inp = tmp_path / "in.jsonl"
    inp.write_text(
        "".join(json.dumps({"id": i, "prompt": f"Tell me about {i}"}) + "\n" for i in range(5))
    )
    methods = [m for m in ("toa", "random", "moa") if m in METHODS]
    rows = await run_compare(
        inp, tmp_path / "cmp", methods=methods, budgets=[2, 4, 8], agents=fake_agents(),
        reward=length_reward, concurrency=3, limit=4, progress=False,
    )  # fmt: skip
    assert len(rows) == 3 * len(methods)
    png = tmp_path / "cmp" / "compare.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    with (tmp_path / "cmp" / "compare.csv").open() as f:
        table = list(csv.DictReader(f))
    assert [(r["method"], int(r["budget"])) for r in table] == [
        (m, b) for m in methods for b in (2, 4, 8)
    ]
    assert all(int(r["prompts"]) == 4 for r in table)
    for r in table:
        assert float(r["mean_generations"]) == float(r["budget"])  # toa, random, moa: exact
    # each cell is a resumable synthesis run on the same prompt ids
    for m in methods:
        ids = {
            json.loads(x)["id"]
            for x in (tmp_path / "cmp" / m / "budget-8" / "records.jsonl").read_text().splitlines()
        }
        assert ids == {"0", "1", "2", "3"}
    text = format_table(rows)
    assert "b=8" in text and all(m in text for m in methods)
    # a rerun resumes: nothing new to do, same numbers
    again = await run_compare(
        inp, tmp_path / "cmp", methods=methods, budgets=[2, 4, 8], agents=fake_agents(),
        reward=length_reward, concurrency=3, limit=4, progress=False,
    )  # fmt: skip
    assert [r["mean_best_reward"] for r in again] == [r["mean_best_reward"] for r in rows]


def test_aggregate_empty_cell() -> None:
    row = aggregate([], method="toa", budget=4, failed=2)
    assert row["prompts"] == 0 and math.isnan(row["mean_best_reward"]) and row["failed"] == 2
    assert "n/a" in format_table([row])


def test_compare_cli(tmp_path: Path, monkeypatch) -> None:
    """The command line, with a `python` reward and agents from a config (no server needed:
    the agents are fake chat models injected through the config loader)."""
    import toa_graph.commands as commands
    from toa_graph.cli import main

    class Cfg:
        agents = fake_agents()
        reward = type("R", (), {"kind": "python"})()
        method = type("M", (), {"name": "toa", "context": {}})()

    import contextlib

    @contextlib.contextmanager
    def fake_project_config(path, keep_servers=False):
        yield Cfg

    monkeypatch.setattr(commands, "project_config", fake_project_config)
    monkeypatch.setattr("toa_graph.rewards.build_reward", lambda cfg, agents=(): length_reward)
    rc = main(
        [
            "compare",
            "--methods",
            "toa",
            "--budgets",
            "2,4",
            "--output",
            str(tmp_path / "c"),
            "--no-progress",
        ]
    )
    assert rc == 0
    assert (tmp_path / "c" / "compare.png").exists() and (tmp_path / "c" / "compare.csv").exists()
    assert main(["compare", "--methods", "nope", "--output", str(tmp_path / "x")]) == 2


async def test_compare_on_the_simulated_benchmark_plots_reward_vs_generations_and_tokens(
    tmp_path: Path,
) -> None:
    from toa_graph.commands.compare import run_simulated

    out = tmp_path / "sim"
    rows = await run_simulated(
        out, methods=["toa", "random"], budgets=[4, 8], prompts=6, progress=False
    )
    for name in ("compare.png", "compare_tokens.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with (out / "compare.csv").open() as f:
        table = list(csv.DictReader(f))
    assert len(table) == 4
    for r in table:
        assert int(r["prompts"]) == 6
        assert float(r["mean_tokens"]) > 0
        # the best answer's true quality is graded and below its (noisy, max-selected) reward
        assert 0 < float(r["mean_true_quality"]) < 2
    # more generations cost more tokens
    toa = [r for r in rows if r["method"] == "toa"]
    assert toa[1]["mean_tokens"] > toa[0]["mean_tokens"]
    assert "TRUE quality" in format_table(rows) and "tokens per prompt" in format_table(rows)
    # same world, fresh agents per cell: a rerun in a new directory gives the same numbers
    again = await run_simulated(
        tmp_path / "sim2", methods=["toa", "random"], budgets=[4, 8], prompts=6, progress=False
    )
    assert [r["mean_true_quality"] for r in again] == [r["mean_true_quality"] for r in rows]


def test_tokens_plot_puts_mean_tokens_on_the_x_axis() -> None:
    from toa_graph.commands.compare import plot

    rows = [
        {"method": "toa", "budget": b, "mean_best_reward": 0.1 * b, "stderr": 0.01,
         "mean_tokens": 100.0 * b + 7}
        for b in (2, 4, 8)
    ]  # fmt: skip
    fig = plot(rows, x="tokens")
    (line,) = fig.axes[0].get_lines()[:1]
    assert list(line.get_xdata()) == [207.0, 407.0, 807.0]
    assert "tokens" in fig.axes[0].get_xlabel()
    fig = plot(rows, x="budget")
    assert list(fig.axes[0].get_lines()[0].get_xdata()) == [2.0, 4.0, 8.0]


def test_compare_cli_simulate(tmp_path: Path, capsys) -> None:
    from toa_graph.cli import main

    rc = main(
        ["compare", "--simulate", "--methods", "toa,ensemble", "--budgets", "5", "--limit", "3",
         "--output", str(tmp_path / "s"), "--no-progress"]
    )  # fmt: skip
    assert rc == 0
    text = capsys.readouterr().out
    assert "TRUE quality" in text and "compare_tokens.png" in text
    assert (tmp_path / "s" / "compare_tokens.png").exists()


def test_compare_all_runs_every_registry_method_and_the_self_moa_variants(
    tmp_path: Path, capsys
) -> None:
    from toa_graph.cli import main
    from toa_graph.commands.compare import compare_entries, entry_method

    entries = compare_entries()
    assert entries[: len(METHODS)] == list(METHODS) and "abmcts" in entries
    assert entry_method("self_moa_seq", {"agent": "x"}) == (
        "moa", {"agent": "x", "proposers": "self", "seq_window": 3}
    )  # fmt: skip
    rc = main(
        ["compare", "--simulate", "--methods", "all", "--budgets", "16", "--limit", "2",
         "--output", str(tmp_path / "s"), "--no-progress"]
    )  # fmt: skip
    assert rc == 0  # debate too: judged by reward on the simulated prompts
    with (tmp_path / "s" / "compare.csv").open() as f:
        rows = {r["method"]: r for r in csv.DictReader(f)}
    assert list(rows) == entries
    assert all(float(r["mean_generations"]) == 16 for m, r in rows.items() if m != "debate")
    assert all(float(r["mean_tokens"]) > 0 for r in rows.values())
    recs = [json.loads(x) for x in (tmp_path / "s" / "self_moa" / "budget-16" / "records.jsonl")
            .read_text().splitlines()]  # fmt: skip
    assert all({s["agent"] for s in r["samples"]} == {recs[0]["samples"][0]["agent"]} for r in recs)
    assert "self_moa_seq" in capsys.readouterr().out


async def test_compare_on_the_simulated_agents_plots_reward_against_cost_for_every_method(
    tmp_path: Path,
) -> None:
    from toa_graph.commands.compare import run_simulated
    from toa_graph.simulate import SimWorld, sim_prices

    methods = ["toa", "moa", "seq_refine", "ensemble", "prs", "random"]
    out = tmp_path / "sim"
    rows = await run_simulated(out, methods=methods, budgets=[5, 10], prompts=3, progress=False)
    assert (out / "compare_cost.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with (out / "compare.csv").open() as f:
        table = list(csv.DictReader(f))
    assert {r["method"] for r in table} == set(methods)
    for r in table:  # every cell has a cost, and more generations cost more
        assert float(r["mean_cost"]) > 0
    for m in methods:
        small, large = (r["mean_cost"] for r in rows if r["method"] == m)
        assert large > small, m
    # random asks only the first (dearest) agent: its cost is its tokens at that price
    records = [json.loads(x) for x in (out / "random" / "budget-5" / "records.jsonl").open()]
    p = sim_prices(SimWorld())["sim-a"]
    for rec in records:
        u = rec["totals"]["tokens"]
        bill = (u["input_tokens"] * p.input + u["output_tokens"] * p.output) / 1e6
        assert rec["totals"]["cost"] == pytest.approx(bill, rel=1e-12)
    assert "mean cost per prompt" in format_table(rows)
