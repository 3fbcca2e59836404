"""The output directory of a run: its lock, resume state, side files and summary.

Layout::

    records.jsonl   one JSON line per finished prompt (appended + flushed when it completes;
                    records.jsonl.zst / .gz with ``compress``, flushed block by block)
    errors.jsonl    input lines that could not be used: line number + reason (rewritten per run)
    failed.jsonl    prompts whose run raised or produced no usable sample (retried on resume)
    summary.json    the last run's summary
    config.json     what determines the data (the data digest's payload; see digest.py)
    generations.sqlite  generations of prompts not yet recorded (see genstore.py)

:class:`RunDirectory` is the :class:`~toa_graph.synthesis.sink.RecordSink` that writes: the
single-process runner hands it each finished prompt, the Ray driver each record a worker
streams back. It is the only writer of ``records.jsonl`` and drops a second record for
an id it already holds.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toa_graph.errors import RunError, UserError
from toa_graph.synthesis.digest import check_output_digest
from toa_graph.synthesis.genstore import STORE_FILE, GenerationStore
from toa_graph.synthesis.inputs import BadLine, DatasetInput, PromptItem, walk_input
from toa_graph.synthesis.recordio import Compression, records_file
from toa_graph.synthesis.records import DoneIds, RecordWriter, ScanResult, repair_records
from toa_graph.synthesis.summary import (
    ProgressFactory,
    PromptResult,
    RunningMean,
    SynthesisSummary,
    _tqdm,
)

logger = logging.getLogger(__name__)

ERRORS_FILE = "errors.jsonl"
FAILED_FILE = "failed.jsonl"
SUMMARY_FILE = "summary.json"
LOCK_FILE = ".toa-graph.lock"

InputSource = str | os.PathLike[str] | DatasetInput | Sequence[PromptItem]
"""A prompt file (JSONL / JSON array / Parquet), a dataset (``hf:`` id or directory), or
already-parsed items."""


class OutputBusyError(UserError, RuntimeError):
    """Another run is writing to the same output directory."""


class DiskFullError(RunError):
    """The disk filled while writing records: those written are intact; free space, resume."""


@dataclass(frozen=True)
class DataConfig:
    """The data digest of a run and what it hashes (see :mod:`toa_graph.synthesis.digest`)."""

    digest: str
    payload: Mapping[str, Any]
    force_mixed: bool = False
    """Append to an output made under another data digest (else it is refused)."""
    store: bool = False
    """Keep a generation store in the directory (the single-process runner)."""


class OutputLock:
    """An exclusive, non-blocking ``flock`` on ``output_dir/.toa-graph.lock``: two runs
    appending to one records.jsonl would interleave and duplicate records. The kernel drops
    the lock when its process dies, so a killed run never leaves a stale one."""

    def __init__(self, out_dir: Path) -> None:
        self.path = out_dir / LOCK_FILE
        self._fh: Any = None

    def acquire(self) -> OutputLock:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX: no lock
            return self
        fh = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 - held until release()
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "unknown"
            fh.close()
            raise OutputBusyError(
                f"output directory {self.path.parent} is in use by another toa-graph run "
                f"({holder}); wait for it to finish or choose another --output"
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()}")
        fh.flush()
        self._fh = fh
        return self

    def release(self) -> None:
        fh, self._fh = self._fh, None
        if fh is not None:
            with contextlib.suppress(OSError):
                fh.close()  # closing the file drops the flock


class RunDirectory:
    """An output directory opened for one run (both runners): locked, a torn last record
    cut, the resume state noted in ``summary``, the side files open, and the prompts left
    to do counted (``todo``). Use :meth:`open`; :meth:`close` writes summary.json and
    releases the lock."""

    def __init__(
        self,
        out_dir: Path,
        summary: SynthesisSummary,
        lock: OutputLock,
        *,
        field_map: Mapping[str, str],
        limit: int | None,
        shard: tuple[int, int] | None,
        collect_rows: bool,
        compress: Compression | None = None,
        data: DataConfig | None = None,
    ) -> None:
        self.out_dir = out_dir
        self.data = data
        self.store: GenerationStore | None = None
        self.records_path = records_file(out_dir, compress)
        self.summary = summary
        self.lock = lock
        self.field_map = field_map
        self.limit = limit
        self.shard = shard
        self.collect_rows = collect_rows
        self.scan = ScanResult()
        self.done_ids = DoneIds()
        self.in_path: Path | DatasetInput | None = None
        self.items: Sequence[PromptItem] | None = None
        self._todo: int | None = None
        self.duplicates = 0
        """Records handed in for an id already written (dropped, never written twice)."""
        self.run_rewards = RunningMean()
        self.all_rewards = RunningMean()
        self.bar: Any = None
        self.postfix: Callable[[], dict[str, Any]] | None = None
        """Extra progress-bar fields (the Ray driver adds worker deaths)."""
        self.last_result_at = 0.0
        self.start = time.perf_counter()
        self._writer: RecordWriter | None = None
        self._errors_f: Any = None
        self._failed_f: Any = None

    @classmethod
    def open(
        cls,
        input: InputSource,
        output_dir: str | os.PathLike[str],
        summary: SynthesisSummary,
        *,
        field_map: Mapping[str, str],
        limit: int | None,
        shard: tuple[int, int] | None = None,
        fsync: bool = False,
        collect_rows: bool = True,
        compress: Compression | None = None,
        data: DataConfig | None = None,
    ) -> RunDirectory:
        """Create and lock ``output_dir`` (:class:`OutputBusyError` when another run holds
        it), read the resume state and open the side files. ``compress`` (``"zst"`` or
        ``"gz"``) names a new directory's records file; one already there is kept.
        ``data`` (the run's data digest) refuses a directory of another data digest
        (:class:`~toa_graph.synthesis.digest.MixedDigestError`) and opens the generation
        store."""
        out_dir = Path(output_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        lock = OutputLock(out_dir).acquire()
        run = cls(
            out_dir, summary, lock, field_map=field_map, limit=limit, shard=shard,
            collect_rows=collect_rows, compress=compress, data=data,
        )  # fmt: skip
        try:
            run._resume(input)
            run._errors_f = (out_dir / ERRORS_FILE).open("w", encoding="utf-8")
            run._failed_f = (out_dir / FAILED_FILE).open("w", encoding="utf-8")
            run._writer = RecordWriter(run.records_path, fsync=fsync)
        except BaseException:
            run._close_files()
            lock.release()
            raise
        run.start = time.perf_counter()
        return run

    def _resume(self, input: InputSource) -> None:
        self.scan = scan = repair_records(self.records_path)
        self.summary.torn_bytes_repaired = scan.torn_bytes
        self.summary.resume_scan_s = round(scan.seconds, 3)
        if scan.records:
            logger.info(
                "resume over %d records (%.1f MB) took %.2f s", scan.records, scan.size / 1e6,
                scan.seconds,
            )  # fmt: skip
        self._check_digest(scan)
        if isinstance(input, str | os.PathLike | DatasetInput):
            from toa_graph.synthesis.dataset_input import resolve_input

            self.in_path = resolve_input(input)  # FileNotFoundError when a local path is missing
        else:
            self.items = list(input)
        self.done_ids = scan.ids
        self.all_rewards = scan.best_rewards
        if self.data is not None and self.data.store:
            self.store = GenerationStore(self.out_dir / STORE_FILE, self.data.digest)
            self.store.prune(self.done_ids)

    def _check_digest(self, scan: ScanResult) -> None:
        """One data digest per output (see :func:`check_output_digest`); without a data
        config (old callers), the config digest's warning as before."""
        if self.data is not None:
            self.summary.digest_mismatch = check_output_digest(
                self.out_dir, self.data.digest, self.data.payload, scan.data_digests,
                legacy_records=scan.without_data_digest, force_mixed=self.data.force_mixed,
            )  # fmt: skip
            return
        digest = self.summary.config_digest
        self.summary.digest_mismatch = bool(scan.digests - {digest})
        if self.summary.digest_mismatch:
            logger.warning(
                "%s already holds records made with another config digest (%s); this run uses %s",
                self.records_path, ", ".join(sorted(scan.digests - {digest})), digest,
            )  # fmt: skip

    @property
    def todo(self) -> int:
        """How many prompts are left: a whole extra pass over the input (the Ray driver
        sizes its shards with it); the single-process runner does not ask."""
        if self._todo is None:
            self._todo = sum(kind == "todo" for kind, _ in self._walk())
        return self._todo

    def _walk(self) -> Iterator[tuple[str, PromptItem | BadLine]]:
        args = (self.field_map, self.done_ids, self.limit, self.shard)
        if isinstance(self.in_path, DatasetInput):
            from toa_graph.synthesis.dataset_input import iter_dataset

            stream = iter_dataset(self.in_path, self.field_map)  # already de-duplicated
            return walk_input(None, stream, *args, dedupe=False)
        return walk_input(self.in_path, self.items, *args)

    def _input_rows(self) -> int | None:
        """A cheap upper bound on the prompts left, for the progress bar: the rows of an
        in-memory input, or a local JSONL file's lines (a byte count, no parsing), less
        those already done; ``None`` (an indeterminate bar) for other inputs or a shard."""
        if self.shard is not None and self.shard[1] > 1:
            return None
        if self.items is not None:
            n = len(self.items)
        elif isinstance(self.in_path, Path) and self.in_path.suffix == ".jsonl":
            n = _count_lines(self.in_path)
        else:
            return None
        if self.limit is not None:
            n = min(n, self.limit)
        return max(0, n - len(self.done_ids))

    def todo_items(self) -> Iterator[PromptItem]:
        """The prompts still to do, in input order: bad lines are written to errors.jsonl
        and counted, only the first ``limit`` usable rows are read, prompts of other shards
        are passed over, finished ids are counted as skipped."""
        for kind, it in self._walk():
            if isinstance(it, BadLine):
                self.summary.bad_lines += 1
                self._errors_f.write(json.dumps(it.to_json(), ensure_ascii=False) + "\n")
                self._errors_f.flush()
            elif kind != "other-shard":
                self.summary.inputs += 1
                if kind == "done":
                    self.summary.skipped += 1
                else:
                    yield it

    def show_progress(self, progress: bool | ProgressFactory, desc: str) -> None:
        """A tqdm bar over the prompts to do (or one from the factory ``(total=, desc=)``)."""
        if progress:
            factory = progress if callable(progress) else _tqdm
            self.bar = factory(
                total=self._todo if self._todo is not None else self._input_rows(), desc=desc
            )

    # ------------------------------------------------------------ the RecordSink

    def record(self, record: dict[str, Any]) -> bool:
        """Append a finished prompt's record unless its id is already written; whether it was."""
        rid = str(record["id"])
        if rid in self.done_ids:
            self.duplicates += 1
            logger.warning("record for %s arrived twice; the second copy is dropped", rid)
            return False
        assert self._writer is not None
        try:
            self._writer.append(record)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise DiskFullError(
                    f"the disk holding {self.records_path} is full ({exc.strerror}): the "
                    f"{len(self.done_ids)} records written are intact (a partly written last "
                    "one is cut on resume); free some space and run the same command again "
                    "to resume"
                ) from exc
            raise
        self.done_ids.add(rid)
        if self.store is not None:
            self.store.forget(rid)
        reward = self.summary.add_record(record, row=self.collect_rows)
        if reward is not None:
            self.run_rewards.add(reward)
            self.all_rewards.add(reward)
        self._tick()
        return True

    def failed(self, entry: dict[str, Any], wall_s: float = 0.0) -> None:
        """Note a prompt that failed (``id``, ``line``, ``error``) in failed.jsonl."""
        self.summary.failed += 1
        self._failed_f.write(json.dumps(entry, ensure_ascii=False) + "\n")
        self._failed_f.flush()
        if self.collect_rows:
            self.summary.rows.append(
                PromptResult(
                    str(entry["id"]), None, None, 0, 0, round(wall_s, 3), str(entry.get("error"))
                )
            )
        self._tick()

    def _tick(self) -> None:
        self.last_result_at = time.perf_counter()
        if self.bar is None:
            return
        self.bar.update(1)
        if (mean := self.run_rewards.value) is not None:
            self.bar.set_postfix(
                best=f"{mean:.4f}",
                failed=self.summary.failed,
                **(self.postfix() if self.postfix else {}),
                refresh=False,
            )

    # ------------------------------------------------------------ the end

    def close(self) -> None:
        """Close the record writer, side files and progress bar, fill in the summary's
        totals, write summary.json and release the lock."""
        try:
            writer = self._writer
            self._close_files()
            if self.bar is not None:
                self.bar.close()
            s = self.summary
            s.wall_s = round(time.perf_counter() - self.start, 3)
            s.bytes_written = writer.bytes_written if writer is not None else 0
            s.mean_best_reward = self.run_rewards.value
            s.mean_best_reward_all = self.all_rewards.value
            try:
                (self.out_dir / SUMMARY_FILE).write_text(
                    json.dumps(s.to_json(), indent=2) + "\n", encoding="utf-8"
                )
            except OSError as exc:  # a full disk: the records are what matters
                logger.warning("could not write %s: %s", SUMMARY_FILE, exc)
        finally:
            self.lock.release()

    def _close_files(self) -> None:
        if self.store is not None:
            self.store.close()
        if self._writer is not None:
            with contextlib.suppress(OSError):  # a full disk: the frame's end is cut on resume
                self._writer.close()
        for f in (self._errors_f, self._failed_f):
            if f is not None:
                f.close()


def _count_lines(path: Path) -> int:
    n = 0
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            n += chunk.count(b"\n")
    return n
