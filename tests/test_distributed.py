"""Synthesis on a local Ray cluster (head + 2 worker nodes on 127.0.0.1) against two local
OpenAI-compatible servers with deterministic answers: exactly one record per prompt,
identical to a single-process run's records; a worker killed mid-run loses and
duplicates nothing; the reward actor is shared by every worker (batches fill across them).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("ray")

from tests.fake_servers import REPO, FakeServer
from toa_graph.config import AgentConfig, PythonRewardConfig
from toa_graph.distributed import import_ray, ray_session, run_distributed, start_reward_actor
from toa_graph.rewards import build_reward
from toa_graph.synthesis import config_digest, read_records, run_synthesis

pytestmark = pytest.mark.slow

N_PROMPTS = 48
CONTEXT = {"budget": 6}
REWARD = PythonRewardConfig(kind="python", target="tests.distributed_fakes:CountingHashReward")
WORKER_OPTIONS = {"resources": {"synth_worker": 1}, "num_cpus": 0}
TIMING_KEYS = {"latency_s", "wall_s"}


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[FakeServer, FakeServer]]:
    a = FakeServer(delay=0.01, capacity=256).start()
    b = FakeServer(delay=0.01, capacity=256).start()
    try:
        yield a, b
    finally:
        a.stop()
        b.stop()


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    """A head node and two worker nodes (each offering one ``synth_worker`` slot), all on
    127.0.0.1, started by this test and shut down at the end."""
    old_path = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), old_path) if p)
    import_ray(loopback=True)
    from ray.cluster_utils import Cluster

    store = 80 * 2**20
    c = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "object_store_memory": store, "include_dashboard": False},
    )
    try:
        for _ in range(2):
            c.add_node(num_cpus=1, resources={"synth_worker": 1}, object_store_memory=store)
        c.wait_for_nodes()
        yield c
    finally:
        c.shutdown()
        if old_path is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old_path


def agents(servers: tuple[FakeServer, FakeServer]) -> list[AgentConfig]:
    urls = [s.url for s in servers]
    return [
        AgentConfig(name=n, model=f"{n}-model", base_urls=urls, max_retries=2, timeout_s=20)
        for n in ("alpha", "beta")
    ]


@pytest.fixture(scope="module")
def prompts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("in") / "prompts.jsonl"
    rows = [
        {"id": f"p{i:03d}", "prompt": f"Question {i}: name a prime above {i}."}
        for i in range(N_PROMPTS)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def strip_timing(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: strip_timing(v) for k, v in x.items() if k not in TIMING_KEYS}
    if isinstance(x, list):
        return [strip_timing(v) for v in x]
    return x


def by_id(out: Path) -> dict[str, dict[str, Any]]:
    recs = list(read_records(out))
    ids = [r["id"] for r in recs]
    assert len(ids) == len(set(ids)), "a prompt id was written twice"
    return {r["id"]: strip_timing(r) for r in recs}


@pytest.fixture(scope="module")
def reference(servers, prompts, tmp_path_factory) -> dict[str, dict[str, Any]]:
    """The single-process run's records."""
    out = tmp_path_factory.mktemp("single")
    cfg = agents(servers)
    digest = config_digest(method="toa", context=CONTEXT, agents=cfg, reward=REWARD)
    s = asyncio.run(
        run_synthesis(
            prompts, out, method="toa", agents=cfg, reward=build_reward(REWARD), context=CONTEXT,
            concurrency=8, progress=False, digest=digest,
        )
    )  # fmt: skip
    assert s.done == N_PROMPTS and s.failed == 0
    return by_id(out)


def run_on_cluster(cluster, servers, prompts, out: Path, **kw: Any) -> Any:
    cfg = agents(servers)
    digest = config_digest(method="toa", context=CONTEXT, agents=cfg, reward=REWARD)
    return run_distributed(
        prompts, out, method="toa", agents=cfg, reward=REWARD, context=CONTEXT, workers=2,
        concurrency=4, address=cluster.address, progress=False, digest=digest,
        worker_options=WORKER_OPTIONS, **kw,
    )  # fmt: skip


async def test_one_record_per_prompt_identical_to_single_process(
    cluster, servers, prompts, reference, tmp_path
) -> None:
    out = tmp_path / "ray"
    s = await run_on_cluster(cluster, servers, prompts, out, shard_size=8)
    got = by_id(out)
    assert set(got) == {f"p{i:03d}" for i in range(N_PROMPTS)}
    assert got == reference
    assert (s.done, s.failed, s.worker_deaths, s.duplicates_dropped) == (N_PROMPTS, 0, 0, 0)
    assert s.shards == N_PROMPTS // 8
    # both workers ran, on the two worker nodes (not the head)
    assert len(s.worker_info) == 2 and all(w["prompts"] > 0 for w in s.worker_info)
    assert len({w["node_id"] for w in s.worker_info}) == 2
    assert sum(w["prompts"] for w in s.worker_info) == N_PROMPTS
    # one reward actor served both workers: every play was scored there
    rs = s.reward_stats
    assert rs is not None and set(rs["callers"]) == {"worker-0", "worker-1"}
    assert rs["calls"] == sum(len(r["samples"]) for r in got.values())
    summary = json.loads((out / "summary.json").read_text())
    assert summary["done"] == N_PROMPTS and summary["workers"] == 2
    # the reward's own counters() (in the shared actor) reach summary.json
    assert rs["counters"]["responses"] == rs["items"]
    assert summary["reward_counters"] == rs["counters"] == s.reward_counters

    # resume: nothing left to do, nothing written
    before = (out / "records.jsonl").read_bytes()
    s2 = await run_on_cluster(cluster, servers, prompts, out)
    assert (s2.done, s2.skipped, s2.shards, s2.worker_info) == (0, N_PROMPTS, 0, [])
    assert (out / "records.jsonl").read_bytes() == before


async def test_worker_killed_mid_run_loses_and_duplicates_nothing(
    cluster, servers, prompts, reference, tmp_path
) -> None:
    out = tmp_path / "ray-kill"
    records = out / "records.jsonl"
    # resume across the cluster too: a third of the prompts are already done
    out.mkdir()
    done_before = sorted(reference)[: N_PROMPTS // 3]
    with records.open("w") as f:
        for rid in done_before:
            f.write(
                json.dumps({**reference[rid], "totals": {**reference[rid]["totals"], "wall_s": 0}})
                + "\n"
            )
    killed: dict[str, Any] = {}

    async def kill_worker_0() -> None:
        # Kill worker 0 once *it* has delivered a few prompts of its shard (not when the
        # file holds N new lines: on a loaded machine worker 1 could write them all while
        # worker 0 was still starting, and the kill would then interrupt nothing).
        ray = import_ray(loopback=False)
        actor = None
        while actor is None:
            try:
                actor = await asyncio.to_thread(ray.get_actor, "tkill-worker-0.0")
            except ValueError:  # not created yet
                await asyncio.sleep(0.02)
        while (info := await actor.info.remote())["prompts"] < 2:
            await asyncio.sleep(0.01)
        killed["prompts_before_kill"] = info["prompts"]
        ray.kill(actor, no_restart=True)

    chaos = asyncio.create_task(kill_worker_0())
    s = await run_on_cluster(cluster, servers, prompts, out, name_prefix="tkill")
    await asyncio.wait_for(chaos, 10)
    got = by_id(out)
    assert set(got) == {f"p{i:03d}" for i in range(N_PROMPTS)}
    assert {k: v for k, v in got.items() if k not in done_before} == {
        k: v for k, v in reference.items() if k not in done_before
    }
    assert s.skipped == len(done_before) and s.done == N_PROMPTS - len(done_before)
    assert s.worker_deaths == 1 and s.shard_retries >= 1 and s.failed == 0
    assert s.duplicates_dropped == 0
    # the killed worker had finished some of its shard but not all of it
    assert 0 < killed["prompts_before_kill"] < (N_PROMPTS - len(done_before)) // 2


async def test_reward_actor_is_shared_and_batches_across_workers(cluster) -> None:
    cfg = PythonRewardConfig(kind="python", target="tests.distributed_fakes:BatchingLengthReward")
    with ray_session(cluster.address) as ray:
        from tests.distributed_fakes import RewardCaller

        remote = start_reward_actor(cfg)
        callers = [
            ray.remote(RewardCaller).options(num_cpus=0, resources={"synth_worker": 1}).remote()
            for _ in range(2)
        ]
        await asyncio.gather(*(c.ping.remote() for c in callers))
        # a first call keeps the (one) forward thread busy for half a second; the two
        # workers' calls arrive meanwhile and must all go into the next forward
        warm = asyncio.ensure_future(remote.with_caller("warm").ascore("p", ["warm up"]))
        await asyncio.sleep(0.1)
        scores = await asyncio.gather(
            *(c.go.remote(remote.with_caller(f"c{i}"), 10) for i, c in enumerate(callers))
        )
        await warm
        stats = await remote.actor.stats.remote()
        for a in [*callers, remote.actor]:
            ray.kill(a)
    assert scores[0] == scores[1] and len(scores[0]) == 10
    assert stats["callers"] == {"warm": 1, "c0": 10, "c1": 10} and stats["calls"] == 21
    # each caller sent 10 one-response calls: a forward of more than 10 items mixed both
    assert stats["batching"]["max_batch"] > 10, stats
    assert stats["batching"]["forward_passes"] <= 3, stats


def test_cli_ray_starts_a_local_instance_on_loopback(servers, prompts, reference, tmp_path) -> None:
    """``toa-graph synthesize --ray`` (no address): a local Ray on 127.0.0.1, stopped at the
    end (no Ray process of it survives), same records as the single-process run."""
    import subprocess
    import sys

    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        "agents:\n"
        + "".join(
            f"  - {{name: {n}, model: {n}-model, base_urls: [{servers[0].url}, {servers[1].url}],"
            " max_retries: 2, timeout_s: 20}\n"
            for n in ("alpha", "beta")
        )
        + "reward: {kind: python, target: 'tests.fakes:hash_reward'}\n"
        + "method: {name: toa, context: {budget: 6}}\n"
    )
    out = tmp_path / "cli"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "toa_graph.cli", "synthesize", "--config", str(cfg),
         "--input", str(prompts), "--output", str(out), "--ray", "--ray-workers", "2",
         "--concurrency", "4", "--limit", "12", "--no-progress"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        stdout, _ = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, stdout[-3000:]
    assert "ray: 2 workers" in stdout and "12 done" in stdout
    summary = json.loads((out / "summary.json").read_text())
    assert [w["node_ip"] for w in summary["worker_info"]] == ["127.0.0.1", "127.0.0.1"]
    got = by_id(out)
    assert len(got) == 12
    for rid, rec in got.items():
        assert {k: rec[k] for k in ("samples", "best", "tree")} == {
            k: reference[rid][k] for k in ("samples", "best", "tree")
        }
    # nothing of that Ray instance is left (its session is named after the CLI's pid)
    ps = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    session = re.compile(rf"session_[\d_-]+_{proc.pid}\b")
    assert not [ln for ln in ps.splitlines() if session.search(ln)]


async def test_reward_actor_that_cannot_start_fails_the_run_early(
    cluster, servers, prompts, tmp_path
) -> None:
    from toa_graph.distributed import DistributedError

    cfg = agents(servers)
    bad = PythonRewardConfig(kind="python", target="tests.no_such_module:reward")
    with pytest.raises(DistributedError, match=r"reward actor did not start.*no_such_module"):
        await run_distributed(
            prompts, tmp_path / "out", method="toa", agents=cfg, reward=bad, context=CONTEXT,
            workers=2, concurrency=4, address=cluster.address, progress=False,
            worker_options=WORKER_OPTIONS,
        )  # fmt: skip
    assert not (tmp_path / "out" / "records.jsonl").read_bytes()


async def test_a_busy_output_directory_is_refused_before_any_actor_starts(
    servers, prompts, tmp_path
) -> None:
    from toa_graph.synthesis import OutputBusyError, OutputLock

    out = tmp_path / "out"
    out.mkdir()
    held = OutputLock(out).acquire()
    try:
        with pytest.raises(OutputBusyError, match=f"pid {os.getpid()}"):
            await run_distributed(
                prompts, out, method="toa", agents=agents(servers), reward=REWARD,
                context=CONTEXT, workers=2, address="127.0.0.1:1", progress=False,
            )  # fmt: skip
    finally:
        held.release()
    assert not (out / "records.jsonl").exists()
