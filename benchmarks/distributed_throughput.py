"""Ray workers: does a second worker double the throughput when workers are the bottleneck?

Two local OpenAI-compatible servers (``tests/fake_openai_server.py``, own processes on
127.0.0.1) answer every chat request after a fixed delay with far more capacity than the
workers use, so the limit is each worker's own concurrency (``--concurrency`` prompts in
flight per worker). Two agents, each with both servers as replicas (``base_urls``), and the
shared reward actor (a cheap deterministic Python reward) as in a real deployment. The
same prompt file is synthesized (TOA, ``--budget`` plays) by:

- a single-process run (``run_synthesis``, same concurrency: what one worker should match),
- ``run_distributed`` with 1 worker,
- ``run_distributed`` with 2 workers,

on one local Ray instance (127.0.0.1). Throughput counts prompts over the time from the
moment every worker actor is up to the last record (``summary.run_s``); actor start-up
(Ray, imports, graph build; ``startup_s``) is reported apart. Target (issue 9):
2 workers >= 1.8x the throughput of 1.

    .venv/bin/python benchmarks/distributed_throughput.py [--prompts 96] [--budget 8] \\
        [--concurrency 8] [--delay 0.25]
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
    ap.add_argument("--prompts", type=int, default=96)
    ap.add_argument("--budget", type=int, default=8, help="TOA plays per prompt")
    ap.add_argument("--concurrency", type=int, default=8, help="prompts in flight per worker")
    ap.add_argument("--delay", type=float, default=0.25, help="server seconds per request")
    ap.add_argument("--capacity", type=int, default=512, help="requests each server serves at once")
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args()

    servers = [FakeServer(delay=args.delay, capacity=args.capacity).start() for _ in range(2)]
    try:
        results = asyncio.run(bench(args, servers))
    finally:
        for s in servers:
            s.stop()
    one, two = results["ray_1"], results["ray_2"]
    ratio = two["prompts_per_s"] / one["prompts_per_s"]
    print()
    print(
        f"{'run':<16} {'prompts':>7} {'startup s':>9} {'run s':>7} {'prompts/s':>9} {'CPU busy':>8}"
    )
    for name, r in results.items():
        print(
            f"{name:<16} {r['prompts']:>7} {r['startup_s']:>9.2f} {r['run_s']:>7.2f} "
            f"{r['prompts_per_s']:>9.2f} {r['cpu_busy']:>8.0%}"
        )
    print(f"\n2 workers / 1 worker: {ratio:.2f}x (target >= 1.8x)")
    print(f"ideal per worker: {args.concurrency / (args.budget * args.delay):.2f} prompts/s "
          f"(concurrency / (budget x delay), TOA plays run one after another)")  # fmt: skip
    if args.json:
        Path(args.json).write_text(
            json.dumps({**results, "ratio": ratio, "args": vars(args)}, indent=2)
        )
    return 0 if ratio >= 1.8 else 1


async def bench(args: argparse.Namespace, servers: list[FakeServer]) -> dict[str, dict[str, float]]:
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
    results: dict[str, dict[str, float]] = {}
    print(f"{platform.node()}: {os.cpu_count()} CPUs, python {platform.python_version()}, "
          f"ray {import_ray().__version__}")  # fmt: skip

    t0 = time.perf_counter()
    c0 = cpu_times()
    s = await run_synthesis(
        inp, tmp / "single", method="toa", agents=agents, reward=build_reward(REWARD),
        context=context, concurrency=args.concurrency, progress=False, digest=digest,
    )  # fmt: skip
    wall = time.perf_counter() - t0
    results["single_process"] = {
        "prompts": s.done, "startup_s": 0.0, "run_s": wall, "prompts_per_s": s.done / wall,
        "cpu_busy": busy_since(c0),
    }  # fmt: skip
    reference = {r["id"]: r["best"]["text"] for r in read_records(tmp / "single")}

    with ray_session(None, num_cpus=max(4, os.cpu_count() or 2)):
        for workers in (1, 2):
            out = tmp / f"ray{workers}"
            c0 = cpu_times()
            d = await run_distributed(
                inp, out, method="toa", agents=agents, reward=REWARD, context=context,
                workers=workers, concurrency=args.concurrency, progress=False, digest=digest,
            )  # fmt: skip
            assert d.done == args.prompts and d.failed == 0, d.to_json()
            same = {r["id"]: r["best"]["text"] for r in read_records(out)} == reference
            assert same, "distributed records differ from the single-process run"
            results[f"ray_{workers}"] = {
                "prompts": d.done, "startup_s": d.startup_s or 0.0, "run_s": d.run_s or 0.0,
                "prompts_per_s": d.done / (d.run_s or float("nan")),
                "cpu_busy": busy_since(c0),
            }  # fmt: skip
            print(f"{workers} worker(s): {json.dumps(results[f'ray_{workers}'])}")
    return results


if __name__ == "__main__":
    sys.exit(main())
