"""Does the runner scale to tens of thousands of prompts? (issue 28)

Runs :func:`toa_graph.synthesis.run_synthesis` (TOA, budget 4 by default) over N prompts
(default 50,000) with instant simulated agents and reward (:mod:`toa_graph.simulate`: no
HTTP, so only the runner's own costs count) and reports:

- this process's RSS (``/proc/self/status`` VmRSS) and wall time at each checkpoint of
  records written (default 10,000 / 25,000 / 50,000), and the growth from the first to the
  last;
- record bytes per prompt as written (lean) and as the layout before issue 28 wrote them
  (the input row repeated under ``input``), with the duplicated fields' share;
- ``toa-graph export sft`` of the records: wall time and the export process's peak RSS;
- the same input on Ray with ``--ray-workers`` workers (``--ray-prompts``, default all).

The verdict (exit status 1 when it fails): RSS grew at most ``--rss-tolerance`` (10%)
from the first checkpoint to the last, and the lean records save at least the duplicated
fields' share.

    python benchmarks/scale.py [--prompts 50000] [--checkpoints 10000,25000] [--budget 4] \
        [--ray-workers 2] [--ray-prompts N] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.proc_status import rss_mb  # noqa: E402
from toa_graph.simulate import SimAgent, SimReward, SimWorld  # noqa: E402
from toa_graph.synthesis import read_records, run_synthesis  # noqa: E402
from toa_graph.synthesis.recordio import RecordFile, records_file  # noqa: E402
from toa_graph.synthesis.records import encode_record  # noqa: E402


class InstantAgent(SimAgent):
    """A simulated agent that forgets how often it saw each prompt (the simulator's repeat
    counter grows with every prompt; the benchmark measures the runner's memory)."""

    def _result(self, messages: list[Any]) -> Any:
        out = super()._result(messages)
        self._seen.clear()
        return out


def instant_agents(world: SimWorld) -> dict[str, InstantAgent]:
    return {s.name: InstantAgent(name=s.name, world=world) for s in world.agents}


def write_prompts(path: Path, n: int) -> None:
    """The simulated tasks' rows (as :func:`toa_graph.simulate.sim_prompts`), streamed,
    with one extra column (kept under a record's ``input``)."""
    with path.open("w") as f:
        for t in range(n):
            row = {"id": f"sim-{t}", "prompt": f"sim-task-{t}: answer the simulated question {t}."}
            f.write(json.dumps({**row, "source": "sim"}) + "\n")


class Checkpoints:
    """A progress "bar" (the runner's ``progress`` factory) that samples RSS and wall time
    when the number of finished prompts reaches each checkpoint."""

    def __init__(self, marks: list[int]) -> None:
        self.todo = sorted(marks)
        self.seen: list[dict[str, float]] = []
        self.done = 0
        self.t0 = time.perf_counter()

    def __call__(self, *, total: int, desc: str) -> Checkpoints:
        self.t0 = time.perf_counter()
        return self

    def update(self, n: int) -> None:
        self.done += n
        while self.todo and self.done >= self.todo[0]:
            row = {"prompts": self.todo.pop(0), "rss_mb": rss_mb()}
            row["wall_s"] = time.perf_counter() - self.t0
            self.seen.append(row)
            print(
                f"{row['prompts']:>7} prompts: RSS {row['rss_mb']:7.1f} MB, {row['wall_s']:7.1f} s",
                flush=True,
            )

    def set_postfix(self, **kw: Any) -> None:
        pass

    def close(self) -> None:
        pass


def record_bytes(path: Path) -> dict[str, float]:
    """Bytes per prompt of the records as written (lean) and in the earlier layout (the
    whole input row again under ``input``), the duplicated fields' share of the latter
    (the id, prompt and reference copies inside ``input``), and the lean records written
    again as ``records.jsonl.zst`` (block by block, as ``--compress zst`` writes them)."""
    n = lean = old = dup = 0
    zst = path / "lean-copy.jsonl.zst"
    copy = RecordFile(zst)
    for rec in read_records(path):
        n += 1
        line = encode_record(rec)
        lean += len(line)
        copy.write(line)
        taken = {"id": rec["id"], "prompt": rec["prompt"]}
        if rec.get("reference") is not None:
            taken["reference"] = rec["reference"]
        row = {**taken, **(rec.get("input") or {})}
        rest = {k: v for k, v in rec.items() if k not in ("id", "input")}
        old += len(encode_record({"id": rec["id"], "input": row, **rest}))
        dup += len(encode_record(taken)) - 2  # the copies, with their separators
    copy.close()
    zst_bytes = zst.stat().st_size
    zst.unlink()
    return {
        "records": n,
        "lean_bytes_per_prompt": lean / n,
        "old_bytes_per_prompt": old / n,
        "saved_share": 1 - lean / old,
        "dup_share": dup / old,
        "zst_bytes_per_prompt": zst_bytes / n,
    }


def export_once(records_dir: Path, out: Path) -> dict[str, float]:
    """``toa-graph export sft`` in a child process: wall time and the child's peak RSS."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "toa_graph.cli", "export", "sft", "--input", str(records_dir),
         "--output", str(out)],
        capture_output=True, text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(proc.stdout[-2000:] + proc.stderr[-2000:])
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"export_s": wall, "export_peak_rss_mb": max(peak, before) / 1024}


async def run_single(args: argparse.Namespace, inp: Path, out: Path) -> dict[str, Any]:
    world = SimWorld()
    marks = sorted({*(int(c) for c in args.checkpoints.split(",") if c), args.prompts})
    bar = Checkpoints(marks)
    t0 = time.perf_counter()
    s = await run_synthesis(
        inp, out, method="toa", agents=instant_agents(world), reward=SimReward(world),
        context={"budget": args.budget}, concurrency=args.concurrency, progress=bar,
        collect_rows=False, compress=args.compress,
    )  # fmt: skip
    wall = time.perf_counter() - t0
    print(f"single process: {s.done} prompts, {s.generations} generations in {wall:.1f} s "
          f"({s.generations / wall:.0f} gen/s)", flush=True)  # fmt: skip
    return {"done": s.done, "failed": s.failed, "generations": s.generations, "wall_s": wall,
            "checkpoints": bar.seen, "file_bytes": records_file(out).stat().st_size}  # fmt: skip


async def run_ray(args: argparse.Namespace, inp: Path, out: Path) -> dict[str, Any]:
    from toa_graph.distributed import ray_session, run_distributed

    world = SimWorld()
    with ray_session(None, num_cpus=max(2, args.ray_workers)):
        t0 = time.perf_counter()
        d = await run_distributed(
            inp, out, method="toa", agents=instant_agents(world), reward=SimReward(world),
            context={"budget": args.budget}, workers=args.ray_workers,
            concurrency=max(1, args.concurrency // args.ray_workers), progress=False,
            collect_rows=False, limit=args.ray_prompts,
        )  # fmt: skip
        wall = time.perf_counter() - t0
    row = {"workers": args.ray_workers, "done": d.done, "failed": d.failed,
           "generations": d.generations, "wall_s": wall, "run_s": d.run_s,
           "startup_s": d.startup_s, "driver_rss_mb": rss_mb()}  # fmt: skip
    print(f"ray, {args.ray_workers} workers: {json.dumps(row)}", flush=True)
    return row


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--prompts", type=int, default=50_000)
    ap.add_argument("--checkpoints", default="10000,25000")
    ap.add_argument("--budget", type=int, default=4)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--compress", choices=["zst", "gz"], default=None)
    ap.add_argument("--ray-workers", type=int, default=2, help="0: no Ray run")
    ap.add_argument("--ray-prompts", type=int, default=None, help="default: all prompts")
    ap.add_argument("--rss-tolerance", type=float, default=0.10)
    ap.add_argument("--workdir", default=os.environ.get("TMPDIR", "/tmp") + "/toa-scale")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    work = Path(args.workdir)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    inp = work / "prompts.jsonl"
    write_prompts(inp, args.prompts)
    print(f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}; {args.prompts} prompts x TOA "
          f"budget {args.budget}, concurrency {args.concurrency}", flush=True)  # fmt: skip
    res: dict[str, Any] = {"args": vars(args), "load_1m": os.getloadavg()[0]}
    res["single"] = asyncio.run(run_single(args, inp, work / "out"))
    res["bytes"] = record_bytes(work / "out")
    res["bytes"]["file_bytes_per_prompt"] = res["single"]["file_bytes"] / res["bytes"]["records"]
    print(
        "record bytes per prompt: " + json.dumps({k: round(v, 3) for k, v in res["bytes"].items()})
    )
    res["export"] = export_once(work / "out", work / "sft.jsonl")
    print(f"export sft: {res['export']['export_s']:.1f} s, "
          f"peak RSS {res['export']['export_peak_rss_mb']:.0f} MB", flush=True)  # fmt: skip
    if args.ray_workers:
        res["ray"] = asyncio.run(run_ray(args, inp, work / "ray"))
    return verdict(args, res)


def verdict(args: argparse.Namespace, res: dict[str, Any]) -> int:
    seen = res["single"]["checkpoints"]
    first, last = seen[0], seen[-1]
    growth = last["rss_mb"] / first["rss_mb"] - 1
    dup_share = res["bytes"]["dup_share"]
    ok_rss = growth <= args.rss_tolerance
    ok_bytes = res["bytes"]["saved_share"] >= dup_share - 1e-9
    ok_run = res["single"]["failed"] == 0 and res["single"]["done"] == args.prompts
    res["verdict"] = {"rss_growth": growth, "rss_ok": ok_rss, "bytes_ok": ok_bytes,
                      "run_ok": ok_run}  # fmt: skip
    print(
        f"RSS {first['rss_mb']:.1f} MB at {first['prompts']} prompts -> {last['rss_mb']:.1f} MB "
        f"at {last['prompts']}: {growth:+.1%} (limit {args.rss_tolerance:+.0%}); records "
        f"{res['bytes']['saved_share']:.1%} smaller (duplicated share {dup_share:.1%})"
    )
    print(f"verdict: {'PASS' if ok_rss and ok_bytes and ok_run else 'FAIL'} "
          f"(rss {'ok' if ok_rss else 'grew'}, bytes {'ok' if ok_bytes else 'not lean'}, "
          f"run {'ok' if ok_run else 'failed prompts'})")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n")
    return 0 if ok_rss and ok_bytes and ok_run else 1


if __name__ == "__main__":
    sys.exit(main())
