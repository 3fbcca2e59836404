"""What does a request to ``toa-graph serve-reward`` add over calling the reward in-process?
(issue 29)

Side by side in one run, with a fake instant reward (``instant_scores`` in
``tests/reward_server_fakes.py``: no model, no worker thread) and ``--clients`` concurrent
clients, each sending one item per request:

1. in-process: each client awaits ``reward.ascore(prompt, [response])`` directly;
2. in-process through the server's batcher (``ItemBatcher`` with the server's settings),
   to show the batching policy's share;
3. over HTTP: each client posts ``/v1/score`` on its own keep-alive connection to a
   ``serve-reward`` process on 127.0.0.1. The load generator is a bare asyncio HTTP/1.1
   client, so that on a small machine its own CPU is not charged to the server (httpx,
   which the adapters use, costs the client far more CPU per request than the server).

Two loads: ``paced`` (each client sends one request every ``--period-ms``, starting at
random offsets: 64 trainers' workers below the server's capacity) and ``closed`` (each
client sends its next request as soon as the last is answered: the server saturated, so
latency there is ``clients / throughput``). Target: added p50 <= 5 ms at 64 clients.

    python benchmarks/reward_server_latency.py [--clients 64] [--requests 20] \\
        [--period-ms 64] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.reward_server_fakes import instant_scores, reward_server  # noqa: E402
from toa_graph.reward_server.batcher import ItemBatcher  # noqa: E402
from toa_graph.rewards.base import CallableReward  # noqa: E402

Call = Callable[[int, int], Awaitable[float]]
MakeCall = Callable[[], Awaitable[tuple[Call, Callable[[], Awaitable[None]]]]]


def _pct(xs: list[float], q: int) -> float:
    return statistics.quantiles(xs, n=100, method="inclusive")[q - 1]


async def _load(call: Call, args: argparse.Namespace, paced: bool) -> dict[str, float]:
    """``args.clients`` tasks, each ``warmup + requests`` calls; latencies in ms. Paced:
    one call every ``period_ms`` per client (from a random offset); else back to back."""
    latencies: list[float] = []
    period = args.period_ms / 1000
    rng = random.Random(0)

    async def client(c: int) -> None:
        start = time.perf_counter() + (rng.random() * period if paced else 0.0)
        for r in range(args.warmup + args.requests):
            if paced:
                await asyncio.sleep(max(0.0, start + r * period - time.perf_counter()))
            t0 = time.perf_counter()
            await call(c, r)
            if r >= args.warmup:
                latencies.append(1000 * (time.perf_counter() - t0))

    t0 = time.perf_counter()
    await asyncio.gather(*(client(c) for c in range(args.clients)))
    wall = time.perf_counter() - t0
    return {
        "p50_ms": round(_pct(latencies, 50), 3),
        "p95_ms": round(_pct(latencies, 95), 3),
        "requests_per_s": round(args.clients * (args.warmup + args.requests) / wall, 1),
    }


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of process ``pid`` (Linux ``/proc``; else ``None``)."""
    import os

    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _item(c: int, r: int) -> tuple[str, str]:
    return f"prompt {c}", f"response {c}.{r}"


class _Connection:
    """One keep-alive HTTP/1.1 connection posting ``/v1/score`` (the server always sends
    Content-Length)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def post(self, body: bytes) -> dict[str, Any]:
        self.writer.write(
            b"POST /v1/score HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        assert lines[0].split()[1] == b"200", head
        length = next(
            int(h.split(b":")[1]) for h in lines if h.lower().startswith(b"content-length")
        )
        out: dict[str, Any] = json.loads(await self.reader.readexactly(length))
        return out


async def _run_all(url: str, args: argparse.Namespace) -> dict[str, Any]:
    reward = CallableReward(instant_scores)
    batcher = ItemBatcher(reward, max_wait_ms=args.max_wait_ms, idle_ms=args.idle_ms or None,
                          max_batch_size=args.max_batch)  # fmt: skip
    host, port = url.removeprefix("http://").split(":")
    conns = [_Connection(*await asyncio.open_connection(host, int(port)))
             for _ in range(args.clients)]  # fmt: skip

    async def direct(c: int, r: int) -> float:
        prompt, response = _item(c, r)
        return (await reward.ascore(prompt, [response]))[0]

    async def batched(c: int, r: int) -> float:
        prompt, response = _item(c, r)
        out = (await batcher.score([(prompt, response, None)]))[0]
        assert out.score is not None
        return out.score

    async def http(c: int, r: int) -> float:
        prompt, response = _item(c, r)
        body = json.dumps({"items": [{"prompt": prompt, "response": response}]}).encode()
        return float((await conns[c].post(body))["scores"][0])

    async def server_batcher() -> dict[str, Any]:
        import httpx

        async with httpx.AsyncClient() as client:
            body = (await client.get(url + "/metrics")).json()
        metrics: dict[str, Any] = body["batcher"]
        metrics["cpu_s"] = _cpu_seconds(body["pid"])
        return metrics

    results: dict[str, Any] = {}
    for load in ("paced", "closed"):
        before = await server_batcher()
        row = {name: await _load(call, args, load == "paced")
               for name, call in (("in_process", direct), ("in_process_batcher", batched),
                                  ("http", http))}  # fmt: skip
        after = await server_batcher()
        row["server_mean_batch_size"] = round(
            (after["items"] - before["items"]) / max(1, after["batches"] - before["batches"]), 2
        )
        if after["cpu_s"] is not None and before["cpu_s"] is not None:
            served = args.clients * (args.warmup + args.requests) + 1  # + the /metrics call
            row["server_cpu_us_per_request"] = round(
                1e6 * (after["cpu_s"] - before["cpu_s"]) / served, 1
            )
        row["added_p50_ms"] = round(row["http"]["p50_ms"] - row["in_process"]["p50_ms"], 3)
        row["added_p95_ms"] = round(row["http"]["p95_ms"] - row["in_process"]["p95_ms"], 3)
        results[load] = row
    for conn in conns:
        conn.writer.close()
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--requests", type=int, default=20, help="timed requests per client")
    ap.add_argument("--warmup", type=int, default=3, help="untimed requests per client first")
    ap.add_argument("--period-ms", type=float, default=64.0, help="paced load: per client")
    ap.add_argument("--max-wait-ms", type=float, default=10.0, help="the server's default")
    ap.add_argument("--idle-ms", type=float, default=1.0, help="the server's default")
    ap.add_argument("--max-batch", type=int, default=64)
    ap.add_argument("--json", default=None, help="also write the figures here")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "reward.yaml"
        cfg.write_text(
            "reward:\n  kind: python\n  target: tests.reward_server_fakes:instant_scores\n"
        )
        server_args = ("--max-wait-ms", str(args.max_wait_ms), "--idle-ms", str(args.idle_ms),
                       "--max-batch-size", str(args.max_batch))  # fmt: skip
        with reward_server(cfg, *server_args) as url:
            results = asyncio.run(_run_all(url, args))
    print(f"{args.clients} clients x {args.requests} requests, one item each "
          f"(max_wait_ms={args.max_wait_ms}, idle_ms={args.idle_ms})")  # fmt: skip
    for load, row in results.items():
        what = (
            f"one request per {args.period_ms:g} ms per client"
            if load == "paced"
            else "back to back"
        )
        print(f"{load} ({what}):")
        for name in ("in_process", "in_process_batcher", "http"):
            r = row[name]
            print(f"  {name:20s} p50 {r['p50_ms']:8.3f} ms  p95 {r['p95_ms']:8.3f} ms  "
                  f"{r['requests_per_s']:9.1f} req/s")  # fmt: skip
        met = "met" if row["added_p50_ms"] <= 5 else "NOT met"
        print(f"  added by the server: p50 {row['added_p50_ms']} ms, p95 {row['added_p95_ms']} "
              f"ms (target p50 <= 5 ms: {met}); server mean batch size "
              f"{row['server_mean_batch_size']}; server CPU per request "
              f"{row.get('server_cpu_us_per_request')} us")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": results}, indent=1))


if __name__ == "__main__":
    main()
