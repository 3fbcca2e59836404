"""``langgraph dev`` (offline, no LangSmith key) serving every method of langgraph.json,
driven through ``langgraph_sdk``: assistants, context schema, a thread, a run, the final
state's samples, and TOA's tree growth as custom stream events. Agents are the embedded
vLLM servers of the session fixture (passed to the graphs through $TOA_GRAPH_CONFIG)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from toa_graph.config import ProjectConfig
from toa_graph.launch import resolved_config

ROOT = Path(__file__).resolve().parents[2]
pytest.importorskip("langgraph_sdk")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def langgraph_dev(
    embedded_config: ProjectConfig, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("langgraph-dev")
    cfg_path = tmp / "endpoints.yaml"
    cfg_path.write_text(yaml.safe_dump(resolved_config(embedded_config, []), sort_keys=False))
    port = _free_port()
    env = {
        **os.environ,
        "LANGGRAPH_CLI_NO_ANALYTICS": "1",
        "LANGSMITH_TRACING": "false",
        "LANGCHAIN_TRACING_V2": "false",
        "TOA_GRAPH_CONFIG": str(cfg_path),
    }
    env.pop("LANGSMITH_API_KEY", None)
    langgraph = Path(sys.executable).parent / "langgraph"
    log = tmp / "langgraph-dev.log"
    with open(log, "wb") as logf:
        proc = subprocess.Popen(
            [str(langgraph), "dev", "--no-browser", "--no-reload",
             "--port", str(port), "--host", "127.0.0.1"],
            cwd=ROOT, env=env, stdout=logf, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, f"langgraph dev exited:\n{log.read_text()[-4000:]}"
            try:
                if httpx.get(f"{url}/ok", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, f"not up after 180 s:\n{log.read_text()[-4000:]}"
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # its own session: pgid == pid
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def test_every_method_is_an_assistant_with_editable_context(langgraph_dev: str) -> None:
    from langgraph_sdk import get_client

    async def main() -> None:
        client = get_client(url=langgraph_dev)
        graphs = json.loads((ROOT / "langgraph.json").read_text())["graphs"]
        assistants = await client.assistants.search(limit=100)
        assert {a["graph_id"] for a in assistants} >= set(graphs)
        from toa_graph.methods import METHODS

        assert set(graphs) == set(METHODS)
        toa = next(a for a in assistants if a["graph_id"] == "toa")
        schemas = await client.assistants.get_schemas(toa["assistant_id"])
        knobs = schemas["context_schema"]["properties"]
        assert {"budget", "alpha", "tau", "width", "plays_per_step"} <= set(knobs)
        assert "prompt" in schemas["input_schema"]["properties"]
        for a in assistants:  # Studio's chat view (and A2A) need `messages` in the input
            inp = (await client.assistants.get_schemas(a["assistant_id"]))["input_schema"]
            assert "messages" in inp["properties"], a["graph_id"]
            assert "prompt" not in inp.get("required", []), a["graph_id"]
        assert {"samples", "best", "tree"} <= set(schemas["output_schema"]["properties"])

    asyncio.run(main())


def test_toa_run_through_sdk(langgraph_dev: str) -> None:
    from langgraph_sdk import get_client

    async def main() -> None:
        client = get_client(url=langgraph_dev)
        for method in ("toa", "abmcts"):  # both tree searches stream the same events
            thread = await client.threads.create()
            steps = []
            async for part in client.runs.stream(
                thread["thread_id"],
                method,
                input={"prompt": "What is the capital of France?"},
                context={"budget": 3, "max_tokens": 48},
                stream_mode=["custom", "values"],
            ):
                if part.event == "custom" and part.data.get("event") == "toa_step":
                    steps.append(part.data)
            assert [s["plays"] for s in steps] == [1, 2, 3], method
            assert all(s["budget"] == 3 for s in steps)

            state = await client.threads.get_state(thread["thread_id"])
            samples = state["values"]["samples"]
            assert len(samples) == 3
            assert all(s["text"].strip() for s in samples if not s["error"])
            assert state["values"]["best"]["id"] in {s["id"] for s in samples}
            assert len(state["values"]["tree"]["nodes"]) >= 3

        # a plain run: create, join, read the final values
        thread2 = await client.threads.create()
        run = await client.runs.create(
            thread2["thread_id"],
            "moa",
            input={"prompt": "Name a colour."},
            context={"budget": 2, "max_tokens": 32},
        )
        final = await client.runs.join(thread2["thread_id"], run["run_id"])
        assert len(final["samples"]) == 2
        assert {s["agent"] for s in final["samples"]} <= {"smol-precise", "smol-creative"}
        got = await client.runs.get(thread2["thread_id"], run["run_id"])
        assert got["status"] == "success"

        # a chat turn, as Studio's chat view sends it: messages in, the best answer appended
        thread3 = await client.threads.create()
        final = await client.runs.wait(
            thread3["thread_id"],
            "toa",
            input={"messages": [{"type": "human", "content": "Name a fruit."}]},
            context={"budget": 2, "max_tokens": 32},
        )
        assert [m["type"] for m in final["messages"]] == ["human", "ai"]
        assert final["messages"][-1]["content"] == final["best"]["text"]

    asyncio.run(main())
