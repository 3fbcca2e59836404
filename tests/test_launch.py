"""``toa-graph launch``: the plan (servers, aliases, GPUs, ports), the resolved config, and
the whole lifecycle against a stand-in vLLM (tests/fake_vllm) on 127.0.0.1."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from toa_graph.cli import main as cli_main
from toa_graph.config import configs_dir, load_config
from toa_graph.embedded import ServerInfo
from toa_graph.launch import (
    LaunchError,
    LaunchOptions,
    plan_servers,
    server_command,
    write_resolved_config,
)

ROOT = Path(__file__).resolve().parents[1]


def _free_port_block(n: int) -> int:
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = int(s.getsockname()[1])
        if base + n >= 65535:
            continue
        try:
            for p in range(base, base + n):
                with socket.socket() as t:
                    t.bind(("127.0.0.1", p))
            return base
        except OSError:
            continue
    raise RuntimeError("no free port block")


def _config(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(body)
    return path


THREE_AGENTS = """
agents:
  - name: a
    model: m1
    base_url: http://127.0.0.1:1/v1
    temperature: 0.3
  - name: b
    model: m2
    base_url: http://127.0.0.1:1/v1
  - name: c
    model: m1-creative
    base_url: http://127.0.0.1:1/v1
    stop: ["</s>"]
reward:
  kind: math
method:
  name: moa
  context: {budget: 6}
"""


def test_plan_paper_config_round_robin_gpus() -> None:
    cfg = load_config(configs_dir() / "synthesis-4x8b.yaml")
    specs = plan_servers(cfg, gpus=["0", "1"], port_base=9001)
    assert [s.port for s in specs] == [9001, 9002, 9003, 9004]
    assert [s.gpus for s in specs] == [["0"], ["1"], ["0"], ["1"]]
    assert [s.aliases for s in specs] == [[a.model] for a in cfg.agents]
    assert [s.model_path for s in specs] == [a.model for a in cfg.agents]


def test_plan_tensor_parallel_and_shared_weights(tmp_path: Path) -> None:
    cfg = load_config(_config(tmp_path, THREE_AGENTS))
    specs = plan_servers(
        cfg,
        model_paths={"c": "/w/m1", "m1": "/w/m1"},
        gpus=["0", "1", "2", "3"],
        port_base=7000,
        tensor_parallel_size=2,
    )
    assert [(s.model_path, s.aliases, s.agents, s.gpus) for s in specs] == [
        ("/w/m1", ["m1", "m1-creative"], ["a", "c"], ["0", "1"]),
        ("m2", ["m2"], ["b"], ["2", "3"]),
    ]
    cmd = server_command(
        specs[0],
        LaunchOptions(
            python="py",
            gpu_memory_utilization=0.8,
            max_model_len=8192,
            chat_template="t.jinja",
            tensor_parallel_size=2,
        ),
    )
    assert cmd[:3] == ["py", "-m", "vllm.entrypoints.openai.api_server"]
    joined = " ".join(cmd)
    for part in (
        "--model /w/m1",
        "--served-model-name m1 m1-creative",
        "--host 127.0.0.1",
        "--port 7000",
        "--gpu-memory-utilization 0.8",
        "--max-model-len 8192",
        "--chat-template t.jinja",
        "--tensor-parallel-size 2",
    ):
        assert part in joined


def test_plan_errors(tmp_path: Path) -> None:
    cfg = load_config(_config(tmp_path, THREE_AGENTS))
    with pytest.raises(LaunchError, match="names no agent"):
        plan_servers(cfg, model_paths={"zzz": "/x"})
    with pytest.raises(LaunchError, match="needs 2 GPUs"):
        plan_servers(cfg, gpus=["0"], tensor_parallel_size=2)
    with pytest.raises(LaunchError, match="kind: vllm"):
        plan_servers(cfg, with_reward=True)


def test_plan_embedded_config_is_one_cpu_server() -> None:
    cfg = load_config(configs_dir() / "embedded.yaml")
    (spec,) = plan_servers(cfg, gpus=["0"])
    assert spec.embedded and spec.gpus == []
    assert spec.model_path == "smollm2-135m-instruct"
    assert spec.aliases == ["smollm2-precise", "smollm2-creative"]


def test_plan_reward_pooling_server(tmp_path: Path) -> None:
    body = THREE_AGENTS.replace(
        "reward:\n  kind: math",
        "reward:\n  kind: vllm\n  model: Skywork/RM\n  base_url: http://127.0.0.1:1/v1",
    )
    cfg = load_config(_config(tmp_path, body))
    specs = plan_servers(cfg, with_reward=True, gpus=["0", "1", "2", "3"], port_base=100)
    assert specs[-1].pooling and specs[-1].aliases == ["Skywork/RM"] and specs[-1].gpus == ["3"]
    assert "--runner pooling" in " ".join(server_command(specs[-1], LaunchOptions()))


def test_resolved_config_loads_back(tmp_path: Path) -> None:
    cfg = load_config(_config(tmp_path, THREE_AGENTS))
    specs = plan_servers(cfg, model_paths={"c": "m1"}, port_base=7100)
    servers = [
        (s, ServerInfo(model=s.model_path, pid=1, port=s.port, aliases=s.aliases, log="x.log"))
        for s in specs
    ]
    out = write_resolved_config(cfg, servers, tmp_path / "sub" / "endpoints.yaml")
    text = out.read_text()
    assert text.startswith("# Written by toa-graph launch")
    back = load_config(out)
    assert [a.base_url for a in back.agents] == [
        "http://127.0.0.1:7100/v1",
        "http://127.0.0.1:7101/v1",
        "http://127.0.0.1:7100/v1",
    ]
    assert back.agents[0].temperature == 0.3 and back.agents[2].stop == ["</s>"]
    assert back.reward == cfg.reward and back.method == cfg.method


def test_dry_run_prints_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = configs_dir() / "synthesis-4x8b.yaml"
    out = tmp_path / "e.yaml"
    rc = cli_main(
        ["launch", "--config", str(cfg), "--gpus", "0,1,2,3", "--port-base", "8001",
         "--endpoints-out", str(out), "--dry-run"]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 0 and not out.exists()
    assert "CUDA_VISIBLE_DEVICES=3 " in err and "--port 8004" in err
    assert "--served-model-name meta-llama/Llama-3.1-8B-Instruct" in err


def test_missing_vllm_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _config(tmp_path, THREE_AGENTS)
    rc = cli_main(
        ["launch", "--config", str(cfg), "--endpoints-out", str(tmp_path / "e.yaml"),
         "--vllm-python", str(tmp_path / "nope" / "python")]
    )  # fmt: skip
    assert rc == 1 and "no such interpreter" in capsys.readouterr().err


def test_lifecycle_with_stand_in_vllm(tmp_path: Path) -> None:
    """Start (3 agents -> 2 servers on GPUs 3 and 5), health, resolved config usable by
    a client, SIGTERM stops both servers by PID and removes the stale config."""
    cfg = _config(tmp_path, THREE_AGENTS)
    wrapper = tmp_path / "vllm-python"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    wrapper.chmod(0o755)
    out = tmp_path / "endpoints.yaml"
    port = _free_port_block(2)
    env = {
        **os.environ,
        "PYTHONPATH": f"{ROOT / 'tests' / 'fake_vllm'}{os.pathsep}{ROOT}",
        "TOA_GRAPH_CACHE": str(tmp_path / "cache"),
        "FAKE_VLLM_DELAY": "0.5",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "toa_graph.cli", "launch", "--config", str(cfg),
         "--model-path", "c=m1", "--gpus", "3,5", "--port-base", str(port),
         "--vllm-python", str(wrapper), "--endpoints-out", str(out)],
        cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not out.exists():
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "no endpoints file after 60 s"
            time.sleep(0.2)
        resolved = load_config(out)
        urls = {a.name: a.base_url for a in resolved.agents}
        assert urls == {
            "a": f"http://127.0.0.1:{port}/v1",
            "b": f"http://127.0.0.1:{port + 1}/v1",
            "c": f"http://127.0.0.1:{port}/v1",
        }
        first = httpx.get(f"{urls['a']}/models").json()
        assert [m["id"] for m in first["data"]] == ["m1", "m1-creative"]
        assert first["cuda_visible_devices"] == "3"
        assert httpx.get(f"{urls['b']}/models").json()["cuda_visible_devices"] == "5"
        # the resolved config drives a method end to end
        import asyncio

        from toa_graph.methods import METHODS

        graph = METHODS["ensemble"](agents=resolved.agents, reward=lambda p, rs: [1.0] * len(rs))
        res = asyncio.run(graph.compile().ainvoke({"prompt": "hi"}, context={"budget": 3}))
        assert {s["text"] for s in res["samples"]} == {
            "m1 on m1 says hi", "m2 on m2 says hi", "m1-creative on m1 says hi",
        }  # fmt: skip
        pids = [int(ln.split()[2].rstrip(":")) for ln in out.read_text().splitlines()[1:3]]
        assert all(Path(f"/proc/{p}").exists() for p in pids)
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(30)
    assert rc == 0
    assert not out.exists()
    for p in pids:
        assert not Path(f"/proc/{p}").exists() or "zombie" in Path(f"/proc/{p}/status").read_text()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/health")
