"""``toa-graph synthesize`` before and after a long job: ``--estimate`` (K prompts for
real, kept in the output for the run to resume after), the stable default output
directory, and the printed resume and export commands; against the fake OpenAI-compatible
server."""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fake_servers import FakeServer
from toa_graph import cli
from toa_graph.commands.synthesize import default_output, export_commands, input_label
from toa_graph.synthesis.estimate import extrapolate, format_estimate


@pytest.fixture(scope="module")
def fake_url() -> Iterator[str]:
    with FakeServer(delay=0.01, capacity=16) as server:
        yield server.url


@pytest.fixture
def job(tmp_path: Path, fake_url: str, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """A config with two agents and a 6-prompt input; the working directory is tmp_path."""
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        "agents:\n"
        + "".join(
            f"  - {{name: {n}, model: {n}-model, base_url: '{fake_url}', max_retries: 0}}\n"
            for n in ("alpha", "beta")
        )
        + "reward: {kind: python, target: 'tests.fakes:length_reward'}\n"
    )
    inp = tmp_path / "prompts.jsonl"
    inp.write_text(
        "".join(json.dumps({"id": f"q{i}", "prompt": f"Say {i}."}) + "\n" for i in range(6))
    )
    monkeypatch.chdir(tmp_path)
    return cfg, inp


def _sample(agent: str, inp: int, out: int) -> dict[str, Any]:
    return {"agent": agent, "usage": {"input_tokens": inp, "output_tokens": out}}


def test_extrapolate_scales_per_agent_means_and_wall_time() -> None:
    records = [
        {"samples": [_sample("a", 10, 5), _sample("b", 20, 7)], "totals": {"wall_s": 2.0}},
        {"samples": [_sample("a", 30, 1)], "totals": {"wall_s": 4.0}},
    ]
    est = extrapolate(records, total_prompts=10, concurrency=4, sample_wall_s=5.0, failed=0)
    a, b = est.agents
    assert (a.agent, a.projected_generations, a.projected_input_tokens) == ("a", 10, 200)
    assert (a.projected_output_tokens, b.projected_generations, b.projected_input_tokens) == (
        30,
        5,
        100,
    )
    assert est.mean_prompt_s == 3.0
    assert est.wall_s == 3 * 3.0  # ceil(10 / 4) waves of the mean prompt
    assert est.wall_s_sample_rate == 10 * 5.0 / 2
    table = format_estimate(est)
    assert re.search(r"^total\s+15\s+300\s+65$", table, re.M), table


def test_default_output_is_stable_per_method_and_input() -> None:
    assert default_output("toa", "data/uf.jsonl", None) == Path("runs/toa/uf")
    assert default_output("moa", "data/uf.jsonl", (1, 4)) == Path("runs/moa/uf-shard1of4")
    assert input_label("hf:org/name:cfg") == "org_name_cfg"
    assert export_commands("debate", Path("runs/debate/x"))[1].startswith("toa-graph export tdpo")


def test_estimate_runs_k_prompts_keeps_them_and_the_run_resumes_after_them(
    job: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    cfg, inp = job
    argv = ["synthesize", "--config", str(cfg), "--input", str(inp), "--budget", "4",
            "--concurrency", "2", "--no-progress", "--estimate", "2"]  # fmt: skip
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "estimate from 2 prompts run for real (0 failed" in out
    assert "for all 6 prompts" in out
    rows = dict(re.findall(r"^(alpha|beta|total)\s+(\d+)\s", out, re.M))
    assert int(rows["total"]) == 6 * 4  # TOA spends exactly its budget on every prompt
    assert int(rows.get("alpha", 0)) + int(rows.get("beta", 0)) == 24
    assert re.search(r"wall time: ~[\d.]+ s at --concurrency 2", out)
    assert "kept: 2 prompt(s) in runs/toa/prompts; the run resumes after them" in out
    records = Path("runs/toa/prompts/records.jsonl")
    assert records.read_text().count("\n") == 2
    run_line = out.strip().splitlines()[-1]
    assert run_line.startswith("run it: toa-graph synthesize") and "--estimate" not in run_line
    # the printed command runs the rest: the two estimated prompts are not run again
    assert cli.main(shlex.split(run_line.removeprefix("run it: "))[1:]) == 0
    again = capsys.readouterr().out
    assert "4 done, 2 skipped (already done)" in again
    assert records.read_text().count("\n") == 6


def test_default_output_and_the_printed_resume_command_resumes(
    job: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    cfg, inp = job
    argv = ["synthesize", "--config", str(cfg), "--input", str(inp), "--budget", "2",
            "--limit", "3", "--no-progress", "-v"]  # fmt: skip
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    records = Path("runs/toa/prompts/records.jsonl")
    assert records.read_text().count("\n") == 3
    resumes = re.findall(r"^resume with: (.+)$", out, re.M)
    assert len(resumes) == 2 and resumes[0] == resumes[1]  # printed at the start and the end
    assert resumes[0].endswith("--output runs/toa/prompts")
    assert "export with: toa-graph export sft --input runs/toa/prompts" in out
    assert "toa-graph export dpo --input runs/toa/prompts" in out

    words = shlex.split(resumes[0])
    assert words[0] == "toa-graph"
    words[words.index("--limit") + 1] = "5"
    assert cli.main(words[1:]) == 0
    again = capsys.readouterr().out
    assert "2 done, 3 skipped (already done)" in again
    assert records.read_text().count("\n") == 5


def test_estimate_extrapolates_cost_where_agents_have_prices() -> None:
    priced = {**_sample("a", 10, 5), "cost": 0.25}
    records = [{"samples": [priced, _sample("b", 20, 7)], "totals": {"wall_s": 1.0}}]
    est = extrapolate(records, total_prompts=8, concurrency=4, sample_wall_s=1.0)
    a, b = est.agents
    assert (a.projected_cost, b.projected_cost) == (2.0, None)
    table = format_estimate(est)
    assert re.search(r"^a\s+8\s+80\s+40\s+2$", table, re.M), table
    assert re.search(r"^total\s+.*\s2$", table, re.M) and "count as 0" in table


def test_limit_flags_reach_the_run_and_an_unkeepable_one_exits_2(
    job: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    cfg, inp = job
    base = ["synthesize", "--config", str(cfg), "--input", str(inp), "--budget", "30",
            "--no-progress", "--limit", "2"]  # fmt: skip
    # the config's agents have no prices and no max_tokens: refused before any request
    assert cli.main([*base, "--max-cost-per-prompt", "0.01", "--output", "x"]) == 2
    assert "max_cost_per_prompt needs prices" in capsys.readouterr().err
    assert not (Path.cwd() / "x").exists()
    argv = [*base, "--max-tokens-per-prompt", "400", "--set", "max_tokens=4", "--output", "y"]
    assert cli.main(argv) == 0
    records = [json.loads(line) for line in (Path.cwd() / "y" / "records.jsonl").open()]
    for rec in records:
        assert rec["stopped_by"] == "max_tokens_per_prompt" and rec["context"]["max_tokens"] == 4
        assert rec["totals"]["tokens"]["total_tokens"] <= 400 and len(rec["samples"]) < 30
        assert rec["totals"]["cost"] is None and set(rec["totals"]["by_agent"]) <= {"alpha", "beta"}


def test_another_data_config_is_refused_in_one_line_then_appended_with_force_mixed(
    job: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    cfg, inp = job
    base = ["synthesize", "--config", str(cfg), "--input", str(inp), "--output", "out",
            "--no-progress"]  # fmt: skip
    assert cli.main([*base, "--budget", "2", "--limit", "2"]) == 0
    records = Path("out/records.jsonl")
    before = records.read_bytes()
    capsys.readouterr()

    other = cfg.with_name("other.yaml")  # another model for beta: another data config
    other.write_text(cfg.read_text().replace("model: beta-model", "model: beta-2"))
    for argv, differs in (
        ([*base, "--budget", "3", "--limit", "4"], "context.budget: 2 -> 3"),
        ([*base, "--budget", "2", "--limit", "4", "--config", str(other)],
         'agents.beta.model: "beta-model" -> "beta-2"'),
    ):  # fmt: skip
        assert cli.main(argv) == 2
        captured = capsys.readouterr()
        err = [line for line in captured.err.splitlines() if line.strip()]
        assert len(err) == 1, err
        assert differs in err[0] and "--force-mixed" in err[0] and "--output" in err[0]
        assert "Traceback" not in captured.err
        assert records.read_bytes() == before  # nothing written

    assert cli.main([*base, "--budget", "3", "--limit", "4", "--force-mixed"]) == 0
    assert "2 done, 2 skipped (already done)" in capsys.readouterr().out
    after = records.read_bytes()
    assert after.startswith(before)
    recs = [json.loads(line) for line in after.splitlines()]
    ids = [r["id"] for r in recs]
    assert sorted(ids[:2]) == ["q0", "q1"] and sorted(ids[2:]) == ["q2", "q3"]
    (old,), (new,) = {r["data_digest"] for r in recs[:2]}, {r["data_digest"] for r in recs[2:]}
    assert old != new  # the appended records carry their own data digest
    assert json.loads(Path("out/config.json").read_text())["mixed"] == sorted([old, new])
