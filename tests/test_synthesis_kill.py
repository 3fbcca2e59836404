"""`toa-graph synthesize` as a real process against a local OpenAI-compatible server:
SIGKILL mid-job, resume, exactly one record per prompt, earlier records byte-identical."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fake_servers import FakeServer

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def fake_server() -> Iterator[int]:
    with FakeServer(delay=0.03, capacity=4, deterministic=False) as server:
        yield server.port


def write_config(path: Path, port: int) -> Path:
    path.write_text(
        "agents:\n"
        + "".join(
            f"  - {{name: {n}, model: {n}-model, base_url: 'http://127.0.0.1:{port}/v1', max_retries: 1, timeout_s: 20}}\n"
            for n in ("alpha", "beta")
        )
        + "reward: {kind: python, target: 'tests.fakes:hash_reward'}\n"
    )
    return path


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "toa_graph.cli", "synthesize", *args]


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO)}


def n_lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_sigkill_mid_job_then_resume(tmp_path: Path, fake_server: int) -> None:
    n = 40
    inp = tmp_path / "prompts.jsonl"
    inp.write_text(
        "".join(
            json.dumps({"id": f"q{i}", "question": f"What is {i} + {i}?", "answer": str(2 * i)})
            + "\n"
            for i in range(n)
        )
    )
    cfg = write_config(tmp_path / "cfg.yaml", fake_server)
    out = tmp_path / "out"
    args = cli("--config", str(cfg), "--input", str(inp), "--output", str(out), "--budget", "4",
               "--concurrency", "3", "--no-progress")  # fmt: skip
    records = out / "records.jsonl"

    proc = subprocess.Popen(
        args, cwd=tmp_path, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 60
    while n_lines(records) < 6:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no records appeared"
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)  # our own child
    proc.wait()
    assert proc.returncode == -signal.SIGKILL

    before = records.read_bytes()
    k = before.count(b"\n")
    assert 6 <= k < n, "the job must be killed mid-way"
    intact = before[: before.rfind(b"\n") + 1]
    # make the kill's worst case certain: a torn, half-written last line
    with records.open("ab") as f:
        f.write(b'{"id":"q39","input":{"id":"q39","question":"What is 39 + ')

    res = subprocess.run(args, cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=90)
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"{n - k} done, {k} skipped" in res.stdout
    assert "torn last line" in res.stdout

    after = records.read_bytes()
    assert after.startswith(intact), "earlier records must be byte-identical"
    recs = [json.loads(x) for x in after.splitlines()]
    ids = [r["id"] for r in recs]
    assert sorted(ids) == sorted(f"q{i}" for i in range(n)) and len(set(ids)) == n
    assert all(len(r["samples"]) == 4 and r["best"]["reward"] is not None for r in recs)

    # a third run finds nothing to do and writes nothing
    res = subprocess.run(args, cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=90)
    assert res.returncode == 0 and f"0 done, {n} skipped" in res.stdout
    assert records.read_bytes() == after


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_cli_examples_table_and_failure_exit_code(tmp_path: Path, fake_server: int) -> None:
    cfg = write_config(tmp_path / "cfg.yaml", fake_server)
    res = subprocess.run(
        cli("--config", str(cfg), "--output", str(tmp_path / "ex"), "--budget", "3", "--no-progress"),
        cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=90,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    for pid in ("open-commit-tips", "gsm8k-muffins", "wmt-de-en-dog", "chat-haiku"):
        assert pid in res.stdout
    assert "best agent" in res.stdout and "4 done" in res.stdout

    # an unreachable endpoint is found before any prompt runs: one line per agent, exit 2
    bad = tmp_path / "bad.yaml"
    bad.write_text(cfg.read_text().replace(f":{fake_server}/", ":9/"))
    res = subprocess.run(
        cli("--config", str(bad), "--output", str(tmp_path / "bad"), "--budget", "2", "--no-progress"),
        cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=90,
    )  # fmt: skip
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert lines and all("is unreachable" in line for line in lines), lines
    assert "Traceback" not in res.stderr and not (tmp_path / "bad" / "records.jsonl").exists()


def _stats(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=5) as r:
        return dict(json.loads(r.read()))


def _comparable(path: Path) -> dict[str, Any]:
    """What a resumed record must share with an uninterrupted run's (not latencies)."""
    out = {}
    for line in path.read_bytes().splitlines():
        r = json.loads(line)
        out[r["id"]] = [
            (s["id"], s["agent"], s["kind"], s.get("parent"), s["text"], s["reward"])
            for s in r["samples"]
        ]
    return out


@pytest.mark.slow
@pytest.mark.timeout(240)
@pytest.mark.parametrize("method", ["toa", "random"])
def test_sigkill_at_random_points_repays_at_most_the_requests_in_flight(
    tmp_path: Path, method: str
) -> None:
    n = 24
    inp = tmp_path / "prompts.jsonl"
    inp.write_text(
        "".join(
            json.dumps({"id": f"q{i}", "question": f"What is {i} + 1?"}) + "\n" for i in range(n)
        )
    )
    rng = random.Random(27)
    with FakeServer(delay=0.02, capacity=8, deterministic=True) as server:
        cfg = write_config(tmp_path / "cfg.yaml", server.port)

        def args(out: Path) -> list[str]:
            return cli("--config", str(cfg), "--input", str(inp), "--output", str(out),
                       "--method", method, "--budget", "6", "--concurrency", "4",
                       "--no-progress")  # fmt: skip

        ref = tmp_path / "ref"
        res = subprocess.run(args(ref), cwd=tmp_path, env=env(), capture_output=True, timeout=120)
        assert res.returncode == 0, res.stderr
        uninterrupted = len(_stats(server.port)["arrivals"])
        server.reset_stats()

        out = tmp_path / "out"
        records = out / "records.jsonl"
        kills = 0
        for _ in range(3):  # three kills at random points, each followed by a resume
            proc = subprocess.Popen(args(out), cwd=tmp_path, env=env(),
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
            start = len(_stats(server.port)["arrivals"])
            target = start + rng.randint(5, 60)
            while len(_stats(server.port)["arrivals"]) < target and proc.poll() is None:
                time.sleep(rng.uniform(0, 0.01))
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)  # our own child
                kills += 1
            proc.wait()
        res = subprocess.run(args(out), cwd=tmp_path, env=env(), capture_output=True, timeout=120)
        assert res.returncode == 0, res.stderr
        total = len(_stats(server.port)["arrivals"])
    assert n_lines(records) == n
    if method == "toa":
        # one play a step and a local reward: each prompt has at most one request out, so
        # at most --concurrency (4) are in flight at a kill (without the generation store
        # a kill would repay every generation of the prompts in flight, up to 4 x 6)
        assert kills >= 1 and total - uninterrupted <= 4 * kills, (total, uninterrupted, kills)
    assert _comparable(records) == _comparable(ref / "records.jsonl")
