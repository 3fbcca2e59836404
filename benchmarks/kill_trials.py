"""SIGKILL trials (issue 27): ``toa-graph synthesize`` killed at a random point and resumed,
many times per method, against a fake OpenAI-compatible server counting requests.

    PYTHONPATH=. python benchmarks/kill_trials.py [--methods toa,random,ensemble]
        [--trials 20] [--prompts 24] [--budget 6] [--concurrency 4] [--json OUT]

For each method: one uninterrupted run (its requests and records are the reference), then
``--trials`` cycles, each a fresh output directory: start the run as a real process, wait
until the server has received a random number of its requests (1 to the reference's less
one) and a random 0-50 ms more, SIGKILL it, resume it to the end. The kill is *quiet*
(:func:`tests.kill_cycles.kill_when_quiet`): the server holds its replies, the client
gets 0.3 s to store those it already has, then the kill, so the requests received and never
answered are exactly those in flight. The server is deterministic (a reply depends only on
the request), agents answer ``n`` choices as ``n`` requests (random and ensemble send one
request many times), the reward is local.

Per method it reports the kills that landed (a run may finish before its kill point), the
requests paid twice (the trial's requests less the reference's) in total and the most in
one trial, the requests in flight at the kills, the answers the generation store held at
the kills (what a resume without it would also pay again), and whether every trial's
records equal the uninterrupted run's (one per prompt; sample ids, agents, kinds, parents,
texts and rewards). FAIL (exit status 1) when a trial paid twice more than was in flight
at its kill or its records differ.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.fake_servers import FakeServer  # noqa: E402
from tests.kill_cycles import (  # noqa: E402
    cli,
    comparable,
    env,
    kill_when_quiet,
    record_ids,
    settle,
    spawn,
    stored_generations,
    wait_for_arrivals,
    write_config,
    write_prompts,
)

METHODS = ("toa", "random", "ensemble")


def synthesize(cfg: Path, inp: Path, out: Path, method: str, args: argparse.Namespace) -> list[str]:
    return cli("--config", str(cfg), "--input", str(inp), "--output", str(out),
               "--method", method, "--budget", str(args.budget),
               "--concurrency", str(args.concurrency), "--no-progress")  # fmt: skip


def run_to_end(cmd: list[str], cwd: Path) -> None:
    res = subprocess.run(cmd, cwd=cwd, env=env(), capture_output=True, text=True, timeout=600)
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {res.returncode}: {res.stderr[-2000:]}")


def one_trial(
    server: FakeServer, cmd: list[str], out: Path, ref: dict[str, Any], uninterrupted: int,
    rng: random.Random, cwd: Path,
) -> dict[str, Any]:  # fmt: skip
    """A kill at a random point and a resume to the end; what it cost and whether the
    records equal the reference."""
    start = server.gauges()["arrived"]
    point = rng.randint(1, max(1, uninterrupted - 1))
    proc = spawn(cmd, cwd)
    in_flight = stored = None
    if wait_for_arrivals(proc, server, start + point, rng):
        time.sleep(rng.uniform(0, 0.05))  # not always just after a burst of requests
        in_flight = kill_when_quiet(proc, server)
        if in_flight is not None:
            stored = stored_generations(out)
    proc.wait()
    landed = in_flight is not None
    trial = {"kill_point": point, "landed": landed, "in_flight": in_flight, "stored": stored}
    try:
        run_to_end(cmd, cwd)
    except RuntimeError as exc:  # the resume failed: a FAIL, not the end of the benchmark
        settle(server)
        print(f"  trial failed: {exc}", file=sys.stderr)
        repaid = server.gauges()["arrived"] - start - uninterrupted
        return {**trial, "repaid": repaid, "records_equal": False, "ok": False, "error": str(exc)}
    repaid = server.gauges()["arrived"] - start - uninterrupted
    ids = record_ids(out / "records.jsonl")
    equal = len(ids) == len(set(ids)) == len(ref) and comparable(out / "records.jsonl") == ref
    ok = equal and repaid <= (in_flight if landed else 0)
    return {**trial, "repaid": repaid, "records_equal": equal, "ok": ok}


def run_method(method: str, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    rng = random.Random(f"{args.seed}-{method}")
    root = work / method
    root.mkdir(parents=True)
    inp = write_prompts(root / "prompts.jsonl", args.prompts)
    t0 = time.perf_counter()
    with FakeServer(delay=args.delay, capacity=args.capacity, deterministic=True) as server:
        cfg = write_config(root / "cfg.yaml", server.port, supports_n=False)
        run_to_end(synthesize(cfg, inp, root / "ref", method, args), root)
        uninterrupted = server.gauges()["arrived"]
        ref = comparable(root / "ref" / "records.jsonl")
        trials = []
        for t in range(args.trials):
            out = root / f"t{t}"
            cmd = synthesize(cfg, inp, out, method, args)
            trials.append(one_trial(server, cmd, out, ref, uninterrupted, rng, root))
    landed = [t for t in trials if t["landed"]]
    return {
        "method": method,
        "uninterrupted_requests": uninterrupted,
        "trials": len(trials),
        "kills_landed": len(landed),
        "repaid_total": sum(t["repaid"] for t in trials),
        "repaid_max": max((t["repaid"] for t in trials), default=0),
        "in_flight_total": sum(t["in_flight"] for t in landed),
        "in_flight_max": max((t["in_flight"] for t in landed), default=0),
        "stored_total": sum(t["stored"] for t in landed),
        "records_equal": sum(t["records_equal"] for t in trials),
        "failed_trials": sum(not t["ok"] for t in trials),
        "wall_s": round(time.perf_counter() - t0, 1),
        "per_trial": trials,
    }


HEADER = ("method", "trials", "kills", "repaid", "max/kill", "in flight", "max in flight",
          "store held", "records equal", "failed")  # fmt: skip


def table(results: list[dict[str, Any]]) -> str:
    rows = [HEADER] + [
        (
            r["method"],
            r["trials"],
            r["kills_landed"],
            r["repaid_total"],
            r["repaid_max"],
            r["in_flight_total"],
            r["in_flight_max"],
            r["stored_total"],
            f"{r['records_equal']}/{r['trials']}",
            r["failed_trials"],
        )
        for r in results
    ]
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(HEADER))]
    lines = []
    for row in rows:
        cells = [
            str(v).rjust(w) if i else str(v).ljust(w)
            for i, (v, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", default=",".join(METHODS), help="comma-separated")
    ap.add_argument("--trials", type=int, default=20, help="kill + resume cycles per method")
    ap.add_argument("--prompts", type=int, default=24)
    ap.add_argument("--budget", type=int, default=6)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--delay", type=float, default=0.02, help="fake server: seconds a request")
    ap.add_argument("--capacity", type=int, default=2, help="fake server: requests at once")
    ap.add_argument("--seed", type=int, default=27)
    ap.add_argument("--workdir", default=None, help="default: a temporary directory")
    ap.add_argument("--json", default=None, help="write the figures here")
    args = ap.parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if args.trials < 1 or not methods or set(methods) - set(METHODS):
        ap.error(f"--trials >= 1 and --methods among {', '.join(METHODS)}")
    with tempfile.TemporaryDirectory(prefix="kill-trials-", dir=args.workdir) as tmp:
        results = []
        for m in methods:
            results.append(run_method(m, args, Path(tmp)))
            print(f"{m}: {args.trials} trials in {results[-1]['wall_s']} s", flush=True)
    print(table(results))
    ok = all(r["failed_trials"] == 0 and r["records_equal"] == r["trials"] for r in results)
    bad = sum(r["failed_trials"] for r in results)
    print(
        "verdict: PASS (every trial paid twice at most the requests in flight at its kill, "
        "and its records equal an uninterrupted run's)"
        if ok
        else f"verdict: FAIL ({bad} trial(s) paid twice more than was in flight at the kill "
        "or ended with records unlike an uninterrupted run's)"
    )
    if args.json:
        Path(args.json).write_text(
            json.dumps({"machine": platform.platform(), "cpus": os.cpu_count(), "args": vars(args),
                        "verdict": "PASS" if ok else "FAIL", "methods": results}, indent=1)
            + "\n"
        )  # fmt: skip
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
