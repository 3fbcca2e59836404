"""The search's own CPU cost per generation, TOA against AB-MCTS, with instant agents.

Both graphs run the same search loop shape (controller -> agent | refine -> reward) against
5 agents and a reward that answer instantly, so all the CPU time measured is the search
plus LangGraph. Side by side in one process: each graph at 1 and 4 plays per step, and each
search alone without a graph (TOA: ``mcts.select_play`` / ``record_result``; AB-MCTS:
TreeQuest's ``ask`` / ``tell`` through :class:`toa_graph.methods.abmcts.Search`, which also
pickles the state every step as the graph does).

    python benchmarks/search_overhead.py [--plays 64,160] [--repeats 3]

CPU time (``time.process_time``), not wall time: the machine is shared.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from toa_overhead import InstantAgent, areward, mcts_ms_per_gen

from toa_graph import METHODS
from toa_graph.methods.abmcts import Search, load_algorithm

AGENTS = [f"m{i}" for i in range(5)]


async def graph_cpu_ms(method: str, plays: int, repeats: int, per_step: int) -> list[float]:
    agents = {n: InstantAgent(tag=n) for n in AGENTS}
    graph = METHODS[method](agents=agents, reward=areward).compile()
    ctx = {"budget": plays, "plays_per_step": per_step}
    await graph.ainvoke({"prompt": "warm-up"}, context=ctx)
    out = []
    for i in range(repeats):
        t0 = time.process_time()
        res = await graph.ainvoke({"prompt": f"Question {i}?"}, context=ctx)
        out.append((time.process_time() - t0) * 1000 / plays)
        assert len(res["samples"]) == plays
    return out


def abmcts_pure_cpu_ms(plays: int, repeats: int) -> list[float]:
    algo = load_algorithm()
    out = []
    for r in range(repeats):
        t0 = time.process_time()
        live: dict[str, Search] = {}
        blob = Search.start(algo, r).dumps(live)
        for k in range(plays):
            search = Search.loads(blob, live)
            (play,) = search.ask(algo, AGENTS, 1, k)
            search.tell(algo, f"s{play['index']}", (k * 37 % 11) / 11)
            blob = search.dumps(live)
        out.append((time.process_time() - t0) * 1000 / plays)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--plays", default="64,160", help="comma-separated budgets")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    med = statistics.median
    print("search CPU ms per generation, 5 instant agents, median of", args.repeats)
    print(f"{'plays':>6} {'search':<8} {'pure':>8} {'graph x1':>9} {'graph x4':>9}")
    rows: list[dict[str, Any]] = []
    for plays in (int(p) for p in args.plays.split(",")):
        t0 = time.process_time()
        _ = mcts_ms_per_gen(plays, args.repeats)  # wall clock there; CPU here
        toa_pure = (time.process_time() - t0) * 1000 / plays / args.repeats
        pure = {"toa": toa_pure, "abmcts": med(abmcts_pure_cpu_ms(plays, args.repeats))}
        for method in ("toa", "abmcts"):
            one = med(asyncio.run(graph_cpu_ms(method, plays, args.repeats, 1)))
            four = med(asyncio.run(graph_cpu_ms(method, plays, args.repeats, 4)))
            rows.append({"plays": plays, "method": method, "one": one, "four": four})
            print(f"{plays:>6} {method:<8} {pure[method]:>8.3f} {one:>9.3f} {four:>9.3f}")
        toa, ab = rows[-2], rows[-1]
        print(
            f"{plays:>6} abmcts/toa graph CPU ratio: {ab['one'] / toa['one']:.2f}x (x1), "
            f"{ab['four'] / toa['four']:.2f}x (x4)"
        )


if __name__ == "__main__":
    main()
