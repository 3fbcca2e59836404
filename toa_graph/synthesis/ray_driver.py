"""Synthesis on a Ray cluster: the prompt set sharded over worker actors, one writer.

``toa-graph synthesize --ray [ADDRESS] --ray-workers N`` (or :class:`RayDriver`,
:func:`run_distributed`) runs the same prompt loop as a single-process run
(:func:`~toa_graph.synthesis.runner.run_prompts`) inside ``N`` Ray actors, each with its own ``concurrency`` prompts in flight, and one
reward service for all of them::

    driver (this process)                        Ray cluster
    ---------------------                        -----------
    read input, skip finished ids  --shard-->    SynthesisWorker 0: run_prompts(shard)
    records.jsonl  (single writer) <--records--  SynthesisWorker 1: run_prompts(shard)
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
the workers receive their items in the call and write nothing: each streams its
prompts' outcomes (a :class:`~toa_graph.synthesis.sink.StreamSink`) to the driver, whose
:class:`~toa_graph.synthesis.rundir.RunDirectory` is the same record sink a
single-process run writes through. ``records.jsonl`` is the merged output (records
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
import logging
import math
import os
import time
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from toa_graph.errors import RunError
from toa_graph.synthesis.inputs import PromptItem
from toa_graph.synthesis.ray_workers import (
    REMOTE_REWARD_KINDS,
    RemoteReward,
    SynthesisWorker,
    agent_configs,
    is_reward_config,
    ray_session,
    start_reward_actor,
    worker_pool_options,
)
from toa_graph.synthesis.rundir import InputSource, RunDirectory
from toa_graph.synthesis.runner import RunnerConfig
from toa_graph.synthesis.sink import SinkEntry
from toa_graph.synthesis.summary import SynthesisSummary, merge_counters

logger = logging.getLogger(__name__)


class DistributedError(RunError):
    """The run could not finish: every worker slot gave up (see the message for why)."""


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
    """From the first worker slot up until the last result arrived: the time the prompts
    took (measured from the first, not the last, worker up, so a short run whose last
    worker comes up after every result is in still has a span)."""


@dataclass(kw_only=True)
class RayOptions:
    """How a run is spread over Ray (the rest is the :class:`RunnerConfig`).

    Workers:
        workers: worker actors (slots); each runs ``concurrency`` prompts at once.
        shard_size: prompts per shard (default: an even split, at most 64 x concurrency).
        max_attempts: runs of a shard before its remaining prompts are noted as failed.
        max_restarts: replacement actors per slot after worker deaths.
        pool_options: :class:`~toa_graph.agents.AgentPool` options in each worker (by
            default each gets ``limit_share=1/workers`` of the agents' rate and
            concurrency limits).
        worker_options: extra ``.options(...)`` for the worker actors (resources, ...).
        name_prefix: worker actors are named ``<prefix>-worker-<slot>.<restart>``.

    Reward:
        shared_reward: run a reward config in one :class:`RewardActor` for all workers
            (default: yes, except for kinds that are already servers: ``vllm``, ``judge``).
        reward_num_gpus: GPUs for the shared reward actor.

    Cluster:
        address: a Ray cluster to connect to; ``None`` starts a local one on 127.0.0.1.
        num_cpus: logical CPUs of a local instance (default: enough for every actor).
        runtime_env: Ray runtime env for the job (e.g. ``{"env_vars": {...}}``).
    """

    workers: int = 2
    shard_size: int | None = None
    max_attempts: int = 3
    max_restarts: int = 3
    pool_options: Mapping[str, Any] | None = None
    worker_options: Mapping[str, Any] | None = None
    name_prefix: str | None = None
    shared_reward: bool | None = None
    reward_num_gpus: float = 0
    address: str | None = None
    num_cpus: int | None = None
    runtime_env: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.workers < 1 or self.max_attempts < 1 or self.max_restarts < 0:
            raise ValueError("need workers >= 1, max_attempts >= 1, max_restarts >= 0")


@dataclass
class _Shard:
    id: int
    items: list[PromptItem]
    attempts: int = 0
    received: set[str] = field(default_factory=set)

    def remaining(self) -> list[PromptItem]:
        return [it for it in self.items if it.id not in self.received]


class RayDriver:
    """Runs a :class:`RunnerConfig` over ``workers`` Ray actors; the only writer of the
    output directory (see the module docstring). One driver per run::

        summary = await RayDriver(config, RayOptions(workers=4)).run("in.jsonl", "out/")
    """

    def __init__(self, config: RunnerConfig, options: RayOptions) -> None:
        self.config = config
        self.options = options
        self.prefix = (
            options.name_prefix or f"toa-graph-{os.getpid()}-{int(time.time() * 1000) % 10**8}"
        )
        self.summary = DistributedSummary(
            method=config.method, output_dir="", config_digest=config.digest or "",
            workers=options.workers, ray_address=options.address,
        )  # fmt: skip
        self._retry: deque[_Shard] = deque()
        self._fresh: Iterator[_Shard] = iter(())
        self._fresh_done = False
        self._busy = 0
        self._last_error: str | None = None
        self._ready_at: list[float] = []
        self._actors: list[Any] = []
        self._live: dict[int, Any] = {}
        self._worker_config = config
        self._reward_actor: RemoteReward | None = None
        self._reward_up: asyncio.Future[None] | None = None

    async def run(
        self, input: InputSource, output_dir: str | os.PathLike[str]
    ) -> DistributedSummary:
        """Run every prompt of ``input`` not yet in ``output_dir``; the run's summary."""
        cfg, opts, summary = self.config, self.options, self.summary
        cfg.check_method()
        summary.output_dir = str(output_dir)
        run = RunDirectory.open(
            input, output_dir, summary, field_map=cfg.fields, limit=cfg.limit, fsync=cfg.fsync,
            collect_rows=cfg.collect_rows, compress=cfg.compress,
        )  # fmt: skip
        self.run_dir = run
        try:
            run.show_progress(cfg.progress, f"{cfg.method} x{opts.workers}")
            run.postfix = lambda: {"deaths": summary.worker_deaths}
            size = opts.shard_size or max(
                1, min(math.ceil(run.todo / opts.workers), 64 * cfg.concurrency)
            )
            self._fresh = self._shards_from_input(size)
            if run.todo == 0:  # everything is done already: count the input, start nothing
                for _ in self._fresh:
                    pass
                return summary
            cpus = opts.num_cpus or max(os.cpu_count() or 2, opts.workers + 1)
            with ray_session(opts.address, num_cpus=cpus, runtime_env=opts.runtime_env) as ray:
                await self._run_on(ray)
            return summary
        finally:
            if self._ready_at:
                summary.startup_s = round(max(self._ready_at) - run.start, 3)
                # from the first worker ready: in a short run the last worker can come up
                # after every result is in, which would make the span zero
                summary.run_s = round(max(0.0, run.last_result_at - min(self._ready_at)), 3)
            summary.duplicates_dropped = run.duplicates
            summary.reward_counters = merge_counters(
                *(w.get("reward_counters") for w in summary.worker_info),
                (summary.reward_stats or {}).get("counters"),
            )
            run.close()

    # ------------------------------------------------------------ shards

    def _shards_from_input(self, size: int) -> Iterator[_Shard]:
        batch: list[PromptItem] = []
        n = 0
        for it in self.run_dir.todo_items():
            batch.append(it)
            if len(batch) >= size:
                yield _Shard(n, batch)
                n += 1
                batch = []
        if batch:
            yield _Shard(n, batch)

    def _next_shard(self) -> _Shard | None:
        if self._retry:
            return self._retry.popleft()
        if not self._fresh_done:
            nxt = next(self._fresh, None)
            if nxt is not None:
                return nxt
            self._fresh_done = True
        return None

    async def _take_shard(self) -> _Shard | None:
        """The next shard to run, or ``None`` once no slot is running one (a shard that
        another slot gives back needs a taker, so a free slot waits while any is busy)."""
        while (shard := self._next_shard()) is None:
            if self._busy == 0:
                return None
            await asyncio.sleep(0.1)
        return shard

    def _give_back(self, shard: _Shard, why: str) -> None:
        """Queue a shard's prompts that did not come back again, or note them as failed
        once the shard has had ``max_attempts`` runs."""
        rest = shard.remaining()
        if not rest:
            return
        if shard.attempts < self.options.max_attempts:
            self.summary.shard_retries += 1
            self._retry.append(shard)
            return
        logger.error(
            "shard %d: %d prompts not done after %d attempts (%s); noted as failed",
            shard.id, len(rest), shard.attempts, why,
        )  # fmt: skip
        for it in rest:
            shard.received.add(it.id)
            error = f"worker lost {shard.attempts} times: {why}"
            self.run_dir.failed({"id": it.id, "line": it.line, "error": error})

    def _deliver(self, shard: _Shard, batch: list[SinkEntry]) -> None:
        for kind, payload in batch:
            shard.received.add(str(payload["id"]))
            if kind == "record":
                self.run_dir.record(payload)
            else:
                self.run_dir.failed(payload)

    # ------------------------------------------------------------ actors

    async def _run_on(self, ray: Any) -> None:
        self._start_reward()
        self._worker_config = replace(
            self.config, reward=self._reward_actor or self.config.reward, progress=False,
            collect_rows=False,
        )  # fmt: skip
        try:
            await asyncio.gather(*(self._slot_loop(ray, i) for i in range(self.options.workers)))
            if self._retry or (not self._fresh_done and next(self._fresh, None) is not None):
                raise DistributedError(
                    "every Ray worker slot gave up before the prompts were done"
                    + (f" (last error: {self._last_error})" if self._last_error else "")
                    + "; finished records are kept, re-run to resume"
                )
        finally:
            await self._collect_and_stop(ray)

    def _start_reward(self) -> None:
        """A reward config runs in one shared :class:`RewardActor` unless it is already a
        service (or ``shared_reward=False``); then each worker builds or calls its own."""
        reward, opts = self.config.reward, self.options
        shared = opts.shared_reward
        if shared is None:
            shared = getattr(reward, "kind", None) not in REMOTE_REWARD_KINDS
        if not (is_reward_config(reward) and shared):
            return
        self._reward_actor = start_reward_actor(
            reward, agent_configs(self.config.agents), name=f"{self.prefix}-reward",
            num_gpus=opts.reward_num_gpus,
        )  # fmt: skip
        self._actors.append(self._reward_actor.actor)
        self._reward_up = asyncio.ensure_future(_ready(self._reward_actor.actor, "reward actor"))

    def _new_actor(self, ray: Any, slot: int, restart: int) -> Any:
        opts: dict[str, Any] = {
            "num_cpus": 1,
            "max_concurrency": 4,
            "scheduling_strategy": "SPREAD",
        }
        opts.update(self.options.worker_options or {})
        actor = (
            ray.remote(SynthesisWorker)
            .options(name=f"{self.prefix}-worker-{slot}.{restart}", **opts)
            .remote(
                slot,
                self._worker_config,
                worker_pool_options(self.options.pool_options, self.options.workers),
            )
        )
        self._actors.append(actor)
        self._live[slot] = actor
        return actor

    async def _start_worker(self, ray: Any, slot: int) -> tuple[Any, int]:
        """A slot's first actor, once it is up (it builds the graph and clients), and the
        restarts that took; ``(None, n)`` when the slot ran out of restarts."""
        from ray.exceptions import RayError

        for restart in range(self.options.max_restarts + 1):
            actor = self._new_actor(ray, slot, restart)
            try:
                await actor.info.remote()
                return actor, restart
            except RayError as exc:
                why = f"worker {slot} did not start: {_last_line(exc, 300)}"
                logger.error("%s", why)
                self._last_error = why
                self._live.pop(slot, None)
        return None, self.options.max_restarts

    async def _slot_loop(self, ray: Any, slot: int) -> None:
        actor, restarts = await self._start_worker(ray, slot)
        if actor is None:
            return
        if self._reward_up is not None:
            await self._reward_up  # a reward actor that cannot start ends the run here
        self._ready_at.append(time.perf_counter())
        while (shard := await self._take_shard()) is not None:
            if not await self._run_shard(slot, actor, shard):
                continue
            self._live.pop(slot, None)  # the worker died: replace it, restarts permitting
            if restarts >= self.options.max_restarts:
                logger.error("worker slot %d: %d restarts used; slot closed", slot, restarts)
                return
            restarts += 1
            with contextlib.suppress(Exception):
                ray.kill(actor, no_restart=True)
            actor = self._new_actor(ray, slot, restarts)

    async def _run_shard(self, slot: int, actor: Any, shard: _Shard) -> bool:
        """Run one shard attempt on ``actor``, delivering what it streams back; whether the
        worker died (what did not come back is queued again either way)."""
        from ray.exceptions import RayError, RayTaskError

        shard.attempts += 1
        self.summary.shards += 1
        self._busy += 1
        try:
            gen = actor.run_shard.options(num_returns="streaming").remote(
                shard.id, shard.remaining()
            )
            async for ref in gen:
                self._deliver(shard, await ref)
        except RayTaskError as exc:
            # the prompt loop raised inside a live worker: retry the rest of the shard
            self._last_error = why = f"worker {slot} failed: {_last_line(exc, 200)}"
            logger.error("shard %d: %s", shard.id, why)
            self._give_back(shard, why)
            return False
        except RayError as exc:  # RayActorError, lost objects, node death
            self._last_error = why = f"worker {slot} died: {type(exc).__name__}"
            logger.warning(
                "shard %d: %s after %d of %d prompts; the rest is queued again",
                shard.id, why, len(shard.received), len(shard.items),
            )  # fmt: skip
            self.summary.worker_deaths += 1
            self._give_back(shard, why)
            return True
        finally:
            self._busy -= 1
        if shard.remaining():  # the worker ended without a word about some ids
            self._give_back(shard, "worker returned no result for them")
        return False

    async def _collect_and_stop(self, ray: Any) -> None:
        """Note the live workers' and the reward actor's stats, then kill every actor."""
        live = [a for _, a in sorted(self._live.items())]
        with contextlib.suppress(Exception):
            self.summary.worker_info = list(
                await asyncio.wait_for(asyncio.gather(*(a.info.remote() for a in live)), 30)
            )
        if self._reward_actor is not None:
            with contextlib.suppress(Exception):
                self.summary.reward_stats = await asyncio.wait_for(
                    self._reward_actor.actor.stats.remote(), 30
                )
        for a in self._actors:
            with contextlib.suppress(Exception):
                ray.kill(a, no_restart=True)


async def _ready(actor: Any, what: str) -> None:
    from ray.exceptions import RayError

    try:
        await actor.stats.remote()
    except RayError as exc:
        raise DistributedError(f"the {what} did not start: {_last_line(exc, 500)}") from exc


def _last_line(exc: BaseException, n: int) -> str:
    return str(exc).strip().splitlines()[-1][:n]


async def run_distributed(
    input: InputSource,
    output_dir: str | os.PathLike[str],
    *,
    method: str,
    agents: Any,
    reward: Any,
    **options: Any,
) -> DistributedSummary:
    """Run ``method`` over ``input`` on Ray worker actors; one record per prompt id in
    ``output_dir/records.jsonl`` (see the module docstring for how).

    ``**options`` are the fields of :class:`RunnerConfig` (as for
    :func:`~toa_graph.synthesis.run_synthesis`, but ``shard``) and of :class:`RayOptions`
    (``workers``, ``address``, ``shard_size``, ...). ``agents`` should be AgentConfigs
    (picklable; each worker builds its own :class:`~toa_graph.agents.AgentPool`);
    ``reward`` a reward config (built once in a shared :class:`RewardActor`, or in each
    worker) or a picklable reward object, shipped to every worker.
    """
    ray_fields = RayOptions.__dataclass_fields__
    ray_opts = RayOptions(**{k: v for k, v in options.items() if k in ray_fields})
    config = RunnerConfig(
        method=method, agents=agents, reward=reward,
        **{k: v for k, v in options.items() if k not in ray_fields},
    )  # fmt: skip
    return await RayDriver(config, ray_opts).run(input, output_dir)


def synthesize_distributed(*args: Any, **kwargs: Any) -> DistributedSummary:
    """Blocking wrapper around :func:`run_distributed`."""
    return asyncio.run(run_distributed(*args, **kwargs))
