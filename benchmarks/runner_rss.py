"""Is the runner's memory flat in the number of prompts? (issue 18)

Runs :func:`toa_graph.synthesis.run_synthesis` (method ``random``, budget 2, by default;
``--method toa --budget 6`` for the tree search; 3 real ``ChatOpenAI`` agents) over N prompts against the zero-latency fake OpenAI server
(``tests/fake_openai_server.py``, its own process) and samples this process's RSS
(``/proc/self/status`` VmRSS) against the number of records written so far. Prints the
RSS at each checkpoint (default 1,000 / 2,500 / 5,000 / 10,000 prompts) and the growth
from the first to the last.

    python benchmarks/runner_rss.py [--prompts 10000] [--checkpoints 1000,2500,5000] \
        [--method random] [--budget 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.proc_status import rss_mb  # noqa: E402
from toa_graph.config import AgentConfig  # noqa: E402
from toa_graph.synthesis import run_synthesis  # noqa: E402


def reward(prompt: Any, responses: list[str]) -> list[float]:
    return [float(len(r) % 7) for r in responses]


async def main_async(args: argparse.Namespace) -> list[tuple[int, float]]:
    from tests.fake_servers import FakeServer

    work = Path(args.workdir)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    with (work / "prompts.jsonl").open("w") as f:
        for i in range(args.prompts):
            f.write(json.dumps({"id": f"p{i}", "question": f"Question {i}: {i} + 1?"}) + "\n")
    records = work / "out" / "records.jsonl"
    checkpoints = sorted({*(int(c) for c in args.checkpoints.split(",")), args.prompts})
    seen: list[tuple[int, float]] = []

    async def sample() -> None:
        todo = list(checkpoints)
        while todo:
            await asyncio.sleep(0.2)
            try:
                with records.open("rb") as fh:
                    done = sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 20), b""))
            except FileNotFoundError:
                continue
            while todo and done >= todo[0]:
                seen.append((todo.pop(0), rss_mb()))
                print(f"{seen[-1][0]:>7} prompts done: RSS {seen[-1][1]:7.1f} MB", flush=True)

    server = FakeServer(delay=0.0, capacity=100_000, deterministic=False).start()
    agents = [
        AgentConfig(name=f"a{i}", model=f"m{i}", base_url=server.url, supports_n=False)
        for i in range(3)
    ]
    try:
        sampler = asyncio.create_task(sample())
        t0 = time.perf_counter()
        summary = await run_synthesis(
            work / "prompts.jsonl", work / "out", method=args.method, agents=agents, reward=reward,
            context={"budget": args.budget}, concurrency=args.concurrency, progress=False,
            collect_rows=False,
        )  # fmt: skip
        await asyncio.wait_for(sampler, 5)
        wall = time.perf_counter() - t0
        print(
            f"{args.method}, budget {args.budget}: {summary.done} prompts "
            f"({summary.failed} failed) in {wall:.1f} s"
        )
    finally:
        server.stop()
    return seen


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--prompts", type=int, default=10_000)
    ap.add_argument("--checkpoints", default="1000,2500,5000")
    ap.add_argument("--concurrency", type=int, default=128)
    ap.add_argument("--method", default="random", help="a registered method (default random)")
    ap.add_argument("--budget", type=int, default=2, help="generations per prompt")
    ap.add_argument("--workdir", default=os.environ.get("TMPDIR", "/tmp") + "/toa-runner-rss")
    args = ap.parse_args()
    seen = asyncio.run(main_async(args))
    first, last = seen[0], seen[-1]
    growth = last[1] - first[1]
    print(
        f"RSS {first[1]:.1f} MB at {first[0]} prompts -> {last[1]:.1f} MB at {last[0]}: "
        f"{growth:+.1f} MB ({growth / first[1]:+.1%})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
