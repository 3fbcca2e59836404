"""Ray scale-out: do 2 worker processes beat 1 at the same total concurrency?

What scale-out is for: one synthesis process tops out at the CPU one core gives it
(LangGraph supersteps and the HTTP client cost a few ms of Python per generation). A
second worker only helps if it adds CPU, not concurrency, so this compares

- ``run_distributed`` with 1 worker running ``--concurrency`` prompts at once, and
- ``run_distributed`` with 2 workers running ``--concurrency / 2`` each (same total),

against fake OpenAI-compatible servers (``tests/fake_openai_server.py``, own processes on
127.0.0.1, ``--deterministic``) with ample capacity and near-zero latency, so the servers
never make anyone wait and the workers' own CPU is the limit. A single-process run
(``run_synthesis``, same concurrency, no Ray; timed over its whole wall, start-up
included) is run first for the records every Ray run must reproduce. Two agents, each with every server as a
replica; a cheap deterministic Python reward built in each worker (``--shared-reward``:
one reward actor for both instead, which adds a Ray call per play and a third process).

Throughput counts generations over the time from every worker actor being up to the last
record (``summary.run_s``); actor start-up is reported apart. Prints the 2-vs-1 ratio and
the per-process ceiling (generations/s of one process), with the machine's CPU count and
load, since the ratio can only exceed 1 while the machine has a core to spare.

    .venv/bin/python benchmarks/distributed_throughput.py [--prompts 160] [--budget 8] \\
        [--concurrency 32] [--delay 0.001]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p
)  # Ray worker processes import tests.fakes

from tests.fake_servers import FakeServer  # noqa: E402
from toa_graph.config import AgentConfig, PythonRewardConfig  # noqa: E402
from toa_graph.distributed import import_ray, ray_session, run_distributed  # noqa: E402
from toa_graph.rewards import build_reward  # noqa: E402
from toa_graph.synthesis import config_digest, read_records, run_synthesis  # noqa: E402

REWARD = PythonRewardConfig(kind="python", target="tests.fakes:hash_reward")


def cpu_times() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine (Linux /proc/stat; zeros elsewhere)."""
    try:
        fields = [float(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    except OSError:
        return 0.0, 0.0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)
    return sum(fields) - idle, sum(fields)


def busy_since(start: tuple[float, float]) -> float:
    """Machine CPU busy fraction since ``start`` (all cores; 1.0 = every core busy)."""
    b, t = cpu_times()
    return (b - start[0]) / (t - start[1]) if t > start[1] else float("nan")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prompts", type=int, default=160)
    ap.add_argument("--budget", type=int, default=8, help="TOA plays per prompt")
    ap.add_argument(
        "--concurrency", type=int, default=32, help="prompts in flight in total (every run)"
    )
    ap.add_argument("--delay", type=float, default=0.001, help="server seconds per request")
    ap.add_argument("--capacity", type=int, default=1024, help="requests a server serves at once")
    ap.add_argument("--servers", type=int, default=2, help="fake server processes")
    ap.add_argument("--shared-reward", action="store_true", help="one reward actor for all")
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args()
    if args.concurrency < 2 or args.concurrency % 2:
        ap.error("--concurrency must be even (it is split over 2 workers)")

    load = os.getloadavg()
    servers = [
        FakeServer(delay=args.delay, capacity=args.capacity).start() for _ in range(args.servers)
    ]
    try:
        results = asyncio.run(bench(args, servers))
    finally:
        for s in servers:
            s.stop()
    report(args, results, load)
    return 0


async def bench(args: argparse.Namespace, servers: list[FakeServer]) -> dict[str, dict[str, Any]]:
    urls = [s.url for s in servers]
    agents = [
        AgentConfig(name=n, model=f"{n}-model", base_urls=urls, max_retries=2, timeout_s=60)
        for n in ("alpha", "beta")
    ]
    context = {"budget": args.budget}
    digest = config_digest(method="toa", context=context, agents=agents, reward=REWARD)
    tmp = Path(tempfile.mkdtemp(prefix="toa-graph-bench-ray-"))
    inp = tmp / "prompts.jsonl"
    inp.write_text(
        "".join(
            json.dumps({"id": f"p{i:05d}", "prompt": f"Question {i}: explain item {i}."}) + "\n"
            for i in range(args.prompts)
        )
    )
    results: dict[str, dict[str, Any]] = {}
    print(f"{platform.node()}: {os.cpu_count()} CPUs, python {platform.python_version()}, "
          f"ray {import_ray().__version__}; {args.prompts} prompts x TOA budget {args.budget}, "
          f"total concurrency {args.concurrency}, server delay {args.delay} s")  # fmt: skip

    t0 = time.perf_counter()
    c0 = cpu_times()
    s = await run_synthesis(
        inp, tmp / "single", method="toa", agents=agents, reward=build_reward(REWARD),
        context=context, concurrency=args.concurrency, progress=False, digest=digest,
    )  # fmt: skip
    wall = time.perf_counter() - t0
    results["single_process"] = {
        "workers": 0, "per_worker": args.concurrency, "prompts": s.done,
        "generations": s.generations, "startup_s": 0.0, "run_s": wall,
        "gens_per_s": s.generations / wall, "cpu_busy": busy_since(c0), "per_worker_prompts": [],
        "worker_cpu_s": None,
    }  # fmt: skip
    reference = {r["id"]: r["best"]["text"] for r in read_records(tmp / "single")}

    with ray_session(None, num_cpus=max(4, os.cpu_count() or 2)):
        for workers in (1, 2):
            out = tmp / f"ray{workers}"
            c0 = cpu_times()
            d = await run_distributed(
                inp, out, method="toa", agents=agents, reward=REWARD, context=context,
                workers=workers, concurrency=args.concurrency // workers, progress=False,
                digest=digest, shared_reward=args.shared_reward,
            )  # fmt: skip
            assert d.done == args.prompts and d.failed == 0, d.to_json()
            same = {r["id"]: r["best"]["text"] for r in read_records(out)} == reference
            assert same, "distributed records differ from the single-process run"
            results[f"ray_{workers}"] = {
                "workers": workers, "per_worker": args.concurrency // workers, "prompts": d.done,
                "generations": d.generations, "startup_s": d.startup_s or 0.0,
                "run_s": d.run_s or 0.0, "gens_per_s": d.generations / (d.run_s or float("nan")),
                "cpu_busy": busy_since(c0),
                "per_worker_prompts": [w["prompts"] for w in d.worker_info],
                "worker_cpu_s": sum(w["cpu_s"] for w in d.worker_info),
            }  # fmt: skip
            print(f"{workers} worker(s): {json.dumps(results[f'ray_{workers}'])}")
    return results


def report(args: argparse.Namespace, results: dict[str, dict[str, Any]], load: Any) -> None:
    one, two = results["ray_1"], results["ray_2"]
    ratio = two["gens_per_s"] / one["gens_per_s"]
    print()
    print(f"{'run':<16} {'workers x conc':>14} {'generations':>11} {'startup s':>9} "
          f"{'run s':>7} {'gens/s':>8} {'CPU busy':>8}  prompts per worker")  # fmt: skip
    for name, r in results.items():
        shape = f"{r['workers']} x {r['per_worker']}" if r["workers"] else f"- x {r['per_worker']}"
        print(
            f"{name:<16} {shape:>14} {r['generations']:>11} {r['startup_s']:>9.2f} "
            f"{r['run_s']:>7.2f} {r['gens_per_s']:>8.1f} {r['cpu_busy']:>8.0%}  "
            f"{r['per_worker_prompts']}"
        )
    ceiling = one["gens_per_s"]
    single = results["single_process"]["gens_per_s"]
    print(f"\n2 workers / 1 worker at total concurrency {args.concurrency}: {ratio:.2f}x")
    print(f"per-process ceiling: {ceiling:.1f} generations/s (1 Ray worker; the single process "
          f"without Ray: {single:.1f}, over its whole wall time, start-up included)")  # fmt: skip
    cpu_ms = 1000 * one["worker_cpu_s"] / one["generations"]
    print(f"worker CPU per generation: {cpu_ms:.2f} ms (1 worker), "
          f"{1000 * two['worker_cpu_s'] / two['generations']:.2f} ms (2 workers): "
          f"one process on a core of its own tops out near {1000 / cpu_ms:.0f} generations/s")  # fmt: skip
    print(f"machine: {os.cpu_count()} CPUs, load average before the run "
          f"{load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} (1 / 5 / 15 min)")  # fmt: skip
    if args.json:
        extra = {"ratio": ratio, "ceiling_gens_per_s": ceiling, "args": vars(args)}
        extra |= {"loadavg_before": list(load), "cpus": os.cpu_count()}
        Path(args.json).write_text(json.dumps({**results, **extra}, indent=2))


if __name__ == "__main__":
    sys.exit(main())
