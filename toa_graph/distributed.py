"""Synthesis on a Ray cluster: the prompt set sharded over worker actors, one writer.

``toa-graph synthesize --ray [ADDRESS] --ray-workers N`` (or :func:`run_distributed`) runs
the same async runner as a single-process run (:func:`~toa_graph.synthesis.run_synthesis`)
inside ``N`` Ray actors, each with its own ``concurrency`` prompts in flight, and one
reward service for all of them::

    driver (this process)                        Ray cluster
    ---------------------                        -----------
    read input, skip finished ids  --shard-->    SynthesisWorker 0: run_synthesis(shard)
    records.jsonl  (single writer) <--records--  SynthesisWorker 1: run_synthesis(shard)
    failed.jsonl, errors.jsonl                   ...
    one tqdm bar                                 RewardActor: build_reward(cfg), called
                                                 by every worker (batches fill across them)

Exactly once, by construction:

1. **One writer.** Workers never touch the output directory: each finished record is
   streamed back to the driver (a Ray streaming generator), and only the driver appends
   to ``records.jsonl``, one ``write`` per record, after checking the id against every id
   already in the file (from earlier runs) or written by this run. An id is therefore
   written at most once, whatever the workers do (a retried shard, a zombie worker).
2. **Retry what was not received.** The driver keeps each shard's items until the shard
   ends, and notes which ids came back (a record, or a failure). When a worker dies
   (actor killed, node lost, ``ray.kill``), the generator raises; the shard's ids that
   did not come back are queued again (a new shard attempt, at most ``max_attempts``) and a
   replacement actor takes the dead one's slot. A record the dead worker finished but
   never delivered is simply produced again; nothing was written for it. So every pending
   id reaches the file at least once, and by (1) at most once.
3. **Resume** is the single-process resume: the driver repairs a torn tail of
   ``records.jsonl`` (a killed driver) and skips the ids in it before sharding; failed
   prompts are retried on the next run.

No shared filesystem is needed: only the driver reads the input and writes the output;
the workers receive their items in the call and write nothing but a scratch directory
that is deleted when the shard ends. ``records.jsonl`` is the merged output (records
appear in completion order, as in a single-process run; each carries its prompt ``id``).

Shards are handed out on demand (a free worker takes the next one), ``shard_size``
prompts each (default: an even split, capped at ``64 x concurrency``), so the driver holds
at most ``workers`` shards of items plus the ones waiting for a retry, and streams the
input file in between.

Without an address a local Ray instance is started bound to 127.0.0.1 (no dashboard) and
shut down at the end; with one (``auto``, ``host:port``, ``ray://...``) the driver
connects to that cluster and disconnects at the end (its actors go with it).

Ray is an optional extra: ``pip install 'toa-graph[ray]'``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import shutil
import tempfile
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from toa_graph.errors import RunError
from toa_graph.synthesis import (
    ERRORS_FILE,
    FAILED_FILE,
    PromptItem,
    PromptResult,
    RecordWriter,
    SynthesisSummary,
    _tqdm,
    config_digest,
    finish_run,
    iter_todo,
    open_run,
    parse_field_map,
    run_synthesis,
)

__all__ = [
    "DistributedError",
    "DistributedSummary",
    "RemoteReward",
    "RewardActor",
    "SynthesisWorker",
    "import_ray",
    "ray_session",
    "run_distributed",
    "start_reward_actor",
    "synthesize_distributed",
]

logger = logging.getLogger(__name__)

LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
"""Ray binds a local instance to the machine's routable IP unless this is ``0`` (then
127.0.0.1; Ray uses it on macOS/Windows). Set before ``import ray`` for local instances."""


REMOTE_REWARD_KINDS = frozenset({"vllm", "judge"})
"""Reward kinds that are clients of a server (a vLLM pooling runner, an LLM judge): by
default each worker calls the server itself instead of going through a reward actor."""


class DistributedError(RunError):
    """The run could not finish: every worker slot gave up (see the message for why)."""


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
        """Calls, items, calls per caller, peak concurrent calls, the actor's pid, and the
        batching counters when the model batches."""
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
        from toa_graph.rewards.base import check_scores

        refs = list(references) if references is not None else None
        result = await self.actor.ascore.remote(prompt, list(responses), refs, self.caller)
        return check_scores(result, len(responses), "remote reward")

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
    """One shard at a time through :func:`~toa_graph.synthesis.run_synthesis`, records
    streamed back to the driver (run it as a Ray actor). The graph and agent pool are
    built once per actor, so clients and replica health carry over between shards."""

    def __init__(
        self,
        slot: int,
        *,
        method: str,
        agents: Any,
        reward: Any,
        context: Mapping[str, Any],
        concurrency: int,
        digest: str,
        prompt_timeout_s: float | None = None,
        pool_options: Mapping[str, Any] | None = None,
    ) -> None:
        from toa_graph.agents import AgentPool
        from toa_graph.methods import METHODS

        self.slot = slot
        self.method = method
        self.context = dict(context)
        self.concurrency = concurrency
        self.digest = digest
        self.prompt_timeout_s = prompt_timeout_s
        self.pool = (
            agents if isinstance(agents, AgentPool) else AgentPool(agents, **(pool_options or {}))
        )
        # Everything slow happens here, at actor start: client imports and construction,
        # loading a per-worker reward model.
        self.pool.build_clients()
        if isinstance(reward, RemoteReward):
            reward = reward.with_caller(f"worker-{slot}")
        elif _is_config(reward):
            from toa_graph.rewards import build_reward

            reward = build_reward(reward, agents=_agent_configs(agents))
        self.reward = reward
        self.graph = METHODS[method](agents=self.pool, reward=reward).compile(name=method)
        self.shards = 0
        self.prompts = 0

    def info(self) -> dict[str, Any]:
        """Slot, pid, host, Ray node id, shards run and prompts finished by this actor."""
        import socket

        node = ip = None
        with contextlib.suppress(Exception):
            import ray

            node = ray.get_runtime_context().get_node_id()
            ip = ray.util.get_node_ip_address()
        return {
            "slot": self.slot, "pid": os.getpid(), "host": socket.gethostname(), "node_id": node,
            "node_ip": ip, "shards": self.shards, "prompts": self.prompts,
        }  # fmt: skip

    async def run_shard(
        self, shard_id: int, items: list[PromptItem]
    ) -> AsyncIterator[list[tuple[str, dict[str, Any]]]]:
        """Run the items; yield batches of ``("record", record)`` / ``("failed", entry)``
        as prompts finish (every item yields exactly one of the two)."""
        self.shards += 1
        queue: asyncio.Queue[Any] = asyncio.Queue()
        done = object()
        scratch = tempfile.mkdtemp(prefix=f"toa-graph-shard{shard_id}-")
        task = asyncio.create_task(
            run_synthesis(
                items, scratch, method=self.method, agents=self.pool, reward=self.reward,
                context=self.context, concurrency=self.concurrency, progress=False,
                digest=self.digest, prompt_timeout_s=self.prompt_timeout_s,
                collect_rows=False, graph=self.graph,
                record_sink=lambda rec: queue.put_nowait(("record", rec)),
                failure_sink=lambda entry: queue.put_nowait(("failed", entry)),
            )
        )  # fmt: skip
        task.add_done_callback(lambda _: queue.put_nowait(done))
        try:
            finished = False
            while not finished:
                batch = [await queue.get()]
                while not queue.empty():
                    batch.append(queue.get_nowait())
                if batch[-1] is done:
                    batch.pop()
                    finished = True
                if batch:
                    self.prompts += len(batch)
                    yield batch
            task.result()  # a crash of the runner itself surfaces as a task error
        finally:
            if not task.done():
                task.cancel()
            shutil.rmtree(scratch, ignore_errors=True)


# ================================================================ the driver


@dataclass
class DistributedSummary(SynthesisSummary):
    workers: int = 0
    shards: int = 0
    """Shard attempts started (first runs and retries)."""
    shard_retries: int = 0
    worker_deaths: int = 0
    """Workers lost mid-shard (replaced by a new actor in the same slot)."""
    duplicates_dropped: int = 0
    """Records that arrived for an id already written (never written twice)."""
    ray_address: str | None = None
    worker_info: list[dict[str, Any]] = field(default_factory=list)
    """The live workers at the end (:meth:`SynthesisWorker.info`)."""
    reward_stats: dict[str, Any] | None = None
    """The shared reward actor's counters (:meth:`RewardActor.stats`), when one ran."""
    startup_s: float | None = None
    """From the start until every worker slot's actor was up (Ray, imports, graph)."""
    run_s: float | None = None
    """From then until the last result arrived: the time the prompts took."""


@dataclass
class _Shard:
    id: int
    items: list[PromptItem]
    attempts: int = 0
    received: set[str] = field(default_factory=set)

    def remaining(self) -> list[PromptItem]:
        return [it for it in self.items if it.id not in self.received]


def _is_config(x: Any) -> bool:
    return hasattr(x, "kind") and hasattr(x, "model_dump")


async def run_distributed(
    input: str | os.PathLike[str] | Sequence[PromptItem],
    output_dir: str | os.PathLike[str],
    *,
    method: str,
    agents: Any,
    reward: Any,
    context: Mapping[str, Any] | None = None,
    workers: int = 2,
    concurrency: int = 16,
    address: str | None = None,
    limit: int | None = None,
    field_map: Mapping[str, str] | Iterable[str] | None = None,
    fsync: bool = False,
    progress: bool | Callable[..., Any] = True,
    digest: str | None = None,
    prompt_timeout_s: float | None = None,
    shard_size: int | None = None,
    max_attempts: int = 3,
    max_restarts: int = 3,
    shared_reward: bool | None = None,
    reward_num_gpus: float = 0,
    pool_options: Mapping[str, Any] | None = None,
    num_cpus: int | None = None,
    worker_options: Mapping[str, Any] | None = None,
    runtime_env: Mapping[str, Any] | None = None,
    name_prefix: str | None = None,
    collect_rows: bool = True,
) -> DistributedSummary:
    """Run ``method`` over ``input`` on ``workers`` Ray actors; one record per prompt id
    in ``output_dir/records.jsonl`` (see the module docstring for how).

    Args:
        input, output_dir, method, context, limit, field_map, fsync, progress, digest,
            prompt_timeout_s, collect_rows: as for :func:`~toa_graph.synthesis.run_synthesis`.
        agents: AgentConfigs (picklable; each worker builds its own
            :class:`~toa_graph.agents.AgentPool`, with ``pool_options``).
        reward: a reward config (built once in a shared :class:`RewardActor`, or in each
            worker with ``shared_reward=False``) or a picklable reward object (a
            :class:`RemoteReward`, a function, ...), shipped to every worker.
        shared_reward: run a reward config in one :class:`RewardActor` for all workers
            (default: yes, except for kinds that are already servers: ``vllm``, ``judge``).
        workers: worker actors (slots); each runs ``concurrency`` prompts at once.
        address: a Ray cluster to connect to; ``None`` starts a local one on 127.0.0.1.
        shard_size: prompts per shard (default: an even split, at most 64 x concurrency).
        max_attempts: runs of a shard before its remaining prompts are noted as failed.
        max_restarts: replacement actors per slot after worker deaths.
        reward_num_gpus: GPUs for the shared reward actor.
        num_cpus: logical CPUs of a local instance (default: enough for every actor).
        worker_options: extra ``.options(...)`` for the worker actors (resources, ...).
        runtime_env: Ray runtime env for the job (e.g. ``{"env_vars": {...}}``).
        name_prefix: worker actors are named ``<prefix>-worker-<slot>.<restart>``.
    """
    if workers < 1 or concurrency < 1 or max_attempts < 1 or max_restarts < 0:
        raise ValueError(
            "need workers >= 1, concurrency >= 1, max_attempts >= 1, max_restarts >= 0"
        )
    ctx = dict(context or {})
    fmap = parse_field_map(field_map)
    if method:
        from toa_graph.methods import METHODS

        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; available: {', '.join(sorted(METHODS))}")
    digest = digest or config_digest(method=method, context=ctx, agents=agents, reward=reward)
    prefix = name_prefix or f"toa-graph-{os.getpid()}-{int(time.time() * 1000) % 10**8}"

    summary = DistributedSummary(
        method=method, output_dir=str(output_dir), config_digest=digest, workers=workers,
        ray_address=address,
    )  # fmt: skip
    run = open_run(input, output_dir, summary, field_map=fmap, limit=limit)
    try:
        out_dir, records_path, scan, todo = run.out_dir, run.records_path, run.scan, run.todo
        done_ids = run.done_ids
        size = shard_size or max(1, min(math.ceil(todo / workers), 64 * concurrency))

        errors_f = (out_dir / ERRORS_FILE).open("w", encoding="utf-8")
        failed_f = (out_dir / FAILED_FILE).open("w", encoding="utf-8")
        writer = RecordWriter(records_path, fsync=fsync)
        run_rewards: list[float] = []
        all_rewards = list(scan.best_rewards)
        bar: Any = None
        if progress:
            factory = progress if callable(progress) else _tqdm
            bar = factory(total=todo, desc=f"{method} x{workers}")
        start = time.perf_counter()

        def shards_from_input() -> Iterator[_Shard]:
            batch: list[PromptItem] = []
            n = 0
            for it in iter_todo(run, summary, errors_f, field_map=fmap, limit=limit):
                batch.append(it)
                if len(batch) >= size:
                    yield _Shard(n, batch)
                    n += 1
                    batch = []
            if batch:
                yield _Shard(n, batch)

        fresh = shards_from_input()
        retry: deque[_Shard] = deque()
        fresh_done = False

        def next_shard() -> _Shard | None:
            nonlocal fresh_done
            if retry:
                return retry.popleft()
            if not fresh_done:
                nxt = next(fresh, None)
                if nxt is not None:
                    return nxt
                fresh_done = True
            return None

        def tick() -> None:
            last_result[0] = time.perf_counter()
            if bar is not None:
                bar.update(1)
                if run_rewards:
                    bar.set_postfix(
                        best=f"{sum(run_rewards) / len(run_rewards):.4f}", failed=summary.failed,
                        deaths=summary.worker_deaths, refresh=False,
                    )  # fmt: skip

        def note_failure(shard: _Shard | None, entry: dict[str, Any]) -> None:
            if shard is not None:
                shard.received.add(str(entry["id"]))
            summary.failed += 1
            failed_f.write(json.dumps(entry, ensure_ascii=False) + "\n")
            failed_f.flush()
            if collect_rows:
                summary.rows.append(
                    PromptResult(str(entry["id"]), None, None, 0, 0, 0.0, str(entry.get("error")))
                )
            tick()

        def on_record(shard: _Shard, record: dict[str, Any]) -> None:
            rid = str(record["id"])
            shard.received.add(rid)
            if rid in done_ids:
                summary.duplicates_dropped += 1
                logger.warning("record for %s arrived twice; the second copy is dropped", rid)
                return
            writer.append(record)
            done_ids.add(rid)
            reward = summary.add_record(record, row=collect_rows)
            run_rewards.append(reward)
            all_rewards.append(reward)
            tick()

        def give_back(shard: _Shard, why: str) -> None:
            rest = shard.remaining()
            if not rest:
                return
            if shard.attempts >= max_attempts:
                logger.error(
                    "shard %d: %d prompts not done after %d attempts (%s); noted as failed",
                    shard.id, len(rest), shard.attempts, why,
                )  # fmt: skip
                for it in rest:
                    note_failure(
                        shard,
                        {
                            "id": it.id,
                            "line": it.line,
                            "error": f"worker lost {shard.attempts} times: {why}",
                        },
                    )
                return
            summary.shard_retries += 1
            retry.append(shard)

        last_error: list[str] = []
        ready_at: list[float] = []
        last_result = [0.0]

        def finish() -> None:
            if ready_at:
                summary.startup_s = round(max(ready_at) - start, 3)
                summary.run_s = round(max(0.0, last_result[0] - max(ready_at)), 3)
            finish_run(
                run, summary, writer, (errors_f, failed_f), bar, start, run_rewards, all_rewards
            )

        if todo == 0:  # everything is done already: count the input, start nothing
            try:
                for _ in fresh:
                    pass
            finally:
                finish()
            return summary

        with ray_session(address, num_cpus=num_cpus or max(os.cpu_count() or 2, workers + 1),
                         runtime_env=runtime_env) as ray:  # fmt: skip
            from ray.exceptions import RayError, RayTaskError

            actors: list[Any] = []
            live: dict[int, Any] = {}
            worker_reward = reward
            if shared_reward is None:  # a reward that is already a service is called directly
                shared_reward = getattr(reward, "kind", None) not in REMOTE_REWARD_KINDS
            if _is_config(reward) and shared_reward:
                worker_reward = start_reward_actor(
                    reward, [a for a in _agent_configs(agents)], name=f"{prefix}-reward",
                    num_gpus=reward_num_gpus,
                )  # fmt: skip
                actors.append(worker_reward.actor)
                reward_up: Any = asyncio.ensure_future(_ready(worker_reward.actor, "reward actor"))
            else:
                reward_up = None
            remote_cls = ray.remote(SynthesisWorker)
            opts: dict[str, Any] = {
                "num_cpus": 1,
                "max_concurrency": 4,
                "scheduling_strategy": "SPREAD",
            }
            opts.update(worker_options or {})

            def new_actor(slot: int, restart: int) -> Any:
                actor = remote_cls.options(name=f"{prefix}-worker-{slot}.{restart}", **opts).remote(
                    slot, method=method, agents=agents, reward=worker_reward, context=ctx,
                    concurrency=concurrency, digest=digest, prompt_timeout_s=prompt_timeout_s,
                    pool_options=dict(pool_options or {}),
                )  # fmt: skip
                actors.append(actor)
                live[slot] = actor
                return actor

            busy = [0]

            async def slot_loop(slot: int) -> None:
                restarts = 0
                actor = new_actor(slot, 0)
                while True:  # wait for the actor to be up (it builds the graph and clients)
                    try:
                        await actor.info.remote()
                        break
                    except RayError as exc:
                        why = f"worker {slot} did not start: {str(exc).strip().splitlines()[-1][:300]}"
                        logger.error("%s", why)
                        last_error[:] = [why]
                        live.pop(slot, None)
                        if restarts >= max_restarts:
                            return
                        restarts += 1
                        actor = new_actor(slot, restarts)
                if reward_up is not None:
                    await reward_up  # a reward actor that cannot start ends the run here
                ready_at.append(time.perf_counter())
                while True:
                    shard = next_shard()
                    if shard is None:
                        if busy[0] == 0:
                            return
                        # another slot is still running: a shard it gives back needs a taker
                        await asyncio.sleep(0.1)
                        continue
                    shard.attempts += 1
                    summary.shards += 1
                    busy[0] += 1
                    try:
                        gen = actor.run_shard.options(num_returns="streaming").remote(
                            shard.id, shard.remaining()
                        )
                        async for ref in gen:
                            for kind, payload in await ref:
                                if kind == "record":
                                    on_record(shard, payload)
                                else:
                                    note_failure(shard, payload)
                    except RayTaskError as exc:
                        # the runner raised inside a live worker: retry the rest of the shard
                        why = f"worker {slot} failed: {str(exc).strip().splitlines()[-1][:200]}"
                        logger.error("shard %d: %s", shard.id, why)
                        last_error[:] = [why]
                        give_back(shard, why)
                        continue
                    except RayError as exc:  # RayActorError, lost objects, node death
                        why = f"worker {slot} died: {type(exc).__name__}"
                        logger.warning(
                            "shard %d: %s after %d of %d prompts; the rest is queued again",
                            shard.id, why, len(shard.received), len(shard.items),
                        )  # fmt: skip
                        summary.worker_deaths += 1
                        last_error[:] = [why]
                        give_back(shard, why)
                        live.pop(slot, None)
                        if restarts >= max_restarts:
                            logger.error(
                                "worker slot %d: %d restarts used; slot closed", slot, restarts
                            )
                            return
                        restarts += 1
                        with contextlib.suppress(Exception):
                            ray.kill(actor, no_restart=True)
                        actor = new_actor(slot, restarts)
                        continue
                    finally:
                        busy[0] -= 1
                    if shard.remaining():  # the worker ended without a word about some ids
                        give_back(shard, "worker returned no result for them")

            try:
                await asyncio.gather(*(slot_loop(i) for i in range(workers)))
                if retry or (not fresh_done and next(fresh, None) is not None):
                    raise DistributedError(
                        "every Ray worker slot gave up before the prompts were done"
                        + (f" (last error: {last_error[0]})" if last_error else "")
                        + "; finished records are kept, re-run to resume"
                    )
            finally:
                with contextlib.suppress(Exception):
                    summary.worker_info = list(
                        await asyncio.wait_for(
                            asyncio.gather(*(a.info.remote() for _, a in sorted(live.items()))), 30
                        )
                    )
                if isinstance(worker_reward, RemoteReward) and worker_reward is not reward:
                    with contextlib.suppress(Exception):
                        summary.reward_stats = await asyncio.wait_for(
                            worker_reward.actor.stats.remote(), 30
                        )
                for a in actors:
                    with contextlib.suppress(Exception):
                        ray.kill(a, no_restart=True)
                finish()
        return summary
    finally:
        run.lock.release()


def synthesize_distributed(*args: Any, **kwargs: Any) -> DistributedSummary:
    """Blocking wrapper around :func:`run_distributed`."""
    return asyncio.run(run_distributed(*args, **kwargs))


async def _ready(actor: Any, what: str) -> None:
    from ray.exceptions import RayError

    try:
        await actor.stats.remote()
    except RayError as exc:
        raise DistributedError(
            f"the {what} did not start: {str(exc).strip().splitlines()[-1][:500]}"
        ) from exc


def _agent_configs(agents: Any) -> list[Any]:
    from toa_graph.config import AgentConfig

    if isinstance(agents, Mapping):
        return [a for a in agents.values() if isinstance(a, AgentConfig)]
    if isinstance(agents, Sequence):
        return [a for a in agents if isinstance(a, AgentConfig)]
    return []
