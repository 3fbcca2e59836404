"""TOA with several plays per step vs. one, on the simulated benchmark (toa_graph.simulate).

Quality: mean TRUE quality of the best-by-reward answer over many tasks and world seeds,
for plays_per_step=1 (the paper) and plays_per_step=K under each pending rule, with 95%
CIs of the paired difference to plays_per_step=1. The search runs through the same pure
functions the graph's controller/backprop call (mcts.select_play / record_result), with the
same prompts (sampling.answer_messages / refine_messages) and simulated agents, minus the
LangGraph plumbing, so thousands of runs take seconds.

Wall time: simulated, per prompt = steps x (generation latency + reward latency): the
plays of one step run concurrently. With --graph-check N, the real TOA graph is also run
on N tasks with asyncio-sleep agents of --latency seconds and its measured wall time per
prompt is printed (and its best answer checked against the pure run's).

  python benchmarks/parallel_plays.py --tasks 200 --seeds 3 --budget 64 --k 4
"""

from __future__ import annotations

import argparse
import asyncio
import math
import statistics
import time
from typing import Any

from toa_graph import mcts
from toa_graph.sampling import answer_messages, refine_messages
from toa_graph.simulate import SimWorld, sim_agents, sim_prompts, true_quality


def _text(messages: list[dict[str, Any]]) -> str:
    return "\n".join(str(m["content"]) for m in messages)


def run_toa(
    world: SimWorld, task: int, *, budget: int, k: int, pending: str, alpha: float, tau: float
) -> tuple[float, int, float]:
    """One prompt: (true quality of the best-by-reward answer, steps, best reward)."""
    agents = sim_agents(world)
    prompt = sim_prompts(1, start=task)[0]["prompt"]
    params = mcts.SearchParams(
        alpha=alpha,
        tau=tau,
        width=max(1, budget // 3),
        pending=pending,  # type: ignore[arg-type]
    )
    tree = mcts.new_tree(list(agents))
    texts: dict[str, str] = {}
    best: tuple[float, str] | None = None
    steps = 0
    while tree["plays"] < budget:
        batch = []
        for _ in range(min(k, budget - tree["plays"])):
            tree, play = mcts.select_play(tree, params)
            batch.append(play)
        steps += 1
        for play in batch:  # generate all of the step, then score, then record in order
            if play["kind"] == "refine":
                msgs = refine_messages(prompt, texts[str(play["parent_sample"])])
            else:
                msgs = answer_messages(prompt)
            text, _ = agents[play["agent"]].respond(_text(msgs))
            sid = f"s{play['index']}"
            texts[sid] = text
            r = world.reward(text)
            if best is None or r > best[0]:
                best = (r, text)
            tree = mcts.record_result(tree, play, sample_id=sid, reward=r, params=params)
    assert best is not None
    q = true_quality(best[1])
    assert q is not None
    return q, steps, best[0]


def _ci(xs: list[float]) -> float:
    return 1.96 * statistics.stdev(xs) / math.sqrt(len(xs)) if len(xs) > 1 else float("nan")


async def _graph_wall(world: SimWorld, n: int, k: int, pending: str, args: Any) -> list[float]:
    from toa_graph.methods.toa import create_toa_graph
    from toa_graph.simulate import SimReward

    walls, graph = [], None
    for task in range(n):
        agents = sim_agents(world, latency_s=args.latency)
        graph = create_toa_graph(agents, SimReward(world)).compile()
        prompt = sim_prompts(1, start=task)[0]["prompt"]
        ctx = {"budget": args.budget, "plays_per_step": k, "pending_value": pending,
               "alpha": args.alpha, "tau": args.tau}  # fmt: skip
        t0 = time.perf_counter()
        out = await graph.ainvoke({"prompt": prompt}, context=ctx)
        walls.append(time.perf_counter() - t0)
        q_graph = true_quality(out["best"]["text"])
        q_pure, _, _ = run_toa(world, task, budget=args.budget, k=k, pending=pending,
                               alpha=args.alpha, tau=args.tau)  # fmt: skip
        assert q_graph == q_pure, (task, q_graph, q_pure)
    return walls


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--tasks", type=int, default=200)
    ap.add_argument("--seeds", type=int, default=3, help="world seeds (hidden skills, noise)")
    ap.add_argument("--budget", type=int, default=64)
    ap.add_argument("--k", type=int, default=4, help="plays per step to compare with 1")
    ap.add_argument("--alpha", type=float, default=0.01)
    ap.add_argument("--tau", type=float, default=0.1)
    ap.add_argument("--gen-latency", type=float, default=2.0, help="simulated s per generation")
    ap.add_argument("--reward-latency", type=float, default=0.2, help="simulated s per scoring")
    ap.add_argument("--graph-check", type=int, default=0, help="tasks to run through the graph")
    ap.add_argument("--latency", type=float, default=0.05, help="graph check: s per agent call")
    args = ap.parse_args()

    configs = [(1, "mean"), (args.k, "zero"), (args.k, "mean")]
    results: dict[tuple[int, str], list[float]] = {c: [] for c in configs}
    steps: dict[tuple[int, str], list[int]] = {c: [] for c in configs}
    t0 = time.perf_counter()
    for seed in range(args.seeds):
        world = SimWorld(seed=seed)
        for task in range(args.tasks):
            for k, rule in configs:
                q, n, _ = run_toa(world, task, budget=args.budget, k=k, pending=rule,
                                  alpha=args.alpha, tau=args.tau)  # fmt: skip
                results[(k, rule)].append(q)
                steps[(k, rule)].append(n)
    elapsed = time.perf_counter() - t0
    base = results[configs[0]]
    n = len(base)
    print(f"budget {args.budget}, {args.tasks} tasks x {args.seeds} seeds = {n} prompts, "
          f"alpha {args.alpha}, tau {args.tau}; latency {args.gen_latency}s/generation + "
          f"{args.reward_latency}s/scoring; {elapsed:.1f}s")  # fmt: skip
    print(f"{'plays/step':>10} {'pending':>8} {'true quality':>18} {'vs k=1 (paired)':>22} "
          f"{'steps':>6} {'sim wall/prompt':>16}")  # fmt: skip
    for k, rule in configs:
        qs = results[(k, rule)]
        diff = [a - b for a, b in zip(qs, base, strict=True)]
        rel = 100 * statistics.mean(diff) / statistics.mean(base)
        rel_ci = 100 * _ci(diff) / statistics.mean(base)
        st = statistics.mean(steps[(k, rule)])
        wall = st * (args.gen_latency + args.reward_latency)
        label = "(paper)" if k == 1 else rule
        print(f"{k:>10} {label:>8} {statistics.mean(qs):>10.4f} +-{_ci(qs):.4f} "
              f"{rel:>+13.2f}% +-{rel_ci:.2f}% {st:>6.1f} {wall:>15.1f}s")  # fmt: skip
    if args.graph_check:
        world = SimWorld(seed=0)
        for k, rule in configs:
            walls = asyncio.run(_graph_wall(world, args.graph_check, k, rule, args))
            print(f"graph check k={k} {rule}: {args.graph_check} prompts, best answer = pure "
                  f"run's; measured wall/prompt {statistics.mean(walls):.3f}s with "
                  f"{args.latency}s agent calls")  # fmt: skip


if __name__ == "__main__":
    main()
