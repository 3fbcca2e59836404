"""``toa-graph evaluate`` on the real embedded vLLM CPU server: 5 GSM8K items through the
running stack's endpoint, and a local checkpoint served for the run that a SIGTERM stops
(no orphan vLLM process, rows kept) and a rerun finishes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from toa_graph.cli import main
from toa_graph.config import ProjectConfig
from toa_graph.embedded import MODELS, cache_dir

REPO = Path(__file__).resolve().parents[2]


def test_evaluate_embedded_endpoint_on_5_items(
    embedded_config: ProjectConfig, tmp_path: Path
) -> None:
    agent = embedded_config.agents[0]
    out = tmp_path / "ev"
    rc = main(["evaluate", "--task", "gsm8k", "--base-url", agent.urls[0], "--model",
               agent.model, "--output", str(out), "--limit", "5", "--max-tokens", "256",
               "--no-progress"])  # fmt: skip
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    rows = [json.loads(line) for line in (out / "rows.jsonl").read_text().splitlines()]
    assert summary["n"] == 5 and len(rows) == 5
    assert 0.0 <= summary["score"] <= 1.0
    assert summary["score"] == sum(r["score"] for r in rows) / 5
    assert sum(1 for r in rows if r["output"].strip()) >= 4  # the model really answered


def _processes_with(marker: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if marker in cmdline and "pytest" not in cmdline:
            pids.append(int(entry.name))
    return pids


def test_served_checkpoint_stops_on_sigterm_and_rerun_resumes(tmp_path: Path) -> None:
    ckpt = cache_dir() / "models" / MODELS["smollm2-135m-instruct"].dir_name
    name = f"evaltest-{uuid.uuid4().hex[:8]}"  # marks the vLLM process of this test
    out = tmp_path / "ev"
    cmd = [sys.executable, "-m", "toa_graph.cli", "evaluate", "--task", "gsm8k",
           "--checkpoint", str(ckpt), "--device", "cpu", "--model", name, "--output", str(out),
           "--limit", "5", "--max-tokens", "200", "--concurrency", "1", "--no-progress"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(cmd, env=env, cwd=REPO)
    rows = out / "rows.jsonl"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and proc.poll() is None:
        if rows.exists() and rows.read_text().count("\n") >= 1:
            break
        time.sleep(0.5)
    assert proc.poll() is None, "evaluate ended before it could be interrupted"
    assert _processes_with(name), "the served checkpoint's vLLM process is running"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) != 0
    time.sleep(1)
    assert _processes_with(name) == [], "no orphan vLLM process after SIGTERM"
    kept = rows.read_text().count("\n")
    assert 1 <= kept < 5

    rc = subprocess.run(cmd, env=env, cwd=REPO, timeout=900).returncode
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n"] == 5
    lines = rows.read_text().splitlines()
    ok_first = sum(1 for line in lines[:kept] if json.loads(line)["error"] is None)
    assert len(lines) == 5 + (kept - ok_first)  # the kept good rows were not asked again
    assert _processes_with(name) == []
