"""Per-agent limits measured at the fake OpenAI-compatible server: the request rate of
``requests_per_second`` and the in-flight cap of ``max_concurrency`` hold across
concurrent graph runs, tasks and event loops sharing one pool."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest

from tests.fake_servers import FakeServer
from toa_graph import create_toa_graph
from toa_graph.agents import AgentLimits, AgentPool
from toa_graph.agents.limits import CrossLoopSemaphore
from toa_graph.config import AgentConfig
from toa_graph.synthesis.ray_workers import worker_pool_options

HI = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def server() -> Iterator[FakeServer]:
    with FakeServer(delay=0.01, capacity=256, deterministic=False) as srv:
        yield srv


def agent(url: str, **kw: object) -> AgentConfig:
    return AgentConfig(name="m", model="m", base_url=url, max_retries=0, timeout_s=10, **kw)  # type: ignore[arg-type]


def observed_rate(arrivals: list[float]) -> float:
    return (len(arrivals) - 1) / (arrivals[-1] - arrivals[0])


def assert_rate_limited(arrivals: list[float], limit: float) -> None:
    """Never faster than the limit (5% for timing noise); the lower bound only says the
    limiter does not stall, with a margin a loaded machine meets (slow is never a breach)."""
    rate = observed_rate(arrivals)
    assert rate <= limit * 1.05, rate
    assert rate >= limit * 0.4, rate


async def test_rate_limit_holds_over_concurrent_graph_runs(server: FakeServer) -> None:
    """Five TOA runs at once, 10 plays each: 50 requests at 20 rps take ~2.5 s."""
    pool = AgentPool([agent(server.url, requests_per_second=20)])
    graph = create_toa_graph(pool, lambda p, rs: [len(r) / 100 for r in rs]).compile()
    server.reset_stats()
    outs = await asyncio.gather(
        *(graph.ainvoke({"prompt": f"q{i}"}, context={"budget": 10}) for i in range(5))
    )
    assert all(len(o["samples"]) == 10 and not o["best"]["error"] for o in outs)
    arrivals = server.stats()["arrivals"]
    assert len(arrivals) == 50
    assert_rate_limited(arrivals, 20)


async def test_rate_limit_with_many_callers_and_without_it(server: FakeServer) -> None:
    limited = AgentPool([agent(server.url, requests_per_second=20)])
    server.reset_stats()
    await asyncio.gather(*(limited.generate("m", HI) for _ in range(60)))
    assert_rate_limited(server.stats()["arrivals"], 20)
    # the same load without a limit arrives far faster: the limiter is what slowed it
    server.reset_stats()
    await asyncio.gather(*(AgentPool([agent(server.url)]).generate("m", HI) for _ in range(60)))
    assert observed_rate(server.stats()["arrivals"]) > 60


async def test_max_concurrency_is_never_exceeded(server: FakeServer) -> None:
    slow = FakeServer(delay=0.05, capacity=256, deterministic=False).start()
    try:
        pool = AgentPool([agent(slow.url, max_concurrency=3)])
        gens = await asyncio.gather(*(pool.generate("m", HI) for _ in range(30)))
        assert all(g.error is None for (g,) in gens)
        stats = slow.stats()
        assert stats["requests"] == 30 and stats["max_inflight"] == 3
        assert pool.limits("m").slots is not None and pool.limits("m").slots.in_use == 0
    finally:
        slow.stop()


def test_max_concurrency_holds_across_event_loops() -> None:
    """Two threads, each with its own asyncio loop, share one pool: one cap for both."""
    slow = FakeServer(delay=0.05, capacity=256, deterministic=False).start()
    try:
        pool = AgentPool([agent(slow.url, max_concurrency=4)])
        errors: list[str | None] = []

        def run() -> None:
            async def burst() -> None:
                gens = await asyncio.gather(*(pool.generate("m", HI) for _ in range(20)))
                errors.extend(g.error for (g,) in gens)

            asyncio.run(burst())

        threads = [threading.Thread(target=run) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert errors == [None] * 40
        assert slow.stats()["max_inflight"] == 4
    finally:
        slow.stop()


async def test_cross_loop_semaphore_passes_a_cancelled_waiters_slot_on() -> None:
    sem = CrossLoopSemaphore(1)
    await sem.acquire()
    first = asyncio.create_task(sem.acquire())
    second = asyncio.create_task(sem.acquire())
    await asyncio.sleep(0)
    first.cancel()
    sem.release()
    with pytest.raises(asyncio.CancelledError):
        await first
    await asyncio.wait_for(second, 1)  # the slot went to the next waiter, not lost
    assert sem.in_use == 1 and sem.max_in_use == 1
    sem.release()
    assert sem.in_use == 0


def test_limits_scale_by_share_and_ray_workers_get_theirs() -> None:
    lim = AgentLimits.scaled(20, 8, 0.25)
    assert lim.requests_per_second == 5 and lim.max_concurrency == 2
    assert AgentLimits.scaled(20, 3, 0.25).max_concurrency == 1  # at least one slot each
    assert not AgentLimits.scaled(None, None, 0.5).active
    pool = AgentPool(
        [agent("http://127.0.0.1:1/v1", requests_per_second=12, max_concurrency=9)],
        **worker_pool_options(None, workers=3),
    )
    assert pool.limit_share == pytest.approx(1 / 3)
    assert pool.limits("m").requests_per_second == pytest.approx(4)
    assert pool.limits("m").max_concurrency == 3
    assert worker_pool_options({"limit_share": 1.0}, workers=3) == {"limit_share": 1.0}
    with pytest.raises(ValueError, match="limit_share"):
        AgentPool([agent("http://127.0.0.1:1/v1")], limit_share=0)


async def test_a_busy_replica_spreads_its_requests_over_several_clients() -> None:
    """150 requests in flight on one agent: a client (own connection pool) per
    REQUESTS_PER_CLIENT of them, each request on the least busy one; all answered."""
    from toa_graph.agents import pool as pool_mod

    slow = FakeServer(delay=0.2, capacity=1000, deterministic=False).start()
    try:
        pool = AgentPool([agent(slow.url)])
        gens = await asyncio.gather(*(pool.generate("m", HI) for _ in range(150)))
        assert [g.error for (g,) in gens] == [None] * 150
        assert slow.stats()["max_inflight"] == 150
        (replica,) = pool._agent("m").replicas.replicas  # type: ignore[union-attr]
        (shards,) = replica.clients.values()
        per_client = pool_mod.REQUESTS_PER_CLIENT
        assert len(shards.clients) == -(-150 // per_client)  # 10 at 16 per client
        assert len({id(c) for c in shards.clients}) == len(shards.clients)
        assert shards.load == [0] * len(shards.clients)  # every request gave its slot back
        # a quiet agent keeps one client
        (g,) = await pool.generate("m", HI)
        assert g.error is None and len(shards.clients) == -(-150 // per_client)
    finally:
        slow.stop()


def test_each_event_loop_gets_its_own_clients(server: FakeServer) -> None:
    """Two threads with their own loops use one pool at once: each loop gets its own
    clients (connections belong to a loop); a client built before any loop ran is taken
    by the first loop; a closed loop's clients are dropped when the next loop comes."""
    pool = AgentPool([agent(server.url)])
    pool.build_clients()
    (replica,) = pool._agent("m").replicas.replicas  # type: ignore[union-attr]
    assert replica.unbound is not None
    prebuilt = replica.unbound.clients[0]
    seen: dict[int, list[object]] = {}
    errors: list[str | None] = []

    def run(k: int) -> None:
        async def burst() -> None:
            gens = await asyncio.gather(*(pool.generate("m", HI) for _ in range(30)))
            errors.extend(g.error for (g,) in gens)
            shards = replica.clients[asyncio.get_running_loop()]
            seen[k] = list(shards.clients)

        asyncio.run(burst())

    threads = [threading.Thread(target=run, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == [None] * 60
    assert not set(map(id, seen[0])) & set(map(id, seen[1]))
    assert prebuilt in seen[0] + seen[1] and replica.unbound is None
    assert len(replica.clients) == 2
    (g,) = asyncio.run(pool.generate("m", HI))  # a third loop: the closed loops' clients go
    assert g.error is None and len(replica.clients) == 1
