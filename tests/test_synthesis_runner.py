"""The synthesis runner with fake agents: records, resume, concurrency, failures, bytes."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.distributed_fakes import CountingHashReward
from tests.fakes import FakeAgent, fake_agents, generations_ok, hash_reward, same_ids
from toa_graph.methods import METHODS
from toa_graph.synthesis import (
    LOCK_FILE,
    OutputBusyError,
    OutputLock,
    RecordWriter,
    RunnerConfig,
    StreamSink,
    config_digest,
    parse_jsonl,
    read_records,
    repair_records,
    run_synthesis,
    scan_records_bytes,
)
from toa_graph.synthesis.digest import MixedDigestError
from toa_graph.synthesis.runner import run_prompts
from toa_graph.synthesis.summary import merge_counters


def write_prompts(path: Path, n: int, **extra: Any) -> Path:
    with path.open("w") as f:
        for i in range(n):
            f.write(
                json.dumps({"id": f"p{i}", "instruction": f"Question number {i}?", **extra}) + "\n"
            )
    return path


def lines_of(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text().splitlines()]


async def test_one_record_per_prompt(tmp_path: Path) -> None:
    inp = write_prompts(tmp_path / "in.jsonl", 12, answer="42")
    s = await run_synthesis(
        inp, tmp_path / "out", method="toa", agents=fake_agents(), reward=hash_reward,
        context={"budget": 5}, concurrency=4, progress=False,
    )  # fmt: skip
    recs = lines_of(tmp_path / "out" / "records.jsonl")
    assert sorted(r["id"] for r in recs) == sorted(f"p{i}" for i in range(12))
    assert (s.done, s.skipped, s.failed, s.bad_lines, s.inputs) == (12, 0, 0, 0, 12)
    r = recs[0]
    assert r["method"] == "toa" and r["config_digest"] == s.config_digest
    assert r["prompt"].startswith("Question number") and r["reference"] == "42"
    assert "input" not in r  # id, instruction and answer are written once, at the top level
    assert len(r["samples"]) == 5 and r["totals"]["generations"] == 5
    assert r["totals"]["tokens"]["total_tokens"] == sum(
        x["usage"]["total_tokens"] for x in r["samples"]
    )
    assert r["best"]["reward"] == max(x["reward"] for x in r["samples"])
    assert r["tree"] is not None and r["shortfall"] == 0 and r["errors"] == []
    assert s.mean_best_reward == pytest.approx(sum(x["best"]["reward"] for x in recs) / 12)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["done"] == 12
    assert s.generations == 60 and len(s.rows) == 12


@pytest.mark.parametrize("method", sorted(METHODS))
async def test_every_registered_method_runs(tmp_path: Path, method: str) -> None:
    inp = write_prompts(tmp_path / "in.jsonl", 3, answer="42")
    budget = 7 if method == "debate" else 4  # debate: 3 answers + one full round (3 + 1)
    s = await run_synthesis(
        inp, tmp_path / "out", method=method, agents=fake_agents(), reward=hash_reward,
        context={"budget": budget}, concurrency=2, progress=False,
    )  # fmt: skip
    assert s.done == 3 and s.failed == 0
    for r in lines_of(tmp_path / "out" / "records.jsonl"):
        assert r["method"] == method
        assert generations_ok(method, r["totals"]["generations"], budget), r["totals"]


async def test_concurrency_is_bounded_and_used(tmp_path: Path) -> None:
    inflight = 0
    peak = 0

    async def slow_reward(prompt: Any, responses: list[str]) -> list[float]:
        nonlocal inflight, peak
        inflight += 1
        peak = max(peak, inflight)
        await asyncio.sleep(0.02)
        inflight -= 1
        return [0.5] * len(responses)

    inp = write_prompts(tmp_path / "in.jsonl", 20)
    await run_synthesis(
        inp, tmp_path / "out", method="toa", agents=fake_agents(), reward=slow_reward,
        context={"budget": 2}, concurrency=5, progress=False,
    )  # fmt: skip
    assert peak == 5  # toa scores one play per step: one reward call per prompt in flight


async def test_resume_skips_done_and_cuts_torn_tail(tmp_path: Path) -> None:
    inp = write_prompts(tmp_path / "in.jsonl", 10)
    out = tmp_path / "out"
    kw: dict[str, Any] = dict(
        method="toa",
        agents=fake_agents(),
        reward=hash_reward,
        context={"budget": 3},
        progress=False,
    )
    s1 = await run_synthesis(inp, out, limit=6, concurrency=3, **kw)
    assert s1.done == 6
    rec_path = out / "records.jsonl"
    good = rec_path.read_bytes()
    # a killed writer leaves half a line (here: the start of an extra record)
    last = good.splitlines()[-1]
    with rec_path.open("ab") as f:
        f.write(last[: len(last) // 2].replace(b'"id":"', b'"id":"zz', 1))
    s2 = await run_synthesis(inp, out, concurrency=3, **kw)
    assert s2.torn_bytes_repaired > 0
    assert (s2.done, s2.skipped) == (4, 6)
    data = rec_path.read_bytes()
    assert data.startswith(good)  # earlier records untouched
    ids = [r["id"] for r in lines_of(rec_path)]
    assert sorted(ids) == sorted(f"p{i}" for i in range(10)) and len(ids) == len(set(ids))
    s3 = await run_synthesis(inp, out, concurrency=3, **kw)
    assert (s3.done, s3.skipped) == (0, 10)
    assert rec_path.read_bytes() == data
    assert s3.mean_best_reward is None and s3.mean_best_reward_all is not None


def test_scan_records_bytes() -> None:
    a = b'{"id":"a","best":{"reward":1.0},"config_digest":"d1"}\n'
    b = b'{"id":"b","best":{"reward":0.0}}\n'
    s = scan_records_bytes(a + b)
    assert same_ids(s.ids, {"a", "b"}) and s.good_end == len(a + b) and s.torn_bytes == 0
    assert (s.best_rewards.total, s.best_rewards.count) == (1.0, 2) and s.digests == {"d1"}
    s = scan_records_bytes(a + b'{"id":"c","sam')  # no newline: torn
    assert same_ids(s.ids, {"a"}) and s.good_end == len(a)
    s = scan_records_bytes(a + b'{"id":"c"' + b"\x00" * 10 + b"\n")  # garbage line at the end
    assert same_ids(s.ids, {"a"}) and s.good_end == len(a)
    s = scan_records_bytes(a + b"garbage\n" + b)  # garbage in the middle is kept, reported
    assert same_ids(s.ids, {"a", "b"}) and s.bad_lines == [2] and s.torn_bytes == 0
    assert same_ids(scan_records_bytes(b"").ids, set())


def test_repair_records_and_read_records(tmp_path: Path) -> None:
    p = tmp_path / "records.jsonl"
    with RecordWriter(p) as w:
        w.append({"id": "x", "v": float("nan")})
        w.append({"id": "y"})
    p.write_bytes(p.read_bytes() + b'{"id": "z", "tor')
    assert [r["id"] for r in read_records(p)] == ["x", "y"]
    res = repair_records(p)
    assert same_ids(res.ids, {"x", "y"}) and p.read_bytes().endswith(b"}\n")
    assert json.loads(p.read_text().splitlines()[0])["v"] is None  # NaN is not JSON


async def test_failures_are_reported_and_retried(tmp_path: Path) -> None:
    inp = write_prompts(tmp_path / "in.jsonl", 4)
    out = tmp_path / "out"

    def bad_reward(prompt: Any, responses: list[str]) -> list[float]:
        if "number 2" in str(prompt):
            raise RuntimeError("reward server down")
        return [1.0] * len(responses)

    s = await run_synthesis(
        inp, out, method="toa", agents=fake_agents(), reward=bad_reward, context={"budget": 2},
        concurrency=2, progress=False,
    )  # fmt: skip
    assert (s.done, s.failed) == (3, 1)
    failed = lines_of(out / "failed.jsonl")
    assert failed[0]["id"] == "p2" and "reward server down" in failed[0]["error"]
    retry = {"method": "toa", "agents": fake_agents(), "reward": hash_reward,
             "context": {"budget": 2}, "concurrency": 2, "progress": False}  # fmt: skip
    with pytest.raises(MixedDigestError, match=r"reward\.name: .*bad_reward.* -> \"hash_reward\""):
        await run_synthesis(inp, out, **retry)  # another reward: refused, saying what differs
    s2 = await run_synthesis(inp, out, force_mixed=True, **retry)
    assert (s2.done, s2.skipped, s2.failed) == (1, 3, 0)
    assert s2.digest_mismatch is True  # appended knowingly: flagged
    assert (out / "failed.jsonl").read_text() == ""


async def test_partial_agent_failures_are_recorded_as_shortfall(tmp_path: Path) -> None:
    inp = write_prompts(tmp_path / "in.jsonl", 1)
    agents = {"a": FakeAgent(name="a", fail_on=frozenset({0})), "b": FakeAgent(name="b")}
    await run_synthesis(
        inp, tmp_path / "out", method="toa", agents=agents, reward=hash_reward, context={"budget": 4},
        concurrency=1, progress=False,
    )  # fmt: skip
    [r] = lines_of(tmp_path / "out" / "records.jsonl")
    assert r["totals"]["failed_generations"] == 1 and r["shortfall"] == 1
    assert any("injected failure" in e for e in r["errors"])


async def test_bad_lines_go_to_errors_file(tmp_path: Path) -> None:
    inp = tmp_path / "in.jsonl"
    inp.write_text(
        '{"prompt": "a", "id": 1}\n{oops\n{"prompt": "", "id": 3}\n{"prompt": "b", "id": 1}\n'
    )
    s = await run_synthesis(
        inp, tmp_path / "out", method="toa", agents=fake_agents(), reward=hash_reward,
        context={"budget": 2}, progress=False,
    )  # fmt: skip
    assert (s.done, s.bad_lines) == (1, 3)
    errs = lines_of(tmp_path / "out" / "errors.jsonl")
    assert [e["line"] for e in errs] == [2, 3, 4]
    assert "duplicate id" in errs[2]["reason"]


async def test_progress_bar_reports_mean_best_reward(tmp_path: Path) -> None:
    bars: list[Any] = []

    class Bar:
        def __init__(self, total: int, desc: str) -> None:
            self.total, self.n, self.postfix = total, 0, {}
            bars.append(self)

        def update(self, n: int) -> None:
            self.n += n

        def set_postfix(self, refresh: bool = True, **kw: Any) -> None:
            self.postfix = kw

        def close(self) -> None:
            self.closed = True

    inp = write_prompts(tmp_path / "in.jsonl", 5)
    s = await run_synthesis(
        inp, tmp_path / "out", method="toa", agents=fake_agents(), reward=hash_reward,
        context={"budget": 2}, progress=Bar,
    )  # fmt: skip
    [bar] = bars
    assert bar.total == 5 and bar.n == 5 and bar.closed
    assert float(bar.postfix["best"]) == pytest.approx(s.mean_best_reward, abs=1e-4)


async def test_bytes_written_stay_linear_in_samples(tmp_path: Path) -> None:
    """No checkpointer: a prompt costs one record whose size grows linearly with the budget.
    (For contrast, a per-step checkpointer stores the growing samples list at every step:
    its bytes grow with the square of the budget.)"""
    from langgraph.checkpoint.memory import InMemorySaver

    inp = write_prompts(tmp_path / "in.jsonl", 2)
    per_sample = {}
    total = {}
    ckpt_bytes = {}
    for budget in (8, 16, 32, 64):
        s = await run_synthesis(
            inp, tmp_path / f"out{budget}", method="toa", agents=fake_agents(), reward=hash_reward,
            context={"budget": budget}, progress=False,
        )  # fmt: skip
        assert s.bytes_written == (tmp_path / f"out{budget}" / "records.jsonl").stat().st_size
        total[budget] = s.bytes_written
        per_sample[budget] = s.bytes_written / (2 * budget)
        saver = InMemorySaver()
        g = METHODS["toa"](agents=fake_agents(), reward=hash_reward).compile(checkpointer=saver)
        await g.ainvoke(
            {"prompt": "Question number 0?"},
            {"configurable": {"thread_id": "t"}},
            context={"budget": budget},
        )
        ckpt_bytes[budget] = sum(len(v[1]) for v in saver.blobs.values())
    # bytes per sample do not grow with the budget, and each extra sample costs the same
    assert per_sample[64] <= 1.1 * per_sample[8], per_sample
    marginal_small = (total[16] - total[8]) / (2 * 8)
    marginal_large = (total[64] - total[32]) / (2 * 32)
    assert 0.75 < marginal_large / marginal_small < 1.25, total
    # while a per-step checkpointer grows super-linearly (x8 budget -> far more than x8 bytes)
    assert ckpt_bytes[64] / ckpt_bytes[8] > 20, ckpt_bytes


async def test_caller_items_and_limit(tmp_path: Path) -> None:
    from toa_graph.synthesis import parse_jsonl

    items = parse_jsonl("".join(json.dumps({"prompt": f"q{i}"}) + "\n" for i in range(6))).items
    s = await run_synthesis(
        items, tmp_path / "out", method="toa", agents=fake_agents(), reward=hash_reward,
        context={"budget": 2}, limit=4, progress=False,
    )  # fmt: skip
    assert s.done == 4 and s.inputs == 4
    assert sorted(r["prompt"] for r in read_records(tmp_path / "out")) == [
        f"q{i}" for i in range(4)
    ]


async def test_unknown_method(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown method"):
        await run_synthesis([], tmp_path, method="nope", agents=fake_agents(), reward=hash_reward)


async def test_shards_partition_the_prompts(tmp_path: Path) -> None:
    from toa_graph.exports import read_record_files
    from toa_graph.synthesis import in_shard, parse_shard

    assert parse_shard("1/3") == (1, 3) and parse_shard(None) is None
    for bad in ("3/3", "x/2", "1", "-1/2", "0/0"):
        with pytest.raises(ValueError, match="K/N"):
            parse_shard(bad)
    inp = write_prompts(tmp_path / "in.jsonl", 30)
    dones = []
    for k in range(3):
        s = await run_synthesis(
            inp, tmp_path / f"shard{k}", method="toa", agents=fake_agents(), reward=hash_reward,
            context={"budget": 2}, limit=24, shard=(k, 3), progress=False,
        )  # fmt: skip
        dones.append(s.done)
    assert sum(dones) == 24 and all(d > 0 for d in dones)
    ids = [r["id"] for r in read_record_files([tmp_path / f"shard{k}" for k in range(3)])]
    assert sorted(ids) == sorted(f"p{i}" for i in range(24))
    assert all(in_shard(f"p{i}", (0, 1)) for i in range(5))


async def test_a_second_run_on_the_same_output_is_refused_while_the_first_runs(
    tmp_path: Path,
) -> None:
    """Two writers on one records.jsonl would interleave and duplicate records."""
    inp = write_prompts(tmp_path / "in.jsonl", 6)
    gate = asyncio.Event()

    async def gated_reward(prompt: Any, responses: list[str]) -> list[float]:
        await gate.wait()
        return [0.5] * len(responses)

    first = asyncio.create_task(
        run_synthesis(
            inp,
            tmp_path / "out",
            method="toa",
            agents=fake_agents(),
            reward=gated_reward,
            context={"budget": 2},
            concurrency=2,
            progress=False,
        )
    )
    while not (tmp_path / "out" / LOCK_FILE).exists():
        await asyncio.sleep(0.01)
    with pytest.raises(
        OutputBusyError, match=rf"in use by another toa-graph run \(pid {os.getpid()}\)"
    ):
        await run_synthesis(
            inp, tmp_path / "out", method="toa", agents=fake_agents(), reward=hash_reward,
            context={"budget": 2}, progress=False,
        )  # fmt: skip
    gate.set()
    s = await first
    assert s.done == 6 and len(lines_of(tmp_path / "out" / "records.jsonl")) == 6
    # released at the end: the next run resumes (nothing left to do)
    again = await run_synthesis(
        inp, tmp_path / "out", method="toa", agents=fake_agents(), reward=gated_reward,
        context={"budget": 2}, progress=False,
    )  # fmt: skip
    assert (again.done, again.skipped) == (0, 6)


async def test_the_lock_is_released_when_a_run_fails(tmp_path: Path) -> None:
    class Boom(RuntimeError):
        pass

    class BrokenGraph:
        async def ainvoke(self, *args: Any, **kwargs: Any) -> Any:
            raise Boom("graph exploded")

    inp = write_prompts(tmp_path / "in.jsonl", 2)
    with pytest.raises(FileNotFoundError):  # fails inside open_run, after the lock
        await run_synthesis(
            tmp_path / "missing.jsonl", tmp_path / "out", method="toa", agents=fake_agents(),
            reward=hash_reward, progress=False,
        )  # fmt: skip
    OutputLock(tmp_path / "out").acquire().release()  # free again
    s = await run_synthesis(
        inp, tmp_path / "out", method="toa", agents=fake_agents(), reward=hash_reward,
        progress=False, graph=BrokenGraph(),
    )  # fmt: skip
    assert s.failed == 2
    OutputLock(tmp_path / "out").acquire().release()


def test_a_lock_held_by_another_process_names_it_and_dies_with_it(tmp_path: Path) -> None:
    import subprocess
    import sys

    out = tmp_path / "out"
    out.mkdir()
    holder = subprocess.Popen(
        [
            sys.executable, "-c",
            "import sys, time; from pathlib import Path; "
            "from toa_graph.synthesis import OutputLock; "
            "lock = OutputLock(Path(sys.argv[1])).acquire(); print('held', flush=True); time.sleep(60)",
            str(out),
        ],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(OutputBusyError, match=f"pid {holder.pid}"):
            OutputLock(out).acquire()
        cli = subprocess.run(
            [sys.executable, "-m", "toa_graph.cli", "synthesize", "--output", str(out),
             "--no-progress"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert cli.returncode == 2 and f"pid {holder.pid}" in cli.stderr, cli.stderr[-2000:]
    finally:
        holder.kill()  # SIGKILL: no clean-up of its own
        holder.wait()
    OutputLock(out).acquire().release()  # the kernel dropped the dead process's lock


# ---------------------------------------------------------------- the package's seams


async def test_reward_counters_are_summed_into_summary_json(tmp_path: Path) -> None:
    inp = write_prompts(tmp_path / "in.jsonl", 4)
    reward = CountingHashReward()
    s = await run_synthesis(
        inp, tmp_path / "out", method="random", agents=fake_agents(), reward=reward,
        context={"budget": 3}, concurrency=2, progress=False,
    )  # fmt: skip
    assert s.done == 4 and s.generations == 12
    # every generation was scored once, each time for the plain-string prompt
    expected = {"responses": 12, "string_prompts": reward.string_prompts}
    assert reward.string_prompts > 0
    assert s.reward_counters == expected
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["reward_counters"] == expected
    # a reward without counters() leaves the field empty
    s2 = await run_synthesis(
        inp, tmp_path / "out2", method="random", agents=fake_agents(), reward=hash_reward,
        context={"budget": 3}, concurrency=2, progress=False,
    )  # fmt: skip
    assert s2.reward_counters is None


def test_merge_counters_sums_key_by_key() -> None:
    assert merge_counters(None, None) is None
    assert merge_counters({"a": 1}, None, {"a": 2, "b": 5}) == {"a": 3, "b": 5}


async def test_prompt_loop_gives_the_sink_one_outcome_per_prompt() -> None:
    """The loop shared by the local runner and the Ray workers, into a StreamSink: a
    record for each prompt that worked, a failed entry (id, line, error) for each that
    raised, nothing twice, nothing written anywhere."""

    class HalfBroken:
        async def ainvoke(
            self, inp: dict[str, Any], context: Any = None, config: Any = None
        ) -> Any:
            if inp["id"].endswith(("1", "3")):
                raise RuntimeError(f"no answer for {inp['id']}")
            usage = {"input_tokens": 1, "output_tokens": 1, "total_tokens": 2}
            sample = {"id": "s0", "agent": "a", "text": "ok", "reward": 0.5, "usage": usage}
            return {"samples": [sample], "best": sample}

    items = parse_jsonl(
        "".join(json.dumps({"id": f"p{i}", "prompt": "q"}) + "\n" for i in range(6))
    )
    cfg = RunnerConfig(
        method="toa", agents=fake_agents(), reward=hash_reward, concurrency=3, digest="d"
    )
    sink = StreamSink()
    await run_prompts(items.items, HalfBroken(), cfg, sink)
    sink.close()
    got = [entry async for batch in sink.batches() for entry in batch]
    records = {p["id"]: p for kind, p in got if kind == "record"}
    failed = {p["id"]: p for kind, p in got if kind == "failed"}
    assert len(got) == 6
    assert set(records) == {"p0", "p2", "p4", "p5"}
    assert records["p0"]["config_digest"] == "d" and records["p0"]["best"]["reward"] == 0.5
    assert failed == {
        "p1": {"id": "p1", "line": 2, "error": "RuntimeError: no answer for p1"},
        "p3": {"id": "p3", "line": 4, "error": "RuntimeError: no answer for p3"},
    }


def test_runner_config_checks_and_derives() -> None:
    with pytest.raises(ValueError, match="concurrency must be >= 1"):
        RunnerConfig(method="toa", agents=fake_agents(), reward=hash_reward, concurrency=0)
    cfg = RunnerConfig(
        method="toa", agents=fake_agents(), reward=hash_reward, field_map=["reference=en"]
    )
    assert cfg.fields == {"reference": "en"}
    assert cfg.digest == config_digest(
        method="toa", context={}, agents=fake_agents(), reward=hash_reward
    )
    with pytest.raises(ValueError, match="unknown method 'nope'"):
        RunnerConfig(method="nope", agents={}, reward=hash_reward).check_method()


async def test_ray_worker_streams_every_prompt_without_ray(tmp_path: Path) -> None:
    """SynthesisWorker is a plain class (Ray runs it as an actor): one shard streams one
    entry per item, and info() carries its own reward's counters."""
    from toa_graph.distributed import SynthesisWorker

    items = parse_jsonl(
        "".join(json.dumps({"id": f"p{i}", "prompt": f"Q{i}?"}) + "\n" for i in range(5))
    ).items
    reward = CountingHashReward()
    cfg = RunnerConfig(
        method="random", agents=fake_agents(), reward=reward, context={"budget": 2}, concurrency=2
    )
    worker = SynthesisWorker(3, cfg)
    got = [entry async for batch in worker.run_shard(0, items) for entry in batch]
    assert sorted(p["id"] for kind, p in got if kind == "record") == [f"p{i}" for i in range(5)]
    info = worker.info()
    assert (info["slot"], info["shards"], info["prompts"]) == (3, 1, 5)
    assert info["reward_counters"]["responses"] == 10
    assert list(tmp_path.iterdir()) == []  # a worker writes nothing


async def test_each_prompt_run_carries_its_trace_name_tags_and_metadata(tmp_path: Path) -> None:
    """What LangSmith would file each trace under, captured by an in-process run collector
    (no network): one root run per prompt, found by its prompt id."""
    from langchain_core.tracers.context import collect_runs

    inp = write_prompts(tmp_path / "in.jsonl", 3)
    with collect_runs() as runs:
        s = await run_synthesis(
            inp, tmp_path / "out", method="moa", agents=fake_agents(), reward=hash_reward,
            context={"budget": 6}, concurrency=3, progress=False,
        )  # fmt: skip
    assert s.done == 3
    roots = {r.extra["metadata"]["prompt_id"]: r for r in runs.traced_runs}
    assert sorted(roots) == ["p0", "p1", "p2"]
    for pid, run in roots.items():
        assert run.name == f"moa:{pid}" and run.parent_run_id is None
        assert {"toa_graph", "method:moa"} <= set(run.tags or [])
        meta = run.extra["metadata"]
        assert meta["config_digest"] == s.config_digest and meta["method"] == "moa"
        assert meta["input_line"] == int(pid[1:]) + 1
