"""Every bad input a new user tripped on ends in one line on stderr and exit 2 (no
traceback unless -v), including the errors a graph raises before it spends anything.
Agents are the fake OpenAI-compatible server (tests/fake_openai_server.py)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fake_servers import spawn, stop_process
from toa_graph import cli
from toa_graph.methods.debate import NO_GOLD_ANSWER


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    proc, port = spawn("tests.fake_openai_server", "--delay", "0", "--capacity", "8")
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        stop_process(proc)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _config(path: Path, *urls: str) -> str:
    agents = "".join(
        f"  - {{name: a{i}, model: m{i}, base_url: '{u}', max_retries: 0}}\n"
        for i, u in enumerate(urls)
    )
    path.write_text(
        f"agents:\n{agents}reward: {{kind: python, target: 'tests.fakes:hash_reward'}}\n",
        encoding="utf-8",
    )
    return str(path)


# (argv with {cfg}/{down}/{tmp} placeholders, what the one line says)
CASES: dict[str, tuple[list[str], str]] = {
    "unknown agent": (
        ["run", "hi", "--config", "{cfg}", "--method", "random", "--set", "agent=zzz"],
        "context.agent: 'zzz' is not one of the agents",
    ),
    "budget 0 (run)": (
        ["run", "hi", "--config", "{cfg}", "--budget", "0"],
        "--budget must be >= 1",
    ),
    "budget 0 (synthesize)": (
        ["synthesize", "--config", "{cfg}", "--budget", "0", "--output", "{tmp}/o"],
        "--budget must be >= 1",
    ),
    "budget 0 (serve)": (["serve", "--config", "{cfg}", "--budget", "0"], "--budget must be >= 1"),
    "budget 0 as a knob": (
        ["run", "hi", "--config", "{cfg}", "--set", "budget=0"],
        "context.budget must be >= 1",
    ),
    "--set without =": (["run", "hi", "--config", "{cfg}", "--set", "alpha"], "KNOB=VALUE"),
    "unknown knob": (["run", "hi", "--config", "{cfg}", "--set", "bogus=1"], "no knob(s)"),
    "unknown knob (chat)": (["chat", "--config", "{cfg}", "--set", "bogus=1"], "no knob(s)"),
    "bad knob value": (["run", "hi", "--config", "{cfg}", "--set", "tau=0"], "tau must be > 0"),
    "missing config": (["run", "hi", "--config", "{tmp}/nope.yaml"], "config file not found"),
    "unreachable agent": (["run", "hi", "--config", "{down}"], "agent 'a0' is unreachable"),
    "unreachable agent (synthesize)": (
        ["synthesize", "--config", "{down}", "--output", "{tmp}/o2"],
        "agent 'a0' is unreachable",
    ),
    "missing input": (
        ["synthesize", "--config", "{cfg}", "--input", "{tmp}/none.jsonl", "--output", "{tmp}/o3"],
        "none.jsonl",
    ),
    "debate budget below one round (raised in the graph)": (
        [
            "run",
            "7?",
            "--config",
            "{cfg}",
            "--method",
            "debate",
            "--budget",
            "1",
            "--reference",
            "7",
        ],
        "too small for one debate round",
    ),
    "debate without a gold answer (raised in the graph)": (
        ["run", "hi", "--config", "{cfg}", "--method", "debate"],
        NO_GOLD_ANSWER.splitlines()[0][:40],
    ),
    "launch --model-path without =": (
        [
            "launch",
            "--config",
            "{cfg}",
            "--endpoints-out",
            "{tmp}/e.yaml",
            "--model-path",
            "x",
            "--dry-run",
        ],
        "--model-path expects NAME=PATH",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_bad_input_is_one_line_and_exit_2(
    case: str, endpoint: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv, says = CASES[case]
    cfg = _config(tmp_path / "cfg.yaml", endpoint, endpoint)
    down = _config(tmp_path / "down.yaml", f"http://127.0.0.1:{_free_port()}/v1", endpoint)
    argv = [a.format(cfg=cfg, down=down, tmp=tmp_path) for a in argv]
    assert cli.main(argv) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1, err
    assert says in err[0]
    assert "Traceback" not in err[0]


def test_verbose_adds_the_traceback(
    endpoint: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = _config(tmp_path / "cfg.yaml", endpoint)
    assert cli.main(["run", "hi", "--config", cfg, "--set", "agent=zzz", "--method", "random", "-v"]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert "Traceback" in err and err.rstrip().splitlines()[-1].startswith("context.agent: 'zzz'")


def test_the_server_answers_a_run_the_method_cannot_start_with_a_400() -> None:
    """Debate's budget below one round is found by the method's input pre-check before any
    generation, for a plain and a streamed request alike: the server answers 400 with its
    one line, not a 500."""
    import openai

    from tests.fakes import fake_agents, hash_reward
    from tests.test_server import _Server
    from toa_graph.server import build_app

    app = build_app(fake_agents(("a", "b", "c")), hash_reward)
    with _Server(app) as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="x", max_retries=0)
        for stream in (False, True):
            with pytest.raises(openai.BadRequestError) as ei:
                out = client.chat.completions.create(
                    model="debate",
                    messages=[{"role": "user", "content": "7?"}],
                    extra_body={"budget": 1, "reference": "7"},
                    stream=stream,
                )
                list(out) if stream else None  # type: ignore[call-overload]
            body = ei.value.body
            assert isinstance(body, dict) and "too small for one debate round" in body["message"]
            assert "\n" not in body["message"]


async def test_a_debate_prompt_that_cannot_be_judged_is_recorded_as_skipped_once(
    tmp_path: Path,
) -> None:
    """In a synthesis run, a prompt debate cannot judge (no gold answer, no threshold) is
    a record marked ``skipped`` with the reason, spends nothing, is not a failure, and the
    next run does not try it again; the judged prompt runs as usual."""
    import json

    from tests.fakes import fake_agents, hash_reward
    from toa_graph.commands.synthesize import format_summary
    from toa_graph.synthesis import run_synthesis
    from toa_graph.synthesis.inputs import PromptItem

    items = [
        PromptItem(id="open", prompt="Tell me a story", reference=None, fields={}, line=1),
        PromptItem(id="math", prompt="7?", reference="7", fields={}, line=2),
    ]
    agents = fake_agents(("a", "b"))
    opts = {"method": "debate", "reward": hash_reward, "context": {"budget": 16}}
    s1 = await run_synthesis(items, tmp_path, agents=agents, progress=False, **opts)  # type: ignore[arg-type]
    records = {
        r["id"]: r for r in map(json.loads, (tmp_path / "records.jsonl").read_text().splitlines())
    }
    assert set(records) == {"open", "math"} and s1.failed == 0 and s1.done == 1
    assert records["open"]["skipped"] == NO_GOLD_ANSWER and records["open"]["samples"] == []
    assert records["math"]["samples"] and "skipped" not in records["math"]
    assert "1 prompt(s) the method cannot run, recorded as skipped" in format_summary(s1)
    s2 = await run_synthesis(items, tmp_path, agents=agents, progress=False, **opts)  # type: ignore[arg-type]
    assert s2.done == 0 and s2.skipped == 2 and s2.failed == 0


async def test_an_export_over_two_runs_of_the_same_prompts_says_what_it_left_out(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.fakes import fake_agents, hash_reward
    from toa_graph.synthesis import run_synthesis
    from toa_graph.synthesis.inputs import PromptItem

    items = [
        PromptItem(id=f"q{i}", prompt=f"question {i}", reference=None, fields={}, line=i + 1)
        for i in range(3)
    ]
    for method in ("toa", "random"):
        await run_synthesis(
            items, tmp_path / method, method=method, agents=fake_agents(), reward=hash_reward,
            context={"budget": 4}, progress=False,
        )  # fmt: skip
    argv = ["export", "sft", "--input", str(tmp_path / "toa"), str(tmp_path / "random"),
            "--output", str(tmp_path / "sft.jsonl")]  # fmt: skip
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "3 rows from 3 records" in out
    assert f"3 left out of {tmp_path / 'random'}: id already read from {tmp_path / 'toa'}" in out


@pytest.mark.parametrize(
    ("line", "says"),
    [("/set bogus=1", "/set: no knob(s) ['bogus']"), ("/set budget=0", "/set: method 'toa': context.budget"),
     ("/set alpha", "/set: --set expects KNOB=VALUE")],
)  # fmt: skip
def test_chat_set_of_a_bad_knob_is_one_line(
    line: str, says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.fakes import fake_agents, hash_reward
    from toa_graph.commands.chat import ChatSession
    from toa_graph.rewards import as_reward_model

    agents = fake_agents()
    session = ChatSession(dict(agents), as_reward_model(hash_reward), "toa", {}, list(agents))
    assert session.command(line) is True
    out = [x for x in capsys.readouterr().out.splitlines() if x.strip()]
    assert len(out) == 1 and out[0].startswith(says), out
    assert session.knobs == {}
