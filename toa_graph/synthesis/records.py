"""Output records: the record format, the config digest, the append-only writer, and the
scan that finds finished ids and a torn tail (resume).

A prompt's record is written in one ``write`` call only once the prompt is complete;
resume reads the ids already in ``records.jsonl`` (or ``records.jsonl.zst`` / ``.gz``, see
:mod:`toa_graph.synthesis.recordio`), cuts off a torn last line left by a killed process,
and never writes an id twice.

A record holds each input value once: ``id``, ``prompt`` and ``reference`` at the top
level, and under ``input`` only the input row's other fields (omitted when there are none).
Records written before this layout also repeat the whole row under ``input``; every reader
uses the top-level fields, so both read the same.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toa_graph.cost import ledger
from toa_graph.sampling import total_usage
from toa_graph.state import failure_stage
from toa_graph.synthesis.digest import describe
from toa_graph.synthesis.idtable import IdTable
from toa_graph.synthesis.inputs import PromptItem, content_digest
from toa_graph.synthesis.recordio import RECORDS_FILE as RECORDS_FILE
from toa_graph.synthesis.recordio import (
    LineReader,
    RecordFile,
    compression_of,
    records_file,
)
from toa_graph.synthesis.summary import RunningMean

logger = logging.getLogger(__name__)


def config_digest(
    *,
    method: str,
    context: Mapping[str, Any] | None = None,
    agents: Any = None,
    reward: Any = None,
    options: Mapping[str, Any] | None = None,
) -> str:
    """A short hash of what determines a record: method, context, agents and reward config
    (and the method's factory options, when any are set).

    Pydantic configs are hashed by content; other objects (fake models in tests, callables)
    by their name / type only.
    """

    payload = {
        "method": method,
        "context": dict(context or {}),
        "agents": describe(agents),
        "reward": describe(reward),
    }
    if options:  # only when set, so digests of runs without options stay as they were
        payload["options"] = dict(options)
    return content_digest(payload)[:16]


def build_record(
    item: PromptItem,
    out: Mapping[str, Any],
    *,
    method: str,
    digest: str,
    context: Mapping[str, Any],
    wall_s: float,
    data_digest: str | None = None,
) -> dict[str, Any]:
    """The JSON record for one finished prompt."""
    samples = list(out.get("samples") or [])
    best = out.get("best")
    errored = [s for s in samples if failure_stage(s) is not None]
    usage = total_usage(samples)
    spend = ledger(samples)
    budget = context.get("budget")
    ok = len(samples) - len(errored)
    record: dict[str, Any] = {
        "id": item.id,
        "prompt": item.prompt,
        "reference": item.reference,
        "method": method,
        "context": dict(context),
        "config_digest": digest,
        **({"data_digest": data_digest} if data_digest else {}),
        "samples": samples,
        "best": best,
        "totals": {
            "generations": len(samples),
            "failed_generations": len(errored),
            "tokens": usage,
            "cost": spend["cost"],
            "by_agent": spend["by_agent"],
            "wall_s": round(wall_s, 4),
        },
        "shortfall": max(0, int(budget) - ok) if isinstance(budget, int) else None,
        "errors": sorted({str(s["error"]) for s in errored})[:10],
    }
    extra = item.extra_fields()
    if extra:
        record["input"] = extra
    if out.get("tree") is not None:
        record["tree"] = out["tree"]
    # Method-specific extras (e.g. debate transcripts) pass through untouched.
    for k, v in out.items():
        if k not in ("samples", "best", "tree") and k not in record:
            record[k] = v
    return record


def encode_record(record: Mapping[str, Any]) -> bytes:
    """One line: compact JSON (NaN/inf are not JSON; they become null) + newline."""
    text = json.dumps(
        record, ensure_ascii=False, separators=(",", ":"), default=str, allow_nan=True
    )
    if "NaN" in text or "Infinity" in text:
        text = json.dumps(_finite(record), ensure_ascii=False, separators=(",", ":"), default=str)
    return (text + "\n").encode("utf-8")


def _finite(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, Mapping):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_finite(v) for v in x]
    return x


class RecordWriter:
    """Appends whole records to a records file (plain, or compressed by its ``.zst`` /
    ``.gz`` suffix): one ``write`` per record, flushed at once (and fsynced when
    ``fsync=True``). Counts the bytes that reached the file."""

    def __init__(self, path: str | os.PathLike[str], *, fsync: bool = False) -> None:
        self.path = Path(path)
        self.fsync = fsync
        self._file = RecordFile(self.path, fsync=fsync)

    @property
    def bytes_written(self) -> int:
        return self._file.bytes_written

    def append(self, record: Mapping[str, Any]) -> int:
        return self._file.write(encode_record(record))

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class DoneIds(IdTable):
    """The finished ids of a records file: each id's 8-byte digest in sorted runs
    (:class:`~toa_graph.synthesis.idtable.IdTable`), 8 bytes a record whatever its size,
    for the ids read by the resume scan and those written during the run alike."""


@dataclass
class ScanResult:
    """What is already in a records file (ids kept as 8-byte digests: :class:`DoneIds`)."""

    ids: DoneIds = field(default_factory=DoneIds)
    records: int = 0
    good_end: int = 0
    """Byte offset just past the last intact line; anything after it is a torn tail."""
    size: int = 0
    bad_lines: list[int] = field(default_factory=list)
    """Unparseable complete lines in the middle of the file (kept, reported)."""
    digests: set[str] = field(default_factory=set)
    data_digests: set[str] = field(default_factory=set)
    without_data_digest: int = 0
    """Records written before the data digest (only ``config_digest``)."""
    best_rewards: RunningMean = field(default_factory=RunningMean)
    """The records' best rewards (their mean and count)."""
    seconds: float = 0.0

    @property
    def torn_bytes(self) -> int:
        return self.size - self.good_end


def scan_records_bytes(data: bytes) -> ScanResult:
    """Find finished ids and where the intact part of a records file ends (pure).

    A record is intact when its line ends with a newline and parses as a JSON object with
    an ``id``. Bytes after the last newline, and unparseable lines at the very end, are a
    torn tail (a killed writer); unparseable lines followed by good ones are reported.
    """
    return scan_record_lines(data.splitlines(keepends=True))


def scan_record_lines(lines: Iterable[bytes]) -> ScanResult:
    """:func:`scan_records_bytes` over a stream of lines (each with its newline): one line
    in memory at a time."""
    t0 = time.perf_counter()
    res = ScanResult()
    pos = 0
    lineno = 0
    pending_bad: list[int] = []
    for raw in lines:
        res.size += len(raw)
        if not raw.endswith(b"\n"):
            break  # no newline: torn tail
        lineno += 1
        pos += len(raw)
        if not raw[:-1].strip():
            if not pending_bad:
                res.good_end = pos
            continue
        try:
            rec = json.loads(raw)
            rid = rec["id"] if isinstance(rec, dict) else None
        except (ValueError, KeyError, RecursionError):
            rid = None
        if rid is None:
            pending_bad.append(lineno)
            continue
        res.bad_lines.extend(pending_bad)
        pending_bad = []
        _note_record(res, str(rid), rec)
        res.good_end = pos
    res.seconds = time.perf_counter() - t0
    return res


def _note_record(res: ScanResult, rid: str, rec: Mapping[str, Any]) -> None:
    res.records += 1
    res.ids.add(rid)
    if rec.get("config_digest"):
        res.digests.add(str(rec["config_digest"]))
    if rec.get("data_digest"):
        res.data_digests.add(str(rec["data_digest"]))
    else:
        res.without_data_digest += 1
    best = rec.get("best")
    if isinstance(best, dict) and isinstance(best.get("reward"), int | float):
        res.best_rewards.add(float(best["reward"]))


def repair_records(path: str | os.PathLike[str]) -> ScanResult:
    """Scan a records file and cut a torn tail (a no-op on a clean file).

    A plain file is truncated in place. A compressed file whose last frame a killed writer
    left unfinished is rewritten (its intact records, into a finished frame) before the
    next run appends a frame of its own. A damaged compressed frame followed by others is
    skipped (the records before the damage and in the frames after it are read), reported,
    and kept as it is; were the file rewritten for a torn tail too, the damaged original
    is kept beside it (``<name>.damaged``).
    """
    p = Path(path)
    if not p.exists():
        return ScanResult()
    reader = LineReader(p)
    res = scan_record_lines(reader)
    if res.torn_bytes:
        logger.warning(
            "%s: cutting a torn tail of %d bytes (left by a killed run)", p, res.torn_bytes
        )
    if reader.damaged:
        logger.warning(
            "%s: %d damaged compressed frame(s) skipped (bytes %s): the records they hold "
            "past the damage cannot be read, and those prompts run again", p,
            len(reader.damaged), ", ".join(f"{a}-{b}" for a, b in reader.damaged[:20]),
        )  # fmt: skip
    if compression_of(p) is None:
        if res.torn_bytes:
            with p.open("r+b") as f:
                f.truncate(res.good_end)
                f.flush()
                os.fsync(f.fileno())
    elif res.torn_bytes or not reader.clean:
        _rewrite_compressed(p, res.good_end, keep_original=bool(reader.damaged))
    if res.bad_lines:
        logger.warning(
            "%s: %d unreadable record line(s) kept in place and skipped (line %s); the records "
            "around them are read as usual", p, len(res.bad_lines),
            ", ".join(map(str, res.bad_lines[:20])) + (" ..." if len(res.bad_lines) > 20 else ""),
        )  # fmt: skip
    logger.info(
        "resume: scanned %d records (%.1f MB) of %s in %.2f s; done set %d bytes",
        res.records, res.size / 1e6, p, res.seconds, res.ids.nbytes(),
    )  # fmt: skip
    return res


def _rewrite_compressed(path: Path, good_end: int, *, keep_original: bool = False) -> None:
    """Rewrite a compressed records file with its first ``good_end`` decompressed bytes
    (``keep_original``: the file as it was is kept as ``<name>.damaged``)."""
    logger.warning("%s: rewriting the records a killed run left in an unfinished frame", path)
    tmp = path.with_name(f".repair-{path.name}")  # same suffix: same compression
    tmp.unlink(missing_ok=True)
    out = RecordFile(tmp)
    left = good_end
    try:
        for line in LineReader(path):
            if left <= 0:
                break
            out.write(line[:left])
            left -= len(line)
    finally:
        out.close()
    with tmp.open("rb") as f:
        os.fsync(f.fileno())
    if keep_original:
        kept = path.with_name(path.name + ".damaged")
        os.replace(path, kept)
        logger.warning("%s: the damaged file as it was is kept as %s", path, kept.name)
    os.replace(tmp, path)


def read_records(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """Yield intact records from a records file (plain or compressed), streamed; a
    directory means its records file. A torn tail is skipped."""
    p = Path(path)
    if p.is_dir():
        p = records_file(p)
    for raw in LineReader(p):
        if not raw.endswith(b"\n"):
            break
        if not raw.strip():
            continue
        try:
            rec = json.loads(raw)
        except ValueError:
            continue
        if isinstance(rec, dict) and "id" in rec:
            yield rec
