"""The user-facing interfaces against the real embedded stack (vLLM CPU build, SmolLM2):
``toa-graph serve`` through the openai client, and ``toa-graph launch`` of the CPU build."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import openai
import pytest

from tests.test_server import _free_port, _Server
from toa_graph.config import ProjectConfig, configs_dir, load_config
from toa_graph.rewards import build_reward
from toa_graph.server import ServerSettings, build_app

ROOT = Path(__file__).resolve().parents[2]


def test_serve_with_embedded_agents(embedded_config: ProjectConfig) -> None:
    cfg = embedded_config
    app = build_app(
        cfg.agents,
        build_reward(cfg.reward, agents=cfg.agents),
        settings=ServerSettings(default_context={"budget": 3, "max_tokens": 48}),
    )
    with _Server(app) as s:
        client = openai.OpenAI(base_url=s.base_url, api_key="unused", max_retries=0)
        resp = client.chat.completions.create(
            model="toa",
            messages=[{"role": "user", "content": "What is the capital of France?"}],
        )
        assert resp.choices[0].message.content.strip()
        info = resp.model_extra["x_toa"]
        assert info["samples"] == 3 and info["best_agent"] in {a.name for a in cfg.agents}
        assert resp.usage.prompt_tokens > 0 and resp.usage.completion_tokens > 0

        chunks = list(
            client.chat.completions.create(
                model="ensemble",
                messages=[
                    {"role": "user", "content": "Name a fruit."},
                    {"role": "assistant", "content": "Apple."},
                    {"role": "user", "content": "Another one?"},
                ],
                stream=True,
                stream_options={"include_usage": True},
                extra_body={"budget": 2},
            )
        )
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text.strip()
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def test_launch_cpu_build(tmp_path: Path) -> None:
    """launch starts its own vLLM CPU server for the embedded config, writes a resolved
    config that answers through the openai client, and stops the server on SIGTERM."""
    if os.environ.get("TOA_GRAPH_SKIP_INTEGRATION") == "1":
        pytest.skip("TOA_GRAPH_SKIP_INTEGRATION=1")
    out = tmp_path / "endpoints.yaml"
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "toa_graph.cli", "launch",
         "--config", str(configs_dir() / "embedded.yaml"), "--port-base", str(port),
         "--max-model-len", "2048", "--endpoints-out", str(out)],
        cwd=ROOT, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    pid = None
    try:
        deadline = time.monotonic() + 600
        while not out.exists():
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "no endpoints file after 600 s"
            time.sleep(0.5)
        cfg = load_config(out)
        assert {a.base_url for a in cfg.agents} == {f"http://127.0.0.1:{port}/v1"}
        pid = int(out.read_text().splitlines()[1].split()[2].rstrip(":"))
        client = openai.OpenAI(base_url=cfg.agents[0].base_url, api_key="EMPTY", max_retries=0)
        for a in cfg.agents:
            r = client.chat.completions.create(
                model=a.model, messages=[{"role": "user", "content": "Say hi."}], max_tokens=8
            )
            assert r.choices[0].message.content
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(60)
    assert rc == 0 and not out.exists()
    assert pid is not None
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not Path(f"/proc/{pid}").exists()
