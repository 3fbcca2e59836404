"""Does the synthesis runner keep an endpoint's capacity busy, for every method?

A local OpenAI-compatible server (``tests/fake_openai_server.py``, its own process on
127.0.0.1) answers every chat request after a fixed delay and serves at most C requests
at once; it measures its busy time (sum over requests of the time each held one of the C
slots). For each registered method the runner (:func:`toa_graph.synthesis.run_synthesis`,
real ``ChatOpenAI`` agents from :class:`~toa_graph.config.AgentConfig`, a trivial async
reward) synthesizes N prompts with enough prompts in flight to saturate the server, and
we print::

    utilization = busy_s / (C * window_s)

where ``window_s`` runs from the first request's arrival to the last response (ramp-up
and drain included). Target: >= 0.9 for every method, TOA included (whose prompts make
one call at a time, so only concurrency *across* prompts can fill the server).

    .venv/bin/python benchmarks/runner_throughput.py [--capacity 16] [--delay 0.2] \\
        [--prompts 240] [--budget 8] [--concurrency 64] [--methods toa,moa]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from toa_graph.config import AgentConfig  # noqa: E402
from toa_graph.methods import METHODS  # noqa: E402
from toa_graph.synthesis import run_synthesis  # noqa: E402


async def bench_reward(prompt: Any, responses: list[str]) -> list[float]:
    """Instant, deterministic reward (the benchmark measures the runner, not a reward model)."""
    return [int(hashlib.sha256(r.encode()).hexdigest()[:6], 16) / 0xFFFFFF for r in responses]


def runqueue_wait_s() -> float | None:
    """Seconds this process's main thread spent runnable but not running (Linux schedstat)."""
    try:
        with open(f"/proc/self/task/{os.getpid()}/schedstat") as f:
            return int(f.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return None


async def bench_method(
    method: str, server: Any, args: argparse.Namespace, workdir: Path
) -> dict[str, Any]:
    agents = [
        AgentConfig(
            name=f"agent{i}",
            model=f"model{i}",
            base_url=server.url,
            max_retries=2,
            timeout_s=120,
            supports_n=args.supports_n,
        )
        for i in range(args.agents)
    ]
    inp = workdir / "prompts.jsonl"
    out = workdir / method
    server.reset_stats()
    wait0 = runqueue_wait_s()
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    summary = await run_synthesis(
        inp, out, method=method, agents=agents, reward=bench_reward,
        context={"budget": args.budget}, concurrency=args.concurrency, progress=False,
        collect_rows=False,
    )  # fmt: skip
    wall = time.perf_counter() - t0
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    wait1 = runqueue_wait_s()
    stats = server.stats()
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    cap = stats["capacity"]
    return {
        "method": method,
        "prompts": summary.done,
        "failed": summary.failed,
        "requests": stats["requests"],
        "generations": summary.generations,
        "failed_generations": summary.failed_generations,
        "window_s": round(stats["window_s"], 3),
        "wall_s": round(wall, 3),
        "utilization": round(stats["busy_s"] / (cap * stats["window_s"]), 4),
        "utilization_wall": round(stats["busy_s"] / (cap * wall), 4),
        "max_waiting": stats["max_waiting"],
        # capacity left idle while no request was queued (the client's shortfall) vs. while
        # requests were queued (the server's own hand-off delay), as fractions of C * window
        "idle_client": round(stats["free_no_queue_s"] / (cap * stats["window_s"]), 4),
        "idle_server": round(stats["free_with_queue_s"] / (cap * stats["window_s"]), 4),
        # time the runner's main thread was runnable but waiting for a CPU (contention)
        "runner_cpu_wait_frac": round((wait1 - wait0) / wall, 4) if wait0 is not None else None,
        "runner_cpu_ms_per_request": round(1000 * cpu / max(1, stats["requests"]), 3),
    }


async def main_async(args: argparse.Namespace) -> list[dict[str, Any]]:
    methods = args.methods.split(",") if args.methods else list(METHODS)
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    with (workdir / "prompts.jsonl").open("w") as f:
        for i in range(args.prompts):
            f.write(
                json.dumps(
                    {
                        "id": f"b{i}",
                        "question": f"Benchmark question {i}: what is {i} + 1?",
                        "answer": str(i + 1),
                    }
                )
                + "\n"
            )
    import langchain_openai  # noqa: F401  (imported before timing: it takes ~1 s)

    from tests.fake_servers import FakeServer

    server = FakeServer(delay=args.delay, capacity=args.capacity, deterministic=False).start()
    results = []
    try:
        for m in methods:
            for d in (workdir / m,):
                if d.exists():
                    for p in d.iterdir():
                        p.unlink()
            r = await bench_method(m, server, args, workdir)
            results.append(r)
            print(
                f"{m:<11} utilization {r['utilization']:.3f} (over runner wall {r['utilization_wall']:.3f})  "
                f"{r['requests']:5d} requests  {r['window_s']:6.2f} s  "
                f"idle: client {r['idle_client']:.3f} server {r['idle_server']:.3f}  "
                f"runner CPU {r['runner_cpu_ms_per_request']:.2f} ms/request, "
                f"waited for a CPU {r['runner_cpu_wait_frac'] or 0:.0%} of the time  "
                f"failed prompts {r['failed']}, generations {r['failed_generations']}",
                flush=True,
            )
    finally:
        server.stop()
    return results


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--capacity", type=int, default=16, help="requests the server serves at once (C)"
    )
    ap.add_argument("--delay", type=float, default=0.2, help="seconds per request")
    ap.add_argument("--prompts", type=int, default=240)
    ap.add_argument("--budget", type=int, default=8, help="generations per prompt")
    ap.add_argument("--agents", type=int, default=3)
    ap.add_argument("--concurrency", type=int, default=None, help="prompts in flight (default 4*C)")
    ap.add_argument(
        "--supports-n",
        action="store_true",
        help="let agents ask for n choices in one request (default: one request per generation, "
        "so every method sends `budget` requests per prompt)",
    )
    ap.add_argument("--methods", default=None, help="comma-separated (default: all registered)")
    ap.add_argument("--workdir", default=os.environ.get("TMPDIR", "/tmp") + "/toa-runner-bench")
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args()
    args.concurrency = args.concurrency or 4 * args.capacity
    print(
        f"server: C={args.capacity} slots, {args.delay * 1000:.0f} ms/request; runner: {args.prompts} prompts, "
        f"budget {args.budget}, {args.agents} agents, concurrency {args.concurrency}, "
        f"{'n choices per request' if args.supports_n else 'one request per generation'}",
        flush=True,
    )
    results = asyncio.run(main_async(args))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    worst = min(r["utilization"] for r in results)
    print(f"\nworst utilization {worst:.3f} (target >= 0.9)")
    ok = not any(r["failed"] or r["failed_generations"] for r in results)
    return 0 if worst >= 0.9 and ok else 1


if __name__ == "__main__":
    sys.exit(main())
