"""Fault injection: flaky agent endpoints, reward failures, SIGKILL, bad input, secrets.

Agent endpoints are :class:`tests.fault_server.FaultServer` instances on 127.0.0.1 that
fail in scripted ways; every scenario checks that retries happened (counted at the
server, or in the client's retry log when nothing listens), that a failed play is
recorded on its sample (error set, reward None) while the search goes on with the other
agents, and that no prompt is lost or written twice.

With ``TOA_FAULT_REPORT=<file>`` each scenario appends one JSON line (what was injected,
what happened, records lost, duplicates); ``benchmarks/fault_report.py`` runs this file
that way and prints the table of docs/faults.md.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import math
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.fake_servers import spawn, stop_process
from tests.fakes import fake_agents, hash_reward
from tests.fault_server import FaultServer, free_port
from toa_graph.agents import AgentPool
from toa_graph.config import AgentConfig, ConfigError, HFRewardConfig, load_config
from toa_graph.exports import dpo_rows, ranked_samples, sft_rows
from toa_graph.methods import METHODS
from toa_graph.rewards.base import RewardError
from toa_graph.rewards.batching import BatchingReward
from toa_graph.synthesis import PromptItem, parse_jsonl, run_synthesis

REPO = Path(__file__).resolve().parent.parent
REPORT = os.environ.get("TOA_FAULT_REPORT")


def report(
    category: str,
    case: str,
    outcome: str,
    *,
    lost: int | None = None,
    duplicates: int | None = None,
) -> None:
    """One line of the fault report (only when TOA_FAULT_REPORT names a file); ``None``
    where records are not involved."""
    if REPORT:
        with open(REPORT, "a", encoding="utf-8") as f:
            row = {"category": category, "case": case, "outcome": outcome}
            f.write(json.dumps({**row, "lost": lost, "duplicates": duplicates}) + "\n")


@pytest.fixture(autouse=True)
def fast_client_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """The openai client's first retry waits 0.5-1 s; 20 ms keeps the suite fast (the
    retries themselves, and Retry-After, are unchanged)."""
    import openai._base_client as base

    monkeypatch.setattr(base, "INITIAL_RETRY_DELAY", 0.02)


def agent_cfg(name: str, url: str, **kw: Any) -> AgentConfig:
    opts: dict[str, Any] = {"max_retries": 1, "timeout_s": 5.0, **kw}
    return AgentConfig(name=name, model=f"{name}-model", base_url=url, **opts)


def items(*prompts: str) -> list[PromptItem]:
    data = "".join(json.dumps({"id": f"p{i}", "prompt": p}) + "\n" for i, p in enumerate(prompts))
    res = parse_jsonl(data)
    assert not res.errors
    return res.items


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


@dataclass
class Outcome:
    records: list[dict[str, Any]]
    failed: list[dict[str, Any]]
    summary: Any

    def lost(self, ids: Sequence[str]) -> int:
        """Input prompts with neither a record nor a failed.jsonl entry."""
        seen = {r["id"] for r in self.records} | {f["id"] for f in self.failed}
        return len(set(ids) - seen)

    def duplicates(self) -> int:
        return sum(n - 1 for n in Counter(r["id"] for r in self.records).values())


async def synth(out: Path, its: list[PromptItem], agents: Any, **kw: Any) -> Outcome:
    opts: dict[str, Any] = {
        "method": "toa",
        "reward": hash_reward,
        "context": {"budget": 5},
        "concurrency": 3,
        "progress": False,
        **kw,
    }
    s = await run_synthesis(its, out, agents=agents, **opts)
    return Outcome(read_jsonl(out / "records.jsonl"), read_jsonl(out / "failed.jsonl"), s)


def no_nan(path: Path) -> bool:
    text = path.read_text() if path.exists() else ""
    return "NaN" not in text and "Infinity" not in text


# ================================================================ agent endpoint faults

AGENT_FAULTS: dict[str, tuple[bool, str]] = {
    # fault -> (retried, text expected in the sample's error)
    "refused": (True, "Connection"),
    "reset": (True, "Connection"),
    "500": (True, "HTTP 500"),
    "503": (True, "HTTP 503"),
    "429": (True, "HTTP 429"),
    "timeout": (True, "Timeout"),
    "empty_body": (True, "JSONDecodeError"),
    "truncated_json": (True, "JSONDecodeError"),
    "non_json": (True, "Unexpected response type"),
    "empty_completion": (True, "empty response"),
    "context_length": (False, "maximum context length"),
}


def retry_logs(caplog: pytest.LogCaptureFixture) -> int:
    """Retries made (the retry policy logs each one; the clients' own retries are off)."""
    return sum("retrying request" in r.getMessage().lower() for r in caplog.records)


@pytest.mark.parametrize("fault", list(AGENT_FAULTS))
async def test_one_faulty_agent_fails_its_plays_and_the_search_goes_on(
    fault: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    retried, expect = AGENT_FAULTS[fault]
    caplog.set_level(logging.INFO)
    srv_fault = "ok" if fault == "refused" else fault
    with FaultServer(per_model={"bad-model": srv_fault}, hang_s=5) as srv:
        bad_url = f"http://127.0.0.1:{free_port()}/v1" if fault == "refused" else srv.url
        pool = AgentPool(
            [
                agent_cfg("good", srv.url),
                agent_cfg("bad", bad_url, timeout_s=1.0 if fault == "timeout" else 5.0),
            ],
            retry_backoff_s=0.01,
        )
        its = items("What is 2 + 2?", "Name a colour.", "Say hi.")
        res = await synth(tmp_path / "out", its, pool)
        bad_requests = srv.requests(model="bad-model")

    assert res.summary.failed == 0 and len(res.records) == 3
    n_bad = 0
    for rec in res.records:
        samples = rec["samples"]
        assert len(samples) == 5  # the budget is spent: failed plays count
        bad = [s for s in samples if s["agent"] == "bad"]
        good = [s for s in samples if s["agent"] == "good"]
        assert bad, "every agent is tried at least once"
        for s in bad:
            assert s["reward"] is None and expect in s["error"], s
        for s in good:
            assert s["error"] is None and isinstance(s["reward"], float)
        assert rec["best"]["agent"] == "good"
        assert rec["shortfall"] == len(bad) and rec["totals"]["failed_generations"] == len(bad)
        assert any(expect in e for e in rec["errors"])
        n_bad += len(bad)
    attempts = 2 if retried else 1  # max_retries=1
    if fault == "refused":
        assert bad_requests == 0 and retry_logs(caplog) == n_bad * (attempts - 1)
    else:
        assert bad_requests == n_bad * attempts, (bad_requests, n_bad)
    lost, dup = res.lost([i.id for i in its]), res.duplicates()
    assert lost == 0 and dup == 0
    how = f"{attempts} attempts each" if retried else "1 attempt each: a 4xx is not retried"
    report(
        "agent endpoint",
        fault,
        f"{n_bad} plays failed ({how}), recorded on their samples; 3/3 prompts complete",
        lost=lost,
        duplicates=dup,
    )


async def test_429_honours_retry_after() -> None:
    with FaultServer(per_model={"m-model": ["429", "429"]}, retry_after_s=0.3) as srv:
        pool = AgentPool([agent_cfg("m", srv.url, max_retries=2)])
        [gen] = await pool.generate("m", [{"role": "user", "content": "hi"}])
        times = [r.t for r in srv.log]
    assert gen.error is None and gen.text
    assert len(times) == 3
    assert all(b - a >= 0.29 for a, b in itertools.pairwise(times)), times


async def test_flaky_endpoint_recovers_within_the_retries() -> None:
    """One bad answer of each kind, then good ones: every generation succeeds."""
    kinds = ["500", "503", "reset", "empty_body", "truncated_json", "non_json", "empty_completion"]
    script = [x for f in kinds for x in (f, "ok")]  # each fault once, then an answer
    with FaultServer(per_model={"m-model": script}) as srv:
        pool = AgentPool([agent_cfg("m", srv.url, max_retries=2)], retry_backoff_s=0.01)
        gens = [
            (await pool.generate("m", [{"role": "user", "content": f"q{i}"}]))[0]
            for i in range(len(kinds))
        ]
        faults = srv.faults()
    assert all(g.error is None and g.text for g in gens), [g.error for g in gens]
    assert faults == {**dict.fromkeys(kinds, 1), "ok": len(kinds)}


async def test_n_choices_with_empty_completions_are_errors_not_scored_blanks() -> None:
    with FaultServer(per_model={"m-model": "empty_completion"}) as srv:
        pool = AgentPool([agent_cfg("m", srv.url, supports_n=True)])
        gens = await pool.generate("m", [{"role": "user", "content": "hi"}], n=3)
    assert [g.error for g in gens] == ["empty response"] * 3


# ================================================================ all agents down


@pytest.mark.parametrize("fault", ["refused", "503", "reset", "context_length", "empty_completion"])
async def test_all_agents_down_fails_the_prompt_with_its_reason_and_the_job_goes_on(
    fault: str, tmp_path: Path
) -> None:
    _retried, expect = AGENT_FAULTS[fault]
    its = items("What is 1 + 1?", "DOWN: this prompt breaks every agent", "Say hi.")
    out = tmp_path / "out"
    with FaultServer(when=[("DOWN", "ok" if fault == "refused" else fault)]) as srv:
        url = f"http://127.0.0.1:{free_port()}/v1" if fault == "refused" else srv.url
        names = ("a", "b")
        pool = AgentPool([agent_cfg(n, url) for n in names], retry_backoff_s=0.01)
        res = await synth(out, its, pool)
        ids = [i.id for i in its]
        if fault == "refused":  # nothing listens: every prompt fails, none is lost
            assert res.summary.failed == 3 and res.records == []
            assert all(expect in f["error"] for f in res.failed)
        else:
            assert (res.summary.done, res.summary.failed) == (2, 1)
            [f] = res.failed
            assert f["id"] == "p1" and f["line"] == 2
            assert (
                f["error"].startswith("no usable sample (5 generations)") and expect in f["error"]
            )
            assert sorted(r["id"] for r in res.records) == ["p0", "p2"]
            assert all(r["shortfall"] == 0 for r in res.records)
        lost, dup = res.lost(ids), res.duplicates()
        assert lost == 0 and dup == 0
        # the failed prompt is retried by the next run (here: the endpoint is back)
        srv.when = []
        pool = AgentPool([agent_cfg(n, srv.url) for n in names], retry_backoff_s=0.01)
        again = await synth(out, its, pool)
    assert again.summary.failed == 0 and sorted(r["id"] for r in again.records) == ids
    assert again.duplicates() == 0 and again.failed == []
    report(
        "all agents down",
        fault,
        f"{res.summary.failed} prompt(s) recorded failed with the reason; the others done; "
        "retried on resume",
        lost=lost,
        duplicates=dup,
    )


async def test_hanging_endpoint_longer_than_the_prompt_deadline(tmp_path: Path) -> None:
    """Agents whose timeout (30 s) outlasts the prompt deadline: the prompt fails on time
    with the reason, the job goes on and does not wait for the hung requests."""
    its = items("fine", "DOWN hangs", "also fine")
    with FaultServer(when=[("DOWN", "timeout")], hang_s=30) as srv:
        pool = AgentPool([agent_cfg(n, srv.url, timeout_s=30) for n in ("a", "b")])
        t0 = time.monotonic()
        res = await synth(tmp_path / "out", its, pool, prompt_timeout_s=1.0)
        wall = time.monotonic() - t0
    assert wall < 10
    assert res.summary.done == 2 and [f["id"] for f in res.failed] == ["p1"]
    assert "timed out after 1.0 s" in res.failed[0]["error"]
    report(
        "all agents down",
        "hang > prompt deadline",
        f"prompt failed after its 1 s deadline (agents' timeout 30 s); job took {wall:.1f} s",
        lost=res.lost([i.id for i in its]),
        duplicates=res.duplicates(),
    )


def start_fault_process(*args: str, env: dict[str, str] | None = None) -> tuple[Any, int]:
    return spawn("tests.fault_server", *args, env=env or cli_env())


def cli_env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), **extra}


def write_cfg(
    path: Path, port: int, *, names: Sequence[str] = ("alpha", "beta"), **kw: Any
) -> Path:
    opts = {"max_retries": 1, "timeout_s": 10, **kw}
    extra = "".join(f", {k}: {v}" for k, v in opts.items())
    path.write_text(
        "agents:\n"
        + "".join(
            f"  - {{name: {n}, model: {n}-model, base_url: 'http://127.0.0.1:{port}/v1'{extra}}}\n"
            for n in names
        )
        + "reward: {kind: python, target: 'tests.fakes:hash_reward'}\n"
    )
    return path


def synth_cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "toa_graph.cli", "synthesize", *args]


@pytest.mark.timeout(120)
def test_cli_exits_nonzero_with_a_summary_when_prompts_fail(tmp_path: Path) -> None:
    proc, port = start_fault_process("--when", "DOWN=503")
    try:
        inp = tmp_path / "in.jsonl"
        rows = [{"id": f"q{i}", "prompt": f"question {i}"} for i in range(4)]
        rows[2]["prompt"] = "DOWN question"
        inp.write_text("".join(json.dumps(r) + "\n" for r in rows) + "{broken\n")
        cfg = write_cfg(tmp_path / "cfg.yaml", port)
        out = tmp_path / "out"
        res = subprocess.run(
            synth_cli("--config", str(cfg), "--input", str(inp), "--output", str(out),
                      "--budget", "3", "--no-progress"),
            cwd=tmp_path, env=cli_env(), capture_output=True, text=True, timeout=100,
        )  # fmt: skip
    finally:
        stop_process(proc)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "3 done" in res.stdout and "1 failed" in res.stdout and "1 bad input lines" in res.stdout
    assert "HTTP 503" in res.stdout and "failed.jsonl" in res.stdout
    summary = res.stdout[res.stdout.index("method toa:") :]  # after the per-prompt table
    assert "1 x no usable sample (3 generations)" in summary and "HTTP 503" in summary
    recs = read_jsonl(out / "records.jsonl")
    assert sorted(r["id"] for r in recs) == ["q0", "q1", "q3"]
    assert [f["id"] for f in read_jsonl(out / "failed.jsonl")] == ["q2"]
    assert [e["line"] for e in read_jsonl(out / "errors.jsonl")] == [5]
    seen = [r["id"] for r in recs] + [f["id"] for f in read_jsonl(out / "failed.jsonl")]
    report(
        "all agents down",
        "503 for one prompt, via `toa-graph synthesize`",
        "exit code 1; the summary names the failed prompt, its reason and failed.jsonl",
        lost=len({r["id"] for r in rows} - set(seen)),
        duplicates=len(recs) - len({r["id"] for r in recs}),
    )


# ================================================================ reward faults


class CountingReward:
    """A RewardModel whose first ``fail`` calls misbehave in the given way."""

    def __init__(self, mode: str, fail: int = 10**9) -> None:
        self.mode, self.fail, self.calls = mode, fail, 0

    async def ascore(
        self, prompt: Any, responses: Sequence[str], references: Sequence[str] | None = None
    ) -> list[float]:
        self.calls += 1
        good = hash_reward(prompt, list(responses))
        if self.calls > self.fail:
            return good
        if self.mode == "exception":
            raise RuntimeError("reward server unavailable")
        if self.mode == "wrong_length":
            return good[:-1] if len(good) > 1 else [*good, 0.5]
        if self.mode == "nan":
            return [math.nan] * len(good)
        if self.mode == "inf":
            return [math.inf] * len(good)
        if self.mode == "none":
            return None  # type: ignore[return-value]
        raise AssertionError(self.mode)


@pytest.mark.parametrize("mode", ["exception", "wrong_length", "nan", "inf", "none"])
async def test_reward_failure_is_called_once_then_recorded_never_made_up(
    mode: str, tmp_path: Path
) -> None:
    """score_samples makes one reward call per scoring step: retrying is the reward
    client's job (its RetryPolicy), so a failing reward is never asked again on top."""
    its = items("one", "two")
    broken = CountingReward(mode)
    res = await synth(tmp_path / "b", its, fake_agents(), reward=broken, method="ensemble")
    assert res.records == [] and broken.calls == len(its)  # once per prompt, no retry
    assert len(res.failed) == 2 and all("reward" in f["error"] for f in res.failed)
    assert no_nan(tmp_path / "b" / "failed.jsonl")
    # a reward that recovers scores the next prompt for real
    flaky = CountingReward(mode, fail=1)
    res2 = await synth(
        tmp_path / "a", its, fake_agents(), reward=flaky, method="ensemble", concurrency=1
    )
    assert flaky.calls == 2 and len(res2.failed) == 1
    [rec] = res2.records
    assert all(s["error"] is None and s["reward"] is not None for s in rec["samples"])
    assert [s["reward"] for s in rec["samples"]] == hash_reward(
        rec["prompt"], [s["text"] for s in rec["samples"]]
    )
    lost = res.lost([i.id for i in its]) + res2.lost([i.id for i in its])
    report(
        "reward",
        mode,
        "called once (the reward client retries, not the sampler); failing prompt: samples "
        "carry the error, prompt failed; later prompts score for real",
        lost=lost,
        duplicates=res.duplicates() + res2.duplicates(),
    )


def nan_for_agent_1(prompt: Any, responses: list[str]) -> list[float]:
    """A ``python`` reward target: NaN for the answers of the agent named ``#1``."""
    return [math.nan if "#1" in r else 1.0 + i for i, r in enumerate(responses)]


async def test_a_nan_for_one_response_fails_only_that_sample(tmp_path: Path) -> None:
    from toa_graph.config import RewardAdapter
    from toa_graph.rewards import build_reward

    # the shipped path: a config's python reward, built by build_reward, as a run uses it
    cfg = {"kind": "python", "target": "tests.test_faults:nan_for_agent_1"}
    reward = build_reward(RewardAdapter.validate_python(cfg))
    res = await synth(
        tmp_path / "o", items("q"), fake_agents(), reward=reward, method="ensemble",
        context={"budget": 6},
    )  # fmt: skip
    [rec] = res.records
    nan = [s for s in rec["samples"] if "#1" in s["text"]]
    assert nan and all(s["reward"] is None and "non-finite" in s["error"] for s in nan)
    assert all(s["reward"] is not None for s in rec["samples"] if s not in nan)
    assert rec["shortfall"] == len(nan)
    assert no_nan(tmp_path / "o" / "records.jsonl")


@dataclass
class _Item:
    text: str
    n_tokens: int


class OOMScorer:
    """A pair scorer that runs out of memory on batches over ``max_items`` items, and on
    any item over ``max_tokens`` tokens."""

    name = "oom-scorer"

    def __init__(self, max_items: int, max_tokens: int = 10**9) -> None:
        self.max_items, self.max_tokens, self.forwards = max_items, max_tokens, 0

    def prepare(self, prompt: Any, response: str, reference: str | None = None) -> _Item:
        return _Item(response, len(response.split()))

    def score_batch(self, batch: Sequence[_Item]) -> list[float]:
        self.forwards += 1
        if len(batch) > self.max_items or any(i.n_tokens > self.max_tokens for i in batch):
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return [float(len(i.text)) for i in batch]


async def test_reward_oom_splits_batches_and_fails_only_the_item_that_never_fits() -> None:
    scorer = OOMScorer(max_items=2, max_tokens=50)
    reward = BatchingReward(scorer, max_batch_size=16, max_wait_ms=20)
    texts = [f"answer {'x ' * i}" for i in range(8)]
    scores = await reward.ascore("q", texts)
    assert scores == [float(len(t)) for t in texts]
    assert reward.stats.oom_splits > 0
    # one caller's item never fits: that caller gets a RewardError, concurrent callers don't
    huge = "word " * 100
    ok, bad = await asyncio.gather(
        reward.ascore("q", ["short one", "short two"]),
        reward.ascore("q", [huge]),
        return_exceptions=True,
    )
    assert ok == [9.0, 9.0]
    assert isinstance(bad, RewardError) and "out of memory" in str(bad)
    report(
        "reward",
        "CUDA out of memory",
        f"batches split ({reward.stats.oom_splits} splits), scores equal unbatched; an item that "
        "never fits fails only its caller",
    )


# ================================================================ SIGKILL at random points


def n_lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_sigkill_at_random_points_then_resume(tmp_path: Path) -> None:
    """`toa-graph synthesize` SIGKILLed at seeded-random moments (during start-up, between
    and during record writes) against an endpoint that also throws seeded 503s; after each
    kill the intact records are kept byte for byte; the final run completes the set with
    exactly one record per prompt."""
    rng = random.Random(8)
    n = 30
    proc, port = start_fault_process("--prob", "503=0.05", "--seed", "3", "--delay", "0.02")
    try:
        inp = tmp_path / "in.jsonl"
        inp.write_text(
            "".join(
                json.dumps({"id": f"q{i}", "question": f"What is {i}*3?"}) + "\n" for i in range(n)
            )
        )
        cfg = write_cfg(tmp_path / "cfg.yaml", port, max_retries=3)
        out = tmp_path / "out"
        records = out / "records.jsonl"
        args = synth_cli("--config", str(cfg), "--input", str(inp), "--output", str(out),
                         "--budget", "4", "--concurrency", "3", "--no-progress")  # fmt: skip
        kept = b""
        kills: list[str] = []
        for round_ in range(4):
            job = subprocess.Popen(
                args, cwd=tmp_path, env=cli_env(),
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            if round_ == 0:
                time.sleep(rng.uniform(0.2, 1.0))  # during start-up: nothing written yet
                where = "start-up"
            else:
                target = n_lines(records) + rng.randint(1, 5)
                deadline = time.monotonic() + 60
                while n_lines(records) < target and job.poll() is None:
                    assert time.monotonic() < deadline
                    time.sleep(0.002)
                time.sleep(rng.uniform(0, 0.05))  # between or in the middle of writes
                where = f"after ~{target} records"
            if job.poll() is None:
                os.kill(job.pid, signal.SIGKILL)  # our own child
            job.wait()
            kills.append(where)
            now = records.read_bytes() if records.exists() else b""
            assert now.startswith(kept), "records finished before a kill must stay byte-identical"
            kept = now[: now.rfind(b"\n") + 1]
        done_before = kept.count(b"\n")
        assert 0 < done_before < n, "the kills must land mid-job"
        res = subprocess.run(args, cwd=tmp_path, env=cli_env(), capture_output=True, text=True,
                             timeout=120)  # fmt: skip
        assert res.returncode == 0, res.stdout + res.stderr
        after = records.read_bytes()
        assert after.startswith(kept)
    finally:
        stop_process(proc)
    recs = [json.loads(x) for x in after.splitlines()]
    ids = Counter(r["id"] for r in recs)
    lost = n - len(ids)
    dup = sum(c - 1 for c in ids.values())
    assert lost == 0 and dup == 0
    assert all(len(r["samples"]) == 4 and r["best"]["reward"] is not None for r in recs)
    report(
        "SIGKILL",
        f"{len(kills)} kills ({', '.join(kills)}), seeded; 5% 503s",
        f"{done_before}/{n} records before the last resume kept byte-identical; "
        f"resume completed {n - done_before}",
        lost=lost,
        duplicates=dup,
    )


# ================================================================ bad input

BAD_INPUTS: list[tuple[str, bytes, str]] = [
    # (case, line, text expected in the reason)
    ("malformed JSON", b'{"prompt": "x", ', "invalid JSON"),
    ("not an object", b"[1, 2, 3]", "JSON object"),
    ("missing prompt field", b'{"id": "m1", "text": "no prompt"}', "missing prompt"),
    ("mistyped prompt", b'{"id": "m2", "prompt": 42}', "prompt field 'prompt'"),
    ("mistyped id", b'{"id": [1], "prompt": "x"}', "id field 'id'"),
    ("mistyped reference", b'{"prompt": "x", "reference": {"a": 1}}', "reference field"),
    ("empty prompt", b'{"id": "e1", "prompt": "   "}', "empty prompt (field 'prompt')"),
    ("empty chat", b'{"id": "e2", "messages": []}', "empty prompt"),
    ("bad chat role", b'{"id": "e3", "messages": [{"role": "bot", "content": "x"}]}', "role"),
    ("invalid UTF-8", b'{"id": "u1", "prompt": "caf\xe9"}', "invalid UTF-8"),
    ("duplicate id", b'{"id": "g0", "prompt": "again"}', "duplicate id 'g0'"),
]


async def test_bad_input_lines_are_named_and_the_rest_proceeds(tmp_path: Path) -> None:
    big = "word " * (1 << 18)  # a 1.25 MB prompt: loaded, sent, refused by the endpoint
    lines: list[bytes] = [json.dumps({"id": "g0", "prompt": "good zero"}).encode()]
    expected: dict[int, str] = {}
    for _, raw, why in BAD_INPUTS:
        lines.append(raw)
        expected[len(lines)] = why
        lines.append(json.dumps({"id": f"g{len(lines)}", "prompt": "good"}).encode())
    lines.append(json.dumps({"id": "big", "prompt": big}).encode())
    inp = tmp_path / "in.jsonl"
    inp.write_bytes(b"\n".join(lines) + b"\n")
    good_ids = {"g0"} | {f"g{i}" for i in range(2, 2 * len(BAD_INPUTS) + 1, 2)}
    with FaultServer(when=[("word word word", "context_length")]) as srv:
        pool = AgentPool([agent_cfg(n, srv.url) for n in ("a", "b")], retry_backoff_s=0.01)
        s = await run_synthesis(
            inp, tmp_path / "out", method="toa", agents=pool, reward=hash_reward,
            context={"budget": 3}, concurrency=4, progress=False,
        )  # fmt: skip
    errors = read_jsonl(tmp_path / "out" / "errors.jsonl")
    assert {e["line"]: e["reason"] for e in errors}.keys() == expected.keys()
    for e in errors:
        assert expected[e["line"]] in e["reason"], e
    recs = read_jsonl(tmp_path / "out" / "records.jsonl")
    failed = read_jsonl(tmp_path / "out" / "failed.jsonl")
    assert {r["id"] for r in recs} == good_ids
    [f] = failed  # the 1 MB prompt: every agent refused it (context length), reason kept
    assert f["id"] == "big" and "maximum context length" in f["error"]
    assert s.bad_lines == len(BAD_INPUTS)
    rec_ids = {r["id"] for r in recs}
    lost = len((good_ids | {"big"}) - rec_ids - {f["id"]})
    for (case, _, why), line in zip(BAD_INPUTS, sorted(expected), strict=True):
        # lost: the bad line missing from errors.jsonl, or the good line after it missing
        missed = int(line not in {e["line"] for e in errors}) + int(f"g{line}" not in rec_ids)
        report(
            "bad input",
            case,
            f"line skipped; errors.jsonl: its line number + “{why}…”; next line loaded",
            lost=missed,
            duplicates=0,
        )
    report(
        "bad input",
        "1 MB prompt",
        "loaded and sent; the endpoint's context-length 400 recorded; prompt failed, not lost",
        lost=lost,
        duplicates=len(recs) - len({r["id"] for r in recs}),
    )


GOOD_ROW = st.fixed_dictionaries(
    {"prompt": st.text(min_size=1, max_size=30).filter(lambda t: t.strip()), "id": st.uuids()}
)
GARBAGE = st.one_of(
    st.binary(max_size=30),
    st.sampled_from([b"{", b"[]", b"null", b'{"prompt": ""}', b'{"prompt": 3}', b"\xff\xfe"]),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.one_of(GOOD_ROW, GARBAGE), max_size=15))
def test_property_garbage_lines_never_cost_a_good_line(rows: list[Any]) -> None:
    """Whatever sits between them, every good row loads with its own line number and
    prompt; every other non-blank line is an error with its line number."""
    lines = [
        json.dumps({"prompt": r["prompt"], "id": str(r["id"])}).encode()
        if isinstance(r, dict)
        else r.replace(b"\n", b" ").replace(b"\r", b" ")
        for r in rows
    ]
    res = parse_jsonl(b"\n".join(lines))
    good = {i + 1: r for i, r in enumerate(rows) if isinstance(r, dict)}
    loaded = {it.line: it for it in res.items}
    for line, r in good.items():
        assert loaded[line].prompt == r["prompt"] and loaded[line].id == str(r["id"])
    errs = {e.line for e in res.errors}
    for i, raw in enumerate(lines, start=1):
        content = raw[3:] if i == 1 and raw.startswith(b"\xef\xbb\xbf") else raw  # a BOM
        if i not in good and content.strip():
            assert i in errs or i in loaded  # garbage may happen to be a valid row
    assert not errs & set(good)


# ================================================================ exporter properties

SAMPLE = st.fixed_dictionaries(
    {
        "text": st.one_of(st.text(max_size=12), st.just(""), st.just("  ")),
        "reward": st.one_of(
            st.none(),
            st.floats(allow_nan=True, allow_infinity=True),
            st.integers(-3, 3),
            st.sampled_from([0.0, 1.0]),
        ),
        "error": st.one_of(st.none(), st.sampled_from(["HTTP 503", "reward: boom", ""])),
    }
)


def as_record(i: int, samples: list[dict[str, Any]], best_mode: int) -> dict[str, Any]:
    """A record as a method writes it: ``best`` is best_sample's choice (mode 0), a stale
    unusable sample (mode 1) or missing (mode 2)."""
    from toa_graph.state import best_sample

    full = [
        {"id": f"s{j}", "agent": "a", "parent": None, "kind": "fresh", "layer": 0, **s}
        for j, s in enumerate(samples)
    ]
    best: Any = None
    if best_mode == 0:
        best = best_sample(full)  # type: ignore[arg-type]
    elif best_mode == 1:
        best = next((s for s in full if s not in ranked_samples({"samples": full})), None)
    return {"id": f"r{i}", "prompt": f"question {i}", "samples": full, "best": best}


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(st.lists(SAMPLE, max_size=8), st.integers(0, 2)), max_size=6),
    st.one_of(st.none(), st.integers(1, 10)),
)
def test_property_exports(recs: list[Any], rank: int | None) -> None:
    """Any records (rewards None / NaN / inf / ints / ties, errors, blank texts): DPO rows
    are strict JSON, chosen strictly beats rejected, both are usable samples and chosen is
    the top one; SFT rows are strict JSON and answer with a top usable sample."""
    records = [as_record(i, s, b) for i, (s, b) in enumerate(recs)]
    by_id = {r["id"]: r for r in records}
    for row in dpo_rows(records, rejected_rank=rank, keep_id=True):
        json.dumps(row, allow_nan=False)
        assert row["score_chosen"] > row["score_rejected"]
        usable = ranked_samples(by_id[row["id"]])
        assert row["score_chosen"] == max(float(s["reward"]) for s in usable)
        for side in ("chosen", "rejected"):
            text = row[side][0]["content"]
            score = row[f"score_{side}"]
            assert any(s["text"] == text and float(s["reward"]) == score for s in usable)
            assert text.strip()
    for row in sft_rows(records, keep_id=True):
        json.dumps(row, allow_nan=False)
        usable = ranked_samples(by_id[row["id"]])
        top = max(float(s["reward"]) for s in usable)
        answer = row["messages"][-1]
        assert answer["role"] == "assistant"
        assert any(s["text"] == answer["content"] and float(s["reward"]) == top for s in usable)
    # every record with a usable sample gives an SFT row
    assert len(list(sft_rows(records))) == sum(bool(ranked_samples(r)) for r in records)


# ================================================================ secrets and safe defaults

KEY = "sk-toa-FAULTSUITE-7f3c9a1e5d"
WRONG_KEY = "sk-toa-WRONGKEY-2b8d4e6f0a"


async def test_api_keys_never_leak(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("TOA_TEST_KEY", KEY)
    monkeypatch.setenv("TOA_TEST_WRONG_KEY", WRONG_KEY)
    monkeypatch.setenv("OPENAI_API_KEY", WRONG_KEY)  # never picked up implicitly
    with FaultServer(api_key=KEY, per_model={"flaky-model": ["503", "500"]}) as srv:
        agents = [
            agent_cfg("good", srv.url, api_key_env="TOA_TEST_KEY"),
            agent_cfg("flaky", srv.url, api_key_env="TOA_TEST_KEY"),
            agent_cfg("wrong", srv.url, api_key_env="TOA_TEST_WRONG_KEY"),
            agent_cfg("nokey", srv.url),
        ]
        out = tmp_path / "out"
        its = items("q one", "q two")
        res = await synth(out, its, agents, context={"budget": 8})
        # the graph's state and stream (what Studio shows) for one more run
        graph = METHODS["toa"](agents=agents, reward=hash_reward).compile()
        events = [
            repr(ev)
            async for ev in graph.astream_events(
                {"prompt": "q three"}, context={"budget": 4}, version="v2"
            )
        ]
        chunks = [
            repr(c)
            async for c in graph.astream(
                {"prompt": "q four"},
                context={"budget": 4},
                stream_mode=["values", "updates", "custom", "messages"],
            )
        ]
        auth = Counter(r.authorized for r in srv.log)
    assert auth[True] > 0 and auth[False] > 0  # the key was sent; wrong/absent keys refused
    assert res.records, "the run must produce records"
    errs = [e for r in res.records for e in r["errors"]]
    assert any("401" in e for e in errs)  # the wrong-key agent's failures are recorded
    # exception messages: a missing env var names the variable, never a value
    with pytest.raises(ConfigError) as missing:
        AgentConfig(name="x", model="m", base_url=srv.url, api_key_env="TOA_TEST_UNSET").api_key()
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text(
        f"agents:\n  - {{name: a, model: m, base_url: 'http://127.0.0.1:1/v1', api_key: {KEY}}}\n"
        "reward: {kind: math}\n"
    )
    with pytest.raises(ConfigError) as inline:
        load_config(bad_yaml)
    assert "api_key" in str(inline.value)  # a key in the file is refused as an unknown field
    haystacks = {
        "records/errors/failed/summary files": "".join(
            p.read_text(errors="replace") for p in out.iterdir() if p.is_file()
        ),
        "logs (DEBUG)": caplog.text + "".join(str(r.__dict__) for r in caplog.records),
        "exception messages": str(missing.value) + str(inline.value),
        "graph stream events": "".join(events) + "".join(chunks),
        "state": json.dumps(res.records, default=str),
    }
    for where, text in haystacks.items():
        for secret in (KEY, WRONG_KEY):
            assert secret not in text, f"API key found in {where}"
    # A server that accepts exactly OPENAI_API_KEY's value: an agent without api_key_env
    # must be refused there (were the env var picked up, it would be let in); an agent that
    # names that key through api_key_env is let in, so the trap can tell the two apart.
    with FaultServer(api_key=WRONG_KEY) as trap:
        msgs = [{"role": "user", "content": "hi"}]
        pool = AgentPool(
            [
                agent_cfg("nokey", trap.url),
                agent_cfg("named", trap.url, api_key_env="TOA_TEST_WRONG_KEY"),
            ]
        )
        (implicit,) = await pool.generate("nokey", msgs)
        (named,) = await pool.generate("named", msgs)
        trap_auth = {(r.model, r.authorized) for r in trap.log}
    assert implicit.error and "401" in implicit.error and not named.error
    assert ("nokey-model", True) not in trap_auth and ("named-model", True) in trap_auth
    report(
        "secrets",
        "bearer key from the env var a config names",
        "not in records, errors, logs at DEBUG, exception messages, state or stream events; "
        "OPENAI_API_KEY not picked up",
        lost=res.lost([i.id for i in its]),
        duplicates=res.duplicates(),
    )


def test_safe_defaults_bind_loopback_and_no_remote_code(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from toa_graph import embedded, launch
    from toa_graph.cli import build_parser
    from toa_graph.embedded import stack

    assert HFRewardConfig(kind="hf", model="x").trust_remote_code is False
    assert build_parser().parse_args(["serve"]).host == "127.0.0.1"

    seen: dict[str, Any] = {}

    def fake_spawn(cmd: Sequence[str], **kw: Any) -> None:
        seen["cmd"] = list(cmd)

    monkeypatch.setattr(stack, "spawn_server", fake_spawn)
    prep = embedded.Prepared(python=Path("/nonexistent/python"), models={"m": Path("/m")})
    embedded.start_server("m", ["m"], cache=tmp_path, port=12345, prepared=prep)
    cmd = seen["cmd"]
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1"
    spec = launch.ServerSpec(model_path="/m", aliases=["m"], agents=["m"], port=12346)
    gpu = launch.server_command(spec, launch.LaunchOptions())
    assert gpu[gpu.index("--host") + 1] == "127.0.0.1"
    # nothing in the package binds every interface
    for path in (REPO / "toa_graph").rglob("*.py"):
        assert "0.0.0.0" not in path.read_text(), path
    report(
        "safe defaults",
        "bind address, trust_remote_code",
        "serve, embedded and launched vLLM servers bind 127.0.0.1; trust_remote_code off",
    )
