"""The Ray side of distributed synthesis: the session, the shared reward actor, the
worker actor.

A :class:`SynthesisWorker` runs the single-process prompt loop
(:func:`~toa_graph.synthesis.runner.run_prompts`) on a shard of prompts into a
:class:`~toa_graph.synthesis.sink.StreamSink` and streams its entries to the driver
(:mod:`toa_graph.synthesis.ray_driver`); it writes nothing. A :class:`RewardActor` holds
the reward model once for the whole cluster, so batches fill across workers.

Ray is an optional extra: ``pip install 'toa-graph[ray]'``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

from toa_graph.config import remote_reward_kinds
from toa_graph.rewards.base import reward_counters
from toa_graph.synthesis.inputs import PromptItem
from toa_graph.synthesis.runner import RunnerConfig, run_prompts
from toa_graph.synthesis.sink import SinkEntry, StreamSink

LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
"""Ray binds a local instance to the machine's routable IP unless this is ``0`` (then
127.0.0.1; Ray uses it on macOS/Windows). Set before ``import ray`` for local instances."""


REMOTE_REWARD_KINDS = remote_reward_kinds()
"""Reward kinds that are clients of a server (a vLLM pooling runner, an LLM judge): by
default each worker calls the server itself instead of going through a reward actor."""


def import_ray(*, loopback: bool = True) -> Any:
    """``import ray`` with a message naming the extra; with ``loopback`` a local instance
    started afterwards binds 127.0.0.1 only."""
    if loopback:
        os.environ.setdefault(LOOPBACK_ENV, "0")
    try:
        import ray
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "distributed synthesis needs Ray: pip install 'toa-graph[ray]' (or pip install ray)"
        ) from exc
    if loopback and os.environ.get(LOOPBACK_ENV) == "0":
        # ray was imported before the variable was set: the constant is read at call time
        from ray._private import ray_constants

        ray_constants.ENABLE_RAY_CLUSTER = False
    return ray


@contextmanager
def ray_session(
    address: str | None = None,
    *,
    num_cpus: int | None = None,
    runtime_env: Mapping[str, Any] | None = None,
    log_to_driver: bool = True,
) -> Iterator[Any]:
    """Connect to ``address`` or start a local instance on 127.0.0.1; undo it at the end.

    An already initialised Ray (``ray.init`` called by the caller) is used as is and left
    running.
    """
    ray = import_ray(loopback=address is None)
    if ray.is_initialized():
        yield ray
        return
    kwargs: dict[str, Any] = {"log_to_driver": log_to_driver, "include_dashboard": False}
    if runtime_env:
        kwargs["runtime_env"] = dict(runtime_env)
    if address:
        ray.init(address=address, **kwargs)
    else:
        # "local": always a new instance, even when a `ray start` cluster runs here
        ray.init(address="local", num_cpus=num_cpus or os.cpu_count() or 2, **kwargs)
    try:
        yield ray
    finally:
        ray.shutdown()


# ================================================================ the shared reward


class RewardActor:
    """The reward model, once for the whole cluster (run it as a Ray actor).

    An async actor: every worker's ``ascore`` runs concurrently on this actor's event loop,
    so a :class:`~toa_graph.rewards.batching.BatchingReward` inside gathers calls from all
    workers into the same forward passes. Put it on a GPU node with
    ``start_reward_actor(cfg, num_gpus=1)``.
    """

    def __init__(self, reward: Any, agents: Sequence[Any] = ()) -> None:
        from toa_graph.rewards import as_reward_model, build_reward

        if hasattr(reward, "kind"):
            self.model = build_reward(reward, agents=agents)
        else:
            self.model = as_reward_model(reward)
        self.calls = 0
        self.items = 0
        self.callers: Counter[str] = Counter()
        self.in_flight = 0
        self.max_in_flight = 0

    async def ascore(
        self,
        prompt: Any,
        responses: list[str],
        references: list[str] | None = None,
        caller: str | None = None,
    ) -> list[float]:
        self.calls += 1
        self.items += len(responses)
        self.callers[caller or "?"] += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return list(await self.model.ascore(prompt, responses, references))
        finally:
            self.in_flight -= 1

    def stats(self) -> dict[str, Any]:
        """Calls, items, calls per caller, peak concurrent calls, the actor's pid, the
        batching counters when the model batches, and the model's own ``counters()``."""
        out: dict[str, Any] = {
            "pid": os.getpid(),
            "calls": self.calls,
            "items": self.items,
            "callers": dict(self.callers),
            "max_in_flight": self.max_in_flight,
            "model": repr(self.model),
        }
        stats = getattr(self.model, "stats", None)
        if stats is not None and hasattr(stats, "as_dict"):
            out["batching"] = stats.as_dict()
        counters = reward_counters(self.model)
        if counters is not None:
            out["counters"] = counters
        return out


class RemoteReward:
    """A :class:`~toa_graph.rewards.base.RewardModel` that forwards ``ascore`` to a
    :class:`RewardActor` (picklable: ship it to any worker)."""

    def __init__(self, actor: Any, caller: str | None = None) -> None:
        self.actor = actor
        self.caller = caller

    def with_caller(self, caller: str) -> RemoteReward:
        """The same actor, with calls tagged ``caller`` (counted in ``stats()``)."""
        return RemoteReward(self.actor, caller)

    async def ascore(
        self,
        prompt: Any,
        responses: Sequence[str],
        references: Sequence[str] | None = None,
    ) -> list[float]:
        refs = list(references) if references is not None else None
        return list(await self.actor.ascore.remote(prompt, list(responses), refs, self.caller))

    def __repr__(self) -> str:
        return f"RemoteReward({self.caller or ''})"


def start_reward_actor(
    reward: Any,
    agents: Sequence[Any] = (),
    *,
    name: str | None = None,
    num_cpus: float = 0,
    num_gpus: float = 0,
    max_concurrency: int = 1000,
) -> RemoteReward:
    """Start a :class:`RewardActor` on the connected Ray cluster and return a
    :class:`RemoteReward` for it. ``reward`` is a reward config (built inside the actor) or a
    picklable reward object."""
    ray = import_ray(loopback=False)
    opts: dict[str, Any] = {
        "num_cpus": num_cpus,
        "num_gpus": num_gpus,
        "max_concurrency": max_concurrency,
    }
    if name:
        opts["name"] = name
    actor = ray.remote(RewardActor).options(**opts).remote(reward, list(agents))
    return RemoteReward(actor)


# ================================================================ the worker


class SynthesisWorker:
    """One shard at a time through :func:`~toa_graph.synthesis.runner.run_prompts`, each
    outcome streamed back to the driver (run it as a Ray actor). The graph and agent pool
    are built once per actor, so clients and replica health carry over between shards."""

    def __init__(
        self, slot: int, config: RunnerConfig, pool_options: Mapping[str, Any] | None = None
    ) -> None:
        from toa_graph.agents import AgentPool

        self.slot = slot
        agents, reward = config.agents, config.reward
        self.pool = (
            agents if isinstance(agents, AgentPool) else AgentPool(agents, **(pool_options or {}))
        )
        # Everything slow happens here, at actor start: client imports and construction,
        # loading a per-worker reward model.
        self.pool.build_clients()
        if isinstance(reward, RemoteReward):
            reward = reward.with_caller(f"worker-{slot}")
        elif is_reward_config(reward):
            from toa_graph.rewards import build_reward

            reward = build_reward(reward, agents=agent_configs(agents))
        self.reward = reward
        graph = config.compile_graph(agents=self.pool, reward=reward)
        self.config = replace(
            config, agents=self.pool, reward=reward, graph=graph, progress=False,
            collect_rows=False,
        )  # fmt: skip
        self.shards = 0
        self.prompts = 0
        self._cpu_at_ready = time.process_time()

    def info(self) -> dict[str, Any]:
        """Slot, pid, host, Ray node id, shards run and prompts finished by this actor, the
        CPU seconds its process used since it was built (``cpu_s``: what one worker's
        share of a core buys), and its own reward's counters (when it has ``counters()``)."""
        import socket

        node = ip = None
        with contextlib.suppress(Exception):
            import ray

            node = ray.get_runtime_context().get_node_id()
            ip = ray.util.get_node_ip_address()
        return {
            "slot": self.slot, "pid": os.getpid(), "host": socket.gethostname(), "node_id": node,
            "node_ip": ip, "shards": self.shards, "prompts": self.prompts,
            "cpu_s": round(time.process_time() - self._cpu_at_ready, 3),
            "reward_counters": reward_counters(self.reward),
        }  # fmt: skip

    async def run_shard(
        self, shard_id: int, items: list[PromptItem]
    ) -> AsyncIterator[list[SinkEntry]]:
        """Run the items; yield batches of ``("record", record)`` / ``("failed", entry)``
        as prompts finish (every item yields exactly one of the two)."""
        self.shards += 1
        sink = StreamSink()
        task = asyncio.create_task(run_prompts(items, self.config.graph, self.config, sink))
        task.add_done_callback(lambda _: sink.close())
        try:
            async for batch in sink.batches():
                self.prompts += len(batch)
                yield batch
            task.result()  # a crash of the prompt loop itself surfaces as a task error
        finally:
            if not task.done():
                task.cancel()


def worker_pool_options(pool_options: Mapping[str, Any] | None, workers: int) -> dict[str, Any]:
    """The :class:`~toa_graph.agents.AgentPool` options of each of ``workers`` workers: each
    gets ``1/workers`` of every agent's ``requests_per_second`` and ``max_concurrency``
    (``limit_share``), unless ``pool_options`` sets its own share."""
    return {"limit_share": 1.0 / max(1, workers), **(pool_options or {})}


def is_reward_config(x: Any) -> bool:
    """A reward config (built where it runs) rather than a reward object."""
    return hasattr(x, "kind") and hasattr(x, "model_dump")


def agent_configs(agents: Any) -> list[Any]:
    """The :class:`~toa_graph.config.AgentConfig` entries of ``agents`` (a reward built in a
    worker or the reward actor may name one as its judge)."""
    from toa_graph.config import AgentConfig

    if isinstance(agents, Mapping):
        return [a for a in agents.values() if isinstance(a, AgentConfig)]
    if isinstance(agents, Sequence):
        return [a for a in agents if isinstance(a, AgentConfig)]
    return []
