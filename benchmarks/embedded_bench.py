"""Measure the embedded stack: server start, tokens/s (1 and 8 concurrent), RSS, a TOA run.

    .venv/bin/python benchmarks/embedded_bench.py [--toa]

Prepares first (cached), starts its own server (stopped at the end), prints one line per
number. Results are written up in benchmarks/EMBEDDED.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import time
from typing import Any

from openai import AsyncOpenAI

from toa_graph.embedded import EmbeddedStack, prepare

PROMPTS = [
    "Explain why the sky is blue.",
    "Write a short poem about autumn.",
    "What are three tips for learning Python?",
    "Describe how a bicycle works.",
    "Why do cats purr?",
    "Summarize the causes of World War I.",
    "How do vaccines work?",
    "Give advice for a job interview.",
]


def group_rss_mib(pid: int) -> float:
    out = subprocess.run(
        ["ps", "-o", "rss=", "-g", str(pid)], capture_output=True, text=True, check=False
    ).stdout
    return sum(int(x) for x in out.split()) / 1024


async def throughput(base_url: str, model: str) -> dict[str, float]:
    client = AsyncOpenAI(base_url=base_url, api_key="EMPTY")

    async def one(prompt: str) -> int:
        r = await client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": prompt}],
            max_tokens=128,
            temperature=0.7,
            extra_body={"ignore_eos": True},  # exactly 128 tokens each
        )
        assert r.usage is not None
        return r.usage.completion_tokens

    await one("hi")  # warm-up
    t = time.monotonic()
    n = await one(PROMPTS[0])
    single = n / (time.monotonic() - t)
    t = time.monotonic()
    ns = await asyncio.gather(*(one(p) for p in PROMPTS))
    conc = sum(ns) / (time.monotonic() - t)
    return {"tok_s_single": round(single, 1), "tok_s_8_concurrent": round(conc, 1)}


async def toa_run(cfg: Any) -> dict[str, Any]:
    from toa_graph import METHODS
    from toa_graph.agents import AgentPool
    from toa_graph.rewards import build_reward

    reward = build_reward(cfg.reward, agents=cfg.agents)
    graph = METHODS["toa"](agents=AgentPool(cfg.agents), reward=reward).compile()
    prompts = [
        "Give me three tips for sleeping well.",
        "What is photosynthesis?",
        "Write a haiku about rain.",
    ]
    t = time.monotonic()
    outs = await asyncio.gather(
        *(graph.ainvoke({"prompt": p}, context=dict(cfg.method.context)) for p in prompts)
    )
    wall = time.monotonic() - t
    rows = []
    for p, o in zip(prompts, outs, strict=True):
        best = o["best"] or {}
        rows.append(
            {
                "prompt": p,
                "generations": len(o["samples"]),
                "errors": sum(1 for s in o["samples"] if s.get("error")),
                "best_agent": best.get("agent"),
                "best_reward": best.get("reward"),
                "tokens": sum(s["usage"]["total_tokens"] for s in o["samples"]),
            }
        )
    return {"toa_wall_s": round(wall, 1), "toa": rows}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument(
        "--toa", action="store_true", help="also run TOA (budget from the config) on 3 prompts"
    )
    args = ap.parse_args()
    t = time.monotonic()
    prepare()
    print(json.dumps({"prepare_s": round(time.monotonic() - t, 2)}), flush=True)
    t = time.monotonic()
    with EmbeddedStack(keep=False, reuse=False) as stack:
        print(json.dumps({"server_start_s": round(time.monotonic() - t, 1)}), flush=True)
        cfg = stack.config()
        agent = cfg.agents[0]
        assert agent.base_url is not None
        print(json.dumps(asyncio.run(throughput(agent.base_url, agent.model))), flush=True)
        pid = next(iter(stack.servers.values())).pid
        print(json.dumps({"server_rss_mib": round(group_rss_mib(pid))}), flush=True)
        if args.toa:
            print(json.dumps(asyncio.run(toa_run(cfg)), indent=1), flush=True)


if __name__ == "__main__":
    main()
