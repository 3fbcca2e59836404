"""The synthesis runner: a method over a prompt file with bounded concurrency.

The runner behind ``toa-graph synthesize`` (and ``compare``), usable from Python::

    from toa_graph.synthesis import run_synthesis
    summary = await run_synthesis("prompts.jsonl", "out/", method="toa",
                                  agents=cfg.agents, reward=reward, context={"budget": 16})

Durability model: a prompt's record is written in one ``write`` call only once the prompt
is complete. The graph is compiled **without a checkpointer** (per-step checkpoints
re-serialise the growing ``samples`` list and cost bytes quadratic in the budget): a
killed prompt is re-run, but each generation it got back is kept in the run directory's
generation store (:mod:`toa_graph.synthesis.genstore`) as it returns, and the re-run is
answered from there, so a kill costs at most the requests that were in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from toa_graph.agents.memo import CURRENT_MEMO
from toa_graph.errors import PromptSkipped
from toa_graph.rewards.base import reward_counters
from toa_graph.synthesis.digest import data_digest, data_payload
from toa_graph.synthesis.genstore import GenerationStore
from toa_graph.synthesis.inputs import PromptItem, parse_field_map
from toa_graph.synthesis.recordio import Compression
from toa_graph.synthesis.records import build_record, config_digest
from toa_graph.synthesis.rundir import DataConfig, InputSource, RunDirectory
from toa_graph.synthesis.sink import RecordSink
from toa_graph.synthesis.summary import (
    ProgressFactory,
    SynthesisSummary,
    merge_counters,
)

logger = logging.getLogger(__name__)


@dataclass(kw_only=True)
class RunnerConfig:
    """What a synthesis run does, for the single-process runner and every Ray worker.

    Method:
        method: a name in the method registry (:mod:`toa_graph.registry`).
        agents, reward: as taken by the method factories (configs or objects).
        context: per-run knobs of the method (checked before the run: an unknown knob is
            an error listing the method's knobs).
        method_options: the method's factory options (e.g. MoA's ``aggregator``).
        graph: a compiled graph to use instead of compiling ``method``.
        digest: config digest written in each record (default: computed from the above).
        data: what determines the data (default: computed from the above; the CLI passes
            the config's reward section); its hash, ``data_digest``, is written in each
            record, and an output of another data digest is refused.
        force_mixed: append to an output made under another data digest.

    Input:
        limit: only the first ``limit`` usable input rows.
        field_map: read prompt/reference/id from other input fields (``KEY=FIELD``).
        shard: ``(k, n)``: only the prompts whose id hashes to shard ``k`` of ``n``
            (``limit`` applies before sharding).

    Running and output:
        concurrency: prompts in flight at once.
        prompt_timeout_s: give up on a prompt after this long (it is then "failed").
        fsync: fsync after each record (slower; survives power loss, not just a kill).
        compress: ``"zst"`` or ``"gz"``: write ``records.jsonl.zst`` / ``.gz`` (a new
            output directory only; one that already holds records keeps its file).
        progress: show a tqdm bar (or pass a factory ``(total=, desc=) -> bar``).
        collect_rows: keep a per-prompt table in the summary.
    """

    method: str
    agents: Any
    reward: Any
    context: Mapping[str, Any] = field(default_factory=dict)
    method_options: Mapping[str, Any] = field(default_factory=dict)
    graph: Any = None
    digest: str | None = None
    data: Mapping[str, Any] | None = None
    force_mixed: bool = False
    limit: int | None = None
    field_map: Mapping[str, str] | Iterable[str] | None = None
    shard: tuple[int, int] | None = None
    concurrency: int = 16
    prompt_timeout_s: float | None = None
    fsync: bool = False
    compress: Compression | None = None
    progress: bool | ProgressFactory = True
    collect_rows: bool = True
    fields: dict[str, str] = field(init=False, repr=False)
    """``field_map`` parsed."""
    data_digest: str = field(init=False, default="")
    settings: Any = field(init=False, repr=False, default=None)
    """The run's :class:`~toa_graph.registry.RunSettings` (``None`` with a given ``graph``):
    ``method``, ``context`` and ``method_options`` resolved once, here, so a bad knob or
    option fails before anything starts and every prompt runs the same typed context."""

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {self.concurrency}")
        self.context = dict(self.context or {})
        self.fields = parse_field_map(self.field_map)
        if self.graph is None:
            from toa_graph.registry import RunSettings

            self.settings = RunSettings.resolve(
                method=self.method, knobs=self.context, options=self.method_options
            )
        self.digest = self.digest or config_digest(
            method=self.method, context=self.context, agents=self.agents, reward=self.reward,
            options=self.method_options,
        )  # fmt: skip
        if self.data is None:
            self.data = data_payload(
                method=self.method, context=self.context, agents=self.agents,
                reward=self.reward, options=self.method_options,
            )  # fmt: skip
        self.data_digest = data_digest(self.data)

    def data_config(self, *, store: bool) -> DataConfig:
        return DataConfig(self.data_digest, self.data or {}, self.force_mixed, store)

    def check_method(self) -> None:
        """Raise when ``method`` is not a known method or its knobs or options are bad
        (before anything starts); a ``UserError`` (a ``ValueError``) listing what is
        allowed. Done at construction; kept for callers that check explicitly."""
        if self.graph is None and self.settings is None:  # pragma: no cover - set above
            raise ValueError("run settings were not resolved")

    def run_context(self) -> Any:
        """What each prompt's run gets as its context: the resolved, typed one (a given
        ``graph``: the plain knobs, read by that graph)."""
        return self.settings.context if self.settings is not None else dict(self.context)

    def compile_graph(self, agents: Any = None, reward: Any = None) -> Any:
        """``graph``, else ``method`` compiled for a bulk run (no checkpointer: see the
        module docstring) with ``agents`` / ``reward`` (default: the config's)."""
        if self.graph is not None:
            return self.graph
        from toa_graph.registry import compile_method

        agents = self.agents if agents is None else agents
        reward = self.reward if reward is None else reward
        return compile_method(
            self.method, agents=agents, reward=reward, options=self.method_options
        )


def trace_config(item: PromptItem, config: RunnerConfig) -> dict[str, Any]:
    """The ``RunnableConfig`` of one prompt's graph run. With LangSmith tracing on
    (``LANGSMITH_TRACING=true``, ``LANGSMITH_API_KEY``) each prompt is one trace named
    ``<method>:<prompt id>``, tagged ``toa_graph`` and ``method:<method>``, with metadata
    ``prompt_id``, ``config_digest``, ``method`` and ``input_line`` to filter on."""
    return {
        "run_name": f"{config.method}:{item.id}",
        "tags": ["toa_graph", f"method:{config.method}"],
        "metadata": {
            "prompt_id": item.id,
            "config_digest": config.digest or "",
            "method": config.method,
            "input_line": item.line,
        },
    }


def generation_failure(record: Mapping[str, Any]) -> str | None:
    """Why a finished prompt's record is not usable (no scored best sample), else ``None``."""
    best = record["best"]
    if isinstance(best, dict) and best.get("reward") is not None:
        return None
    errs = "; ".join(record["errors"]) or "no sample was generated"
    return f"no usable sample ({record['totals']['generations']} generations): {errs}"


async def run_prompts(
    items: Iterable[PromptItem],
    graph: Any,
    config: RunnerConfig,
    sink: RecordSink,
    store: GenerationStore | None = None,
) -> None:
    """Run ``graph`` on each item, ``config.concurrency`` at once, and hand each outcome to
    ``sink`` (one ``record`` or ``failed`` per item). The prompt loop of the
    single-process runner and of each Ray worker. With a ``store``, each prompt runs with
    its memo (:data:`~toa_graph.agents.memo.CURRENT_MEMO`): generations it already paid
    for are answered from the store, new ones kept there."""
    ctx = dict(config.context)
    run_ctx = config.run_context()
    digest = config.digest or ""
    timeout = config.prompt_timeout_s
    queue: asyncio.Queue[PromptItem | None] = asyncio.Queue(maxsize=2 * config.concurrency)

    def fail(item: PromptItem, reason: str, t0: float) -> None:
        sink.failed({"id": item.id, "line": item.line, "error": reason}, time.perf_counter() - t0)

    async def process(item: PromptItem) -> None:
        t0 = time.perf_counter()
        inp = {"prompt": item.prompt, "reference": item.reference, "id": item.id}
        memo = store.memo(item.id) if store is not None else None
        token = CURRENT_MEMO.set(memo)
        try:
            call = graph.ainvoke(inp, context=run_ctx, config=trace_config(item, config))
            out = await (asyncio.wait_for(call, timeout) if timeout else call)
        except asyncio.CancelledError:
            raise
        except TimeoutError:
            fail(item, f"timed out after {timeout} s", t0)
            return
        except PromptSkipped as exc:  # nothing spent; a rerun would be skipped the same way
            logger.info("prompt %s skipped: %s", item.id, exc)
            out = {"samples": [], "best": None, "skipped": str(exc)}
            wall = time.perf_counter() - t0
            sink.record(
                build_record(
                    item, out, method=config.method, digest=digest, context=ctx, wall_s=wall
                )
            )
            return
        except Exception as exc:
            from toa_graph.agents import describe_error

            logger.warning("prompt %s failed: %s", item.id, describe_error(exc))
            fail(item, describe_error(exc), t0)
            return
        finally:
            CURRENT_MEMO.reset(token)
            if store is not None and memo is not None:
                store.reused += memo.hits
        wall = time.perf_counter() - t0
        record = build_record(
            item, out, method=config.method, digest=digest, context=ctx, wall_s=wall,
            data_digest=config.data_digest,
        )  # fmt: skip
        reason = generation_failure(record)
        if reason is not None:
            fail(item, reason, t0)
        else:
            sink.record(record)

    async def worker() -> None:
        while (item := await queue.get()) is not None:
            await process(item)

    async def produce() -> None:
        for n, it in enumerate(items):
            await queue.put(it)
            if n % 256 == 0:
                await asyncio.sleep(0)
        for _ in range(config.concurrency):
            await queue.put(None)

    workers = [
        asyncio.create_task(worker(), name=f"synth-worker-{i}") for i in range(config.concurrency)
    ]
    try:
        await asyncio.gather(produce(), *workers)
    finally:
        for w in workers:
            w.cancel()
        with contextlib.suppress(BaseException):
            await asyncio.gather(*workers, return_exceptions=True)


async def run_config(
    input: InputSource, output_dir: str | os.PathLike[str], config: RunnerConfig
) -> SynthesisSummary:
    """Run ``config`` over every prompt of ``input``, one record per prompt in
    ``output_dir`` (created if missing; re-running with the same directory resumes)."""
    graph = config.compile_graph()
    summary = SynthesisSummary(
        method=config.method, output_dir=str(output_dir), config_digest=config.digest or ""
    )
    run = RunDirectory.open(
        input, output_dir, summary, field_map=config.fields, limit=config.limit,
        shard=config.shard, fsync=config.fsync, collect_rows=config.collect_rows,
        compress=config.compress, data=config.data_config(store=True),
    )  # fmt: skip
    try:
        run.show_progress(config.progress, config.method)
        await run_prompts(run.todo_items(), graph, config, run, run.store)
    finally:
        if run.store is not None:
            summary.generations_reused = run.store.reused
        summary.reward_counters = merge_counters(reward_counters(config.reward))
        run.close()
    return summary


async def run_synthesis(
    input: InputSource,
    output_dir: str | os.PathLike[str],
    *,
    method: str,
    agents: Any,
    reward: Any,
    **options: Any,
) -> SynthesisSummary:
    """Run ``method`` over every prompt of ``input`` and append one record per prompt.

    Args:
        input: a prompt file (JSONL / JSON array / Parquet) or already-parsed items.
        output_dir: created if missing; re-running with the same directory resumes.
        method, agents, reward, **options: the fields of :class:`RunnerConfig`
            (``context``, ``concurrency``, ``limit``, ``field_map``, ``fsync``, ``compress``,
            ``progress``, ``digest``, ``prompt_timeout_s``, ``collect_rows``, ``graph``,
            ``shard``). With ``shard=(k, n)``, run ``n`` processes, each with its own
            ``output_dir``, to use more CPU cores; export them together (ids are disjoint).
    """
    config = RunnerConfig(method=method, agents=agents, reward=reward, **options)
    return await run_config(input, output_dir, config)


def synthesize(*args: Any, **kwargs: Any) -> SynthesisSummary:
    """Blocking wrapper around :func:`run_synthesis` (for scripts and notebooks without a loop)."""
    return asyncio.run(run_synthesis(*args, **kwargs))
