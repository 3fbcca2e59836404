"""Does one runner process keep up with its HTTP client? (issues 18, 28)

Side by side in ONE run, against the same loopback zero-latency OpenAI-compatible endpoint
(``tests/fake_openai_server.py`` in its own process, pinned to its own core where the
machine has two or more), with the same number of requests in flight:

1. the bare ``openai.AsyncOpenAI`` client (``chat.completions.create``);
2. ``ChatOpenAI.ainvoke`` (what our agents are, built as the runner builds them) in three
   pool layouts: one client for all requests in flight, one client per endpoint (per agent:
   the runner's agents are separate endpoints), one client per 64 requests in flight. The
   fastest layout of the repeat is the reference: the best-configured client;
3. ``AgentPool.generate``, the agents' own call path, which spreads an agent's requests in
   flight over several ``ChatOpenAI`` clients;
4. the runner (:func:`toa_graph.synthesis.run_synthesis`, the ``toa-graph synthesize``
   path, in this process) for every registered method, TOA with 1 and with 4 plays per
   step, with ``concurrency`` prompts in flight.

Each is printed as requests (= generations: ``supports_n`` is off) per second, and the
runner's rate as a ratio of the best-configured client's. Target: >= 0.70 for every
method, in every repeat.

    python benchmarks/client_ratio.py [--inflight 128] [--requests 3000] [--prompts 400] \\
        [--budget 6] [--methods toa,random] [--repeats 1] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import resource
import shutil
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from toa_graph.config import AgentConfig  # noqa: E402
from toa_graph.methods import METHODS  # noqa: E402
from toa_graph.synthesis import run_synthesis  # noqa: E402

DEBATE_BUDGET = 12
ERRORS: list[str] = []  # client-phase calls that failed and were made again
QUESTION = [{"role": "user", "content": "Benchmark question: what is 2 + 2?"}]


def python_reward(prompt: Any, responses: list[str]) -> list[float]:
    """Instant, deterministic python reward (the benchmark measures the runner, not a model)."""
    return [int(hashlib.sha256(r.encode()).hexdigest()[:6], 16) / 0xFFFFFF for r in responses]


def cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


async def closed_loop(call: Callable[[], Awaitable[Any]], total: int, inflight: int) -> float:
    """``total`` calls with ``inflight`` at once; returns the wall seconds. A call that
    fails (a connection reset by the loaded server) is made again, and counted."""
    left = [total]

    async def worker() -> None:
        while left[0] > 0:
            left[0] -= 1
            for attempt in range(3):
                try:
                    await call()
                    break
                except Exception as exc:
                    ERRORS.append(repr(exc))
                    if attempt == 2:
                        raise

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(inflight)))
    return time.perf_counter() - t0


async def measured(
    path: str, call: Callable[[], Awaitable[Any]], total: int, inflight: int
) -> dict[str, Any]:
    """A client phase: a warm-up (connections, imports), then ``total`` timed calls."""
    await closed_loop(call, min(200, total), inflight)
    c0 = cpu_s()
    wall = await closed_loop(call, total, inflight)
    return {"path": path, "n": total, "wall_s": wall, "cpu_s": cpu_s() - c0}


async def bare_openai(url: str, total: int, inflight: int) -> dict[str, Any]:
    import httpx
    import openai

    http = httpx.AsyncClient(limits=httpx.Limits(max_connections=1000))
    client = openai.AsyncOpenAI(base_url=url, api_key="EMPTY", max_retries=0, http_client=http)

    async def call() -> None:
        await client.chat.completions.create(
            model="model0",
            messages=QUESTION,
            temperature=0.7,
            max_tokens=64,  # type: ignore[arg-type]
        )

    row = await measured("openai.AsyncOpenAI", call, total, inflight)
    await client.close()
    return row


LAYOUTS = ("x1", "per-endpoint", "per-64")


async def chat_openai(
    url: str, total: int, inflight: int, layout: str, agents: int
) -> dict[str, Any]:
    """``ChatOpenAI.ainvoke`` with ``inflight`` requests spread round-robin over one client
    (``x1``), one per endpoint (``per-endpoint``: ``agents`` clients, one model each) or one
    per 64 requests in flight (``per-64``)."""
    from toa_graph.agents.client import build_chat_openai

    n = {"x1": 1, "per-endpoint": agents, "per-64": -(-inflight // 64)}[layout]
    per_endpoint = layout == "per-endpoint"
    cfgs = [
        AgentConfig(name=f"agent{i}", model=f"model{i if per_endpoint else 0}", base_url=url)
        for i in range(n)
    ]
    models = [build_chat_openai(cfg.model_copy(update={"max_tokens": 64}), url) for cfg in cfgs]
    turn = [0]

    async def call() -> None:
        turn[0] += 1
        await models[turn[0] % n].ainvoke(QUESTION)

    return await measured(f"ChatOpenAI {layout}", call, total, inflight)


async def agent_pool(url: str, total: int, inflight: int) -> dict[str, Any]:
    """The agents' own path: ``AgentPool.generate`` (retries, limits, usage), which spreads
    one agent's requests in flight over several ``ChatOpenAI`` clients (one connection pool
    per ``REQUESTS_PER_CLIENT``) instead of one deep pool."""
    from toa_graph.agents import AgentPool

    cfg = AgentConfig(name="agent0", model="model0", base_url=url, max_tokens=64)
    pool = AgentPool([cfg])

    async def call() -> None:
        (g,) = await pool.generate("agent0", QUESTION)
        if g.error:
            raise RuntimeError(g.error)

    return await measured("AgentPool.generate", call, total, inflight)


async def runner(
    url: str, method: str, context: dict[str, Any], args: argparse.Namespace, label: str
) -> dict[str, Any]:
    agents = [
        AgentConfig(
            name=f"agent{i}", model=f"model{i}", base_url=url, max_tokens=64, supports_n=False
        )
        for i in range(args.agents)
    ]
    work = Path(args.workdir)
    out = work / label
    shutil.rmtree(out, ignore_errors=True)
    c0 = cpu_s()
    t0 = time.perf_counter()
    summary = await run_synthesis(
        work / "prompts.jsonl", out, method=method, agents=agents, reward=python_reward,
        context={"budget": args.budget, **context}, concurrency=args.inflight, progress=False,
        collect_rows=False,
    )  # fmt: skip
    wall = time.perf_counter() - t0
    return {
        "path": f"runner {label}",
        "n": summary.generations,
        "wall_s": wall,
        "cpu_s": cpu_s() - c0,
        "failed": summary.failed + summary.failed_generations,
    }


def cases(methods: list[str]) -> list[tuple[str, str, dict[str, Any]]]:
    out: list[tuple[str, str, dict[str, Any]]] = []
    for m in methods:
        if m == "toa":
            out.append(("toa-pps1", "toa", {"plays_per_step": 1}))
            out.append(("toa-pps4", "toa", {"plays_per_step": 4}))
        elif m == "debate":  # a debate round of 3 agents needs 7 generations or more
            out.append((m, m, {"budget": DEBATE_BUDGET}))
        else:
            out.append((m, m, {}))
    return out


def pin_to(cpu: int) -> None:
    """Pin this process to one CPU when the machine has more than one (best effort)."""
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {cpu})


async def main_async(args: argparse.Namespace) -> list[dict[str, Any]]:
    from tests.fake_servers import FakeServer

    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    with (work / "prompts.jsonl").open("w") as f:
        for i in range(args.prompts):
            row = {"id": f"b{i}", "question": f"Benchmark question {i}: what is {i} + 1?",
                   "answer": str(i + 1)}  # fmt: skip
            f.write(json.dumps(row) + "\n")
    import langchain_openai  # noqa: F401  (imported before timing: it takes ~1 s)

    server = FakeServer(delay=0.0, capacity=100_000, deterministic=False).start()
    if args.pin and server.proc is not None and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(server.proc.pid, {1})  # the server gets its own core
        pin_to(0)
    methods = args.methods.split(",") if args.methods else list(METHODS)
    rows: list[dict[str, Any]] = []
    try:
        for rep in range(args.repeats):
            clients = [
                await chat_openai(server.url, args.requests, args.inflight, layout, args.agents)
                for layout in LAYOUTS
            ]
            base = max(clients, key=lambda r: r["n"] / r["wall_s"])
            base["reference"] = True
            batch = [
                await bare_openai(server.url, args.requests, args.inflight),
                *clients,
                await agent_pool(server.url, args.requests, args.inflight),
            ]
            for label, method, ctx in cases(methods):
                batch.append(await runner(server.url, method, ctx, args, label))
            ref = base["n"] / base["wall_s"]
            ref_cpu = base["cpu_s"] / base["n"]
            for r in batch:
                r["repeat"] = rep
                r["rate"] = r["n"] / r["wall_s"]
                r["ratio"] = r["rate"] / ref
                r["cpu_ms_per_request"] = 1000 * r["cpu_s"] / max(1, r["n"])
                # the ratio if both ran alone on one core (CPU-bound): robust to other load
                r["cpu_ratio"] = ref_cpu / max(1e-9, r["cpu_s"] / max(1, r["n"]))
                print(
                    f"[{rep}] {r['path']:<22} {r['rate']:7.1f} req/s  "
                    f"{r['cpu_ms_per_request']:5.2f} ms CPU/req  "
                    f"ratio to best client {r['ratio']:.2f} (by CPU {r['cpu_ratio']:.2f})"
                    + ("  <- reference" if r.get("reference") else "")
                    + (f"  failed {r['failed']}" if r.get("failed") else ""),
                    flush=True,
                )
            rows.extend(batch)
    finally:
        server.stop()
    if ERRORS:
        print(f"client phases: {len(ERRORS)} calls failed once and were retried: {ERRORS[0]}")
    return rows


def summarize(rows: list[dict[str, Any]]) -> bool:
    paths = list(dict.fromkeys(r["path"] for r in rows))
    print(
        f"\n{'path':<22} {'req/s (median)':>15} {'ratio median':>13} {'ratio min-max':>14} "
        f"{'CPU ms/req':>11} {'ratio by CPU':>13}"
    )
    ok = True
    for p in paths:
        rs = [r for r in rows if r["path"] == p]
        ratios = [r["ratio"] for r in rs]
        print(
            f"{p:<22} {statistics.median(r['rate'] for r in rs):15.1f} "
            f"{statistics.median(ratios):13.2f} {min(ratios):9.2f}-{max(ratios):.2f} "
            f"{statistics.median(r['cpu_ms_per_request'] for r in rs):11.2f} "
            f"{statistics.median(r['cpu_ratio'] for r in rs):13.2f}"
        )
        if p.startswith("runner"):
            ok = ok and min(ratios) >= 0.7 and not any(r.get("failed") for r in rs)
    refs = [r["path"] for r in rows if r.get("reference")]
    print(f"reference (fastest client layout per repeat): {', '.join(refs)}")
    print(
        f"verdict: {'PASS' if ok else 'FAIL'} (runner >= 0.70 x the best-configured client "
        "for every method, in every repeat)"
    )
    return ok


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--inflight", type=int, default=128, help="requests / prompts in flight")
    ap.add_argument("--requests", type=int, default=3000, help="requests per client phase")
    ap.add_argument("--prompts", type=int, default=400, help="prompts per runner phase")
    ap.add_argument("--budget", type=int, default=6, help="generations per prompt")
    ap.add_argument("--agents", type=int, default=3)
    ap.add_argument("--methods", default=None, help="comma-separated (default: all registered)")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument(
        "--no-pin", dest="pin", action="store_false", help="do not pin server and runner to cores"
    )
    ap.add_argument("--workdir", default=os.environ.get("TMPDIR", "/tmp") + "/toa-client-ratio")
    ap.add_argument("--json", default=None, help="also write the rows here")
    args = ap.parse_args()
    print(
        f"zero-latency server (own process{', own core' if args.pin else ''}); "
        f"{args.inflight} in flight; clients {args.requests} requests; runner {args.prompts} "
        f"prompts x budget {args.budget}, {args.agents} agents, python reward",
        flush=True,
    )
    rows = asyncio.run(main_async(args))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    return 0 if summarize(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
