"""Run a sampling method over a prompt file: bounded concurrency, append-only JSONL, resume.

The runner behind ``toa-graph synthesize`` (and ``compare``), usable from Python::

    from toa_graph.synthesis import run_synthesis
    summary = await run_synthesis("prompts.jsonl", "out/", method="toa",
                                  agents=cfg.agents, reward=reward, context={"budget": 16})

Output directory layout::

    records.jsonl   one JSON line per finished prompt (appended + flushed when it completes)
    errors.jsonl    input lines that could not be used: line number + reason (rewritten per run)
    failed.jsonl    prompts whose run raised or produced no usable sample (retried on resume)
    summary.json    the last run's summary

Durability model: a prompt's record is written in one ``write`` call only once the prompt
is complete; nothing else is persisted, so the graph is compiled **without a
checkpointer** (per-step checkpoints re-serialise the growing ``samples`` list and cost
bytes quadratic in the budget, for no benefit: a killed prompt is simply re-run). Resume
reads the ids already in ``records.jsonl``, cuts off a torn last line left by a killed
process, and never writes an id twice.

The input loader is a pure function of the input bytes (:func:`parse_jsonl`), so it can be
property-tested; :func:`iter_input` streams the same parsing over a file (JSONL, a JSON
array, or Parquet) without holding the whole dataset in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from toa_graph.errors import UserError
from toa_graph.sampling import total_usage, validate_prompt
from toa_graph.state import Prompt

logger = logging.getLogger(__name__)

__all__ = [
    "ID_FIELDS",
    "PROMPT_FIELDS",
    "REFERENCE_FIELDS",
    "BadLine",
    "InputError",
    "LoadResult",
    "OutputBusyError",
    "PromptItem",
    "RecordWriter",
    "ScanResult",
    "SynthesisSummary",
    "build_record",
    "config_digest",
    "in_shard",
    "iter_input",
    "normalize_row",
    "parse_field_map",
    "parse_jsonl",
    "parse_rows",
    "parse_shard",
    "read_records",
    "repair_records",
    "run_synthesis",
    "scan_records_bytes",
]

RECORDS_FILE = "records.jsonl"
ERRORS_FILE = "errors.jsonl"
FAILED_FILE = "failed.jsonl"
SUMMARY_FILE = "summary.json"
LOCK_FILE = ".toa-graph.lock"

PROMPT_FIELDS = ("prompt", "instruction", "question", "messages")
"""Input fields tried, in order, for the prompt (a string, or chat messages)."""
REFERENCE_FIELDS = ("reference", "references", "gold_response", "answer", "output")
"""Input fields tried, in order, for the reference (gold answer / reference translation)."""
ID_FIELDS = ("id", "prompt_id")
"""Input fields tried, in order, for the prompt id. Without one, a content hash is used."""
MAPPABLE = ("prompt", "reference", "id")


# ================================================================ input loading


class InputError(UserError):
    """One input row cannot be used (the message is the reason written to errors.jsonl)."""


@dataclass(frozen=True)
class PromptItem:
    """One usable input row."""

    id: str
    prompt: Prompt
    reference: str | list[str] | None
    fields: dict[str, Any]
    """The input row as read (written back into the record under ``input``)."""
    line: int
    """1-based line (JSONL) or row (Parquet / JSON array) number."""


@dataclass(frozen=True)
class BadLine:
    """An input row that was skipped, with why."""

    line: int
    reason: str
    text: str = ""
    """The start of the offending line, for the errors file."""

    def to_json(self) -> dict[str, Any]:
        return {"line": self.line, "reason": self.reason, "text": self.text}


@dataclass
class LoadResult:
    items: list[PromptItem] = field(default_factory=list)
    errors: list[BadLine] = field(default_factory=list)


def parse_field_map(pairs: Iterable[str] | Mapping[str, str] | None) -> dict[str, str]:
    """``["prompt=text", "reference=en"]`` -> ``{"prompt": "text", "reference": "en"}``.

    Keys are the runner's names (``prompt``, ``reference``, ``id``); values are the input's
    field names.
    """
    if pairs is None:
        return {}
    items = pairs.items() if isinstance(pairs, Mapping) else (_split_pair(p) for p in pairs)
    out: dict[str, str] = {}
    for k, v in items:
        k, v = k.strip(), v.strip()
        if k not in MAPPABLE:
            raise ValueError(f"--field-map: unknown key {k!r}; use one of {', '.join(MAPPABLE)}")
        if not v:
            raise ValueError(f"--field-map: empty field name for {k!r}")
        out[k] = v
    return out


def _split_pair(pair: str) -> tuple[str, str]:
    if "=" not in pair:
        raise ValueError(f"--field-map: expected KEY=FIELD (e.g. reference=en), got {pair!r}")
    k, v = pair.split("=", 1)
    return k, v


def _pick(
    row: Mapping[str, Any], key: str, aliases: Sequence[str], fmap: Mapping[str, str]
) -> tuple[str | None, Any]:
    if key in fmap:
        name = fmap[key]
        if name not in row:
            raise InputError(f"missing field {name!r} (from --field-map {key}={name})")
        return name, row[name]
    for name in aliases:
        if name in row and row[name] is not None:
            return name, row[name]
    return None, None


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(c.get("text", "") for c in content if isinstance(c, dict))
    return ""


def normalize_row(row: Any, *, line: int, field_map: Mapping[str, str] | None = None) -> PromptItem:
    """Turn one input row into a :class:`PromptItem`, or raise :class:`InputError` saying why.

    Prompt: the first of ``prompt``, ``instruction``, ``question``, ``messages`` (Alpaca's
    non-empty ``input`` is appended to ``instruction``). Chat messages ending in assistant
    turns are cut back to the last user turn; the cut answer becomes the reference when
    none is given. Reference: the first of ``reference``, ``references``,
    ``gold_response``, ``answer``, ``output``. Id: ``id`` or ``prompt_id``, else a hash of
    the prompt and reference (stable across runs, so resume works without ids).
    """
    fmap = dict(field_map or {})
    if not isinstance(row, dict):
        raise InputError(f"expected a JSON object, got {type(row).__name__}")

    pname, prompt = _pick(row, "prompt", PROMPT_FIELDS, fmap)
    if pname is None:
        raise InputError(
            f"missing prompt: none of the fields {', '.join(PROMPT_FIELDS)} (use --field-map prompt=FIELD)"
        )
    reference_from_chat: str | None = None
    if isinstance(prompt, str):
        if pname == "instruction" and isinstance(row.get("input"), str) and row["input"].strip():
            prompt = f"{prompt}\n\n{row['input']}"
        if not prompt.strip():
            raise InputError(f"empty prompt (field {pname!r})")
    elif isinstance(prompt, list):
        msgs = [dict(m) if isinstance(m, Mapping) else m for m in prompt]
        while msgs and isinstance(msgs[-1], dict) and msgs[-1].get("role") == "assistant":
            if reference_from_chat is None:
                reference_from_chat = _content_text(msgs[-1].get("content"))
            msgs.pop()
        if not msgs:
            raise InputError(f"empty prompt (field {pname!r} has no user message)")
        try:
            validate_prompt(msgs)
        except ValueError as exc:
            raise InputError(f"bad chat messages in field {pname!r}: {exc}") from None
        if not any(
            _content_text(m.get("content")).strip() for m in msgs if m.get("role") == "user"
        ):
            raise InputError(f"empty prompt (field {pname!r}: user messages are empty)")
        prompt = msgs
    else:
        raise InputError(
            f"prompt field {pname!r} must be a string or chat messages, got {type(prompt).__name__}"
        )

    rname, ref = _pick(row, "reference", REFERENCE_FIELDS, fmap)
    reference: str | list[str] | None
    if ref is None:
        reference = reference_from_chat or None
    elif isinstance(ref, str):
        reference = ref
    elif isinstance(ref, bool):
        raise InputError(
            f"reference field {rname!r} must be a string or a list of strings, got bool"
        )
    elif isinstance(ref, int | float):
        reference = str(ref)
    elif isinstance(ref, list) and all(isinstance(r, str) for r in ref):
        reference = list(ref)
    else:
        raise InputError(
            f"reference field {rname!r} must be a string or a list of strings, got {type(ref).__name__}"
        )

    iname, rid = _pick(row, "id", ID_FIELDS, fmap)
    if rid is None:
        rid = "h" + _digest({"prompt": prompt, "reference": reference})[:16]
    elif isinstance(rid, bool) or not isinstance(rid, str | int):
        raise InputError(
            f"id field {iname!r} must be a string or an integer, got {type(rid).__name__}"
        )
    else:
        rid = str(rid)
        if not rid.strip():
            raise InputError(f"empty id (field {iname!r})")
    return PromptItem(id=rid, prompt=prompt, reference=reference, fields=row, line=line)


def _snippet(text: str | bytes, n: int = 200) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    return text if len(text) <= n else text[:n] + "..."


def _iter_jsonl_lines(
    lines: Iterable[bytes | str], field_map: Mapping[str, str] | None
) -> Iterator[PromptItem | BadLine]:
    for lineno, raw in enumerate(lines, start=1):
        if isinstance(raw, bytes):
            raw = raw.rstrip(b"\r\n")
            if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            if not raw.strip():
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield BadLine(lineno, f"invalid UTF-8 at byte {exc.start}", _snippet(raw))
                continue
        else:
            text = raw.rstrip("\r\n").lstrip("\ufeff") if lineno == 1 else raw.rstrip("\r\n")
            if not text.strip():
                continue
        try:
            row = json.loads(text)
        except json.JSONDecodeError as exc:
            yield BadLine(lineno, f"invalid JSON: {exc.msg} (column {exc.colno})", _snippet(text))
            continue
        except RecursionError:
            yield BadLine(lineno, "invalid JSON: nested too deeply", _snippet(text))
            continue
        try:
            yield normalize_row(row, line=lineno, field_map=field_map)
        except InputError as exc:
            yield BadLine(lineno, str(exc), _snippet(text))


def _dedupe(stream: Iterable[PromptItem | BadLine]) -> Iterator[PromptItem | BadLine]:
    first_seen: dict[str, int] = {}
    for it in stream:
        if isinstance(it, PromptItem):
            if it.id in first_seen:
                yield BadLine(
                    it.line, f"duplicate id {it.id!r} (first seen on line {first_seen[it.id]})", ""
                )
                continue
            first_seen[it.id] = it.line
        yield it


def _collect(stream: Iterable[PromptItem | BadLine]) -> LoadResult:
    out = LoadResult()
    for it in stream:
        (out.items if isinstance(it, PromptItem) else out.errors).append(it)  # type: ignore[arg-type]
    return out


def parse_jsonl(data: bytes | str, *, field_map: Mapping[str, str] | None = None) -> LoadResult:
    """Parse JSONL text (pure: no I/O). Bad lines (invalid UTF-8 or JSON, no prompt, empty
    prompt, bad types, duplicate id) come back in ``errors`` with their 1-based line."""
    lines = data.split(b"\n") if isinstance(data, bytes) else data.split("\n")
    return _collect(_dedupe(_iter_jsonl_lines(lines, parse_field_map(field_map))))


def parse_rows(rows: Iterable[Any], *, field_map: Mapping[str, str] | None = None) -> LoadResult:
    """Like :func:`parse_jsonl` for already-decoded rows (Parquet, a JSON array); ``line`` is
    the 1-based row number."""
    return _collect(_dedupe(_iter_rows(rows, parse_field_map(field_map))))


def _iter_rows(rows: Iterable[Any], fmap: Mapping[str, str]) -> Iterator[PromptItem | BadLine]:
    for i, row in enumerate(rows, start=1):
        try:
            yield normalize_row(row, line=i, field_map=fmap)
        except InputError as exc:
            yield BadLine(i, str(exc), _snippet(json.dumps(row, ensure_ascii=False, default=str)))


def _file_format(path: Path) -> str:
    name = path.name.lower()
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    if name.endswith(".json"):
        with path.open("rb") as f:
            head = f.read(64).lstrip(b"\xef\xbb\xbf \t\r\n")
        if head.startswith(b"["):
            return "json-array"
    return "jsonl"


def iter_input(
    path: str | os.PathLike[str], *, field_map: Mapping[str, str] | None = None
) -> Iterator[PromptItem | BadLine]:
    """Stream a prompt file (JSONL, a JSON array, or Parquet) as items and bad lines."""
    p = Path(path)
    fmap = parse_field_map(field_map)
    fmt = _file_format(p)
    if fmt == "parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError as exc:
            raise ImportError("Parquet input needs pyarrow: pip install 'toa-graph[data]'") from exc

        def rows() -> Iterator[Any]:
            pf = pq.ParquetFile(p)
            for batch in pf.iter_batches(batch_size=4096):
                yield from batch.to_pylist()

        yield from _dedupe(_iter_rows(rows(), fmap))
    elif fmt == "json-array":
        data = json.loads(p.read_text(encoding="utf-8"))
        yield from _dedupe(_iter_rows(data, fmap))
    else:
        with p.open("rb") as f:
            yield from _dedupe(_iter_jsonl_lines(f, fmap))


def load_input(
    path: str | os.PathLike[str], *, field_map: Mapping[str, str] | None = None
) -> LoadResult:
    """All of a prompt file at once (see :func:`iter_input`)."""
    return _collect(iter_input(path, field_map=field_map))


# ================================================================ output records


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)


def _digest(obj: Any) -> str:
    return hashlib.sha256(_canonical(obj).encode("utf-8")).hexdigest()


def config_digest(
    *,
    method: str,
    context: Mapping[str, Any] | None = None,
    agents: Any = None,
    reward: Any = None,
) -> str:
    """A short hash of what determines a record: method, context, agents and reward config.

    Pydantic configs are hashed by content; other objects (fake models in tests, callables)
    by their name / type only.
    """

    def describe(x: Any) -> Any:
        if x is None:
            return None
        if type(x).__module__ == "toa_graph.config" and hasattr(x, "model_dump"):
            return x.model_dump(mode="json", exclude={"source"} if hasattr(x, "source") else None)
        if hasattr(x, "model_dump") or callable(x):  # chat models, reward objects, functions
            model = getattr(x, "model_name", None) or getattr(x, "model", None)
            return {
                "type": type(x).__qualname__,
                "name": getattr(x, "name", None) or getattr(x, "__qualname__", None),
                "model": model if isinstance(model, str) else None,
            }
        if isinstance(x, Mapping):
            return {str(k): describe(v) for k, v in x.items()}
        if isinstance(x, list | tuple):
            return [describe(v) for v in x]
        if isinstance(x, str | int | float | bool):
            return x
        return getattr(x, "name", None) or getattr(x, "__qualname__", None) or type(x).__qualname__

    payload = {
        "method": method,
        "context": dict(context or {}),
        "agents": describe(agents),
        "reward": describe(reward),
    }
    return _digest(payload)[:16]


def build_record(
    item: PromptItem,
    out: Mapping[str, Any],
    *,
    method: str,
    digest: str,
    context: Mapping[str, Any],
    wall_s: float,
) -> dict[str, Any]:
    """The JSON record for one finished prompt."""
    samples = list(out.get("samples") or [])
    best = out.get("best")
    errored = [s for s in samples if s.get("error")]
    usage = total_usage(samples)
    budget = context.get("budget")
    ok = len(samples) - len(errored)
    record: dict[str, Any] = {
        "id": item.id,
        "input": item.fields,
        "prompt": item.prompt,
        "reference": item.reference,
        "method": method,
        "context": dict(context),
        "config_digest": digest,
        "samples": samples,
        "best": best,
        "totals": {
            "generations": len(samples),
            "failed_generations": len(errored),
            "tokens": usage,
            "wall_s": round(wall_s, 4),
        },
        "shortfall": max(0, int(budget) - ok) if isinstance(budget, int) else None,
        "errors": sorted({str(s["error"]) for s in errored})[:10],
    }
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
    """Appends whole lines to a file: one ``write`` per record, flushed at once (and fsynced
    when ``fsync=True``). Counts the bytes it wrote."""

    def __init__(self, path: str | os.PathLike[str], *, fsync: bool = False) -> None:
        self.path = Path(path)
        self.fsync = fsync
        self.bytes_written = 0
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def append(self, record: Mapping[str, Any]) -> int:
        data = encode_record(record)
        view = memoryview(data)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]
        if self.fsync:
            os.fsync(self._fd)
        self.bytes_written += len(data)
        return len(data)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ================================================================ resume


@dataclass
class ScanResult:
    """What is already in a records file."""

    ids: set[str] = field(default_factory=set)
    good_end: int = 0
    """Byte offset just past the last intact line; anything after it is a torn tail."""
    size: int = 0
    bad_lines: list[int] = field(default_factory=list)
    """Unparseable complete lines in the middle of the file (kept, reported)."""
    digests: set[str] = field(default_factory=set)
    best_rewards: list[float] = field(default_factory=list)

    @property
    def torn_bytes(self) -> int:
        return self.size - self.good_end


def scan_records_bytes(data: bytes) -> ScanResult:
    """Find finished ids and where the intact part of a records file ends (pure).

    A record is intact when its line ends with a newline and parses as a JSON object with
    an ``id``. Bytes after the last newline, and unparseable lines at the very end, are a
    torn tail (a killed writer); unparseable lines followed by good ones are reported.
    """
    res = ScanResult(size=len(data))
    pos = 0
    lineno = 0
    pending_bad: list[int] = []
    while pos < len(data):
        nl = data.find(b"\n", pos)
        if nl < 0:
            break  # no newline: torn tail
        lineno += 1
        line = data[pos:nl]
        pos = nl + 1
        if not line.strip():
            if not pending_bad:
                res.good_end = pos
            continue
        try:
            rec = json.loads(line)
            rid = rec["id"] if isinstance(rec, dict) else None
        except (ValueError, KeyError, RecursionError):
            rid = None
        if rid is None:
            pending_bad.append(lineno)
            continue
        res.bad_lines.extend(pending_bad)
        pending_bad = []
        res.ids.add(str(rid))
        if rec.get("config_digest"):
            res.digests.add(rec["config_digest"])
        best = rec.get("best")
        if isinstance(best, dict) and isinstance(best.get("reward"), int | float):
            res.best_rewards.append(float(best["reward"]))
        res.good_end = pos
    return res


def repair_records(path: str | os.PathLike[str]) -> ScanResult:
    """Scan a records file and truncate a torn tail in place (a no-op on a clean file)."""
    p = Path(path)
    if not p.exists():
        return ScanResult()
    data = p.read_bytes()
    res = scan_records_bytes(data)
    if res.torn_bytes:
        logger.warning(
            "%s: cutting a torn tail of %d bytes (left by a killed run)", p, res.torn_bytes
        )
        with p.open("r+b") as f:
            f.truncate(res.good_end)
            f.flush()
            os.fsync(f.fileno())
    if res.bad_lines:
        logger.warning("%s: unreadable record lines kept in place: %s", p, res.bad_lines[:20])
    return res


def read_records(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """Yield intact records (a directory means its records.jsonl); a torn tail is skipped."""
    p = Path(path)
    if p.is_dir():
        p = p / RECORDS_FILE
    with p.open("rb") as f:
        for raw in f:
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


# ================================================================ the runner


@dataclass
class PromptResult:
    """One line of the per-prompt summary table."""

    id: str
    best_reward: float | None
    best_agent: str | None
    generations: int
    tokens: int
    seconds: float
    error: str | None = None


@dataclass
class SynthesisSummary:
    method: str
    output_dir: str
    config_digest: str
    inputs: int = 0
    """Usable input rows considered (after --limit)."""
    done: int = 0
    """Records written by this run."""
    skipped: int = 0
    """Ids already in records.jsonl (resume)."""
    failed: int = 0
    bad_lines: int = 0
    mean_best_reward: float | None = None
    """Over this run's records."""
    mean_best_reward_all: float | None = None
    """Over every record in the output (earlier runs included)."""
    generations: int = 0
    failed_generations: int = 0
    tokens: int = 0
    wall_s: float = 0.0
    bytes_written: int = 0
    torn_bytes_repaired: int = 0
    digest_mismatch: bool = False
    """The output already holds records made with another config/method/context."""
    rows: list[PromptResult] = field(default_factory=list)

    def add_record(self, record: Mapping[str, Any], *, row: bool) -> float:
        """Count one written record (and its table row); return its best reward."""
        totals, best = record["totals"], record["best"]
        reward = float(best["reward"])
        self.done += 1
        self.generations += totals["generations"]
        self.failed_generations += totals["failed_generations"]
        self.tokens += totals["tokens"]["total_tokens"]
        if row:
            self.rows.append(
                PromptResult(
                    str(record["id"]), reward, best.get("agent"), totals["generations"],
                    totals["tokens"]["total_tokens"], round(float(totals["wall_s"]), 3),
                )
            )  # fmt: skip
        return reward

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("rows")
        return d


ProgressFactory = Callable[..., Any]


def _tqdm(total: int, desc: str) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="prompt", dynamic_ncols=True, smoothing=0.1)


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``"2/8"`` -> ``(2, 8)`` (shard 2 of 8, 0-based); ``None`` -> ``None``."""
    if text is None:
        return None
    k, sep, n = text.partition("/")
    try:
        kk, nn = int(k), int(n)
    except ValueError:
        kk = nn = -1
    if not sep or nn < 1 or not 0 <= kk < nn:
        raise ValueError(f"--shard expects K/N with 0 <= K < N, e.g. 0/4; got {text!r}")
    return kk, nn


def in_shard(prompt_id: str, shard: tuple[int, int] | None) -> bool:
    """Whether a prompt id belongs to shard ``(k, n)``: a stable hash of the id, so every
    process (and every rerun) agrees without coordination."""
    if shard is None or shard[1] == 1:
        return True
    h = int.from_bytes(hashlib.sha256(prompt_id.encode("utf-8")).digest()[:8], "big")
    return h % shard[1] == shard[0]


def _walk_input(
    path: Path | None,
    items: Sequence[PromptItem] | None,
    fmap: Mapping[str, str],
    done: set[str],
    limit: int | None,
    shard: tuple[int, int] | None,
) -> Iterator[tuple[str, PromptItem | BadLine]]:
    """Each input row in order as ``("bad", line)``, ``("other-shard", item)``,
    ``("done", item)`` or ``("todo", item)``; stops after ``limit`` usable rows."""
    if items is not None:
        stream: Iterable[PromptItem | BadLine] = _dedupe(items)
    else:
        assert path is not None
        stream = iter_input(path, field_map=fmap)
    seen = 0
    for it in stream:
        if isinstance(it, BadLine):
            yield "bad", it
            continue
        if limit is not None and seen >= limit:
            return
        seen += 1
        if not in_shard(it.id, shard):
            yield "other-shard", it
        else:
            yield ("done" if it.id in done else "todo"), it


class OutputBusyError(UserError, RuntimeError):
    """Another run is writing to the same output directory."""


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


@dataclass
class RunStart:
    """What every runner (single process or Ray driver) needs before its first prompt."""

    out_dir: Path
    records_path: Path
    scan: ScanResult
    done_ids: set[str]
    in_path: Path | None
    items: Sequence[PromptItem] | None
    todo: int
    lock: OutputLock


def finish_run(
    run: RunStart,
    summary: SynthesisSummary,
    writer: RecordWriter,
    files: Iterable[Any],
    bar: Any,
    start: float,
    run_rewards: Sequence[float],
    all_rewards: Sequence[float],
) -> None:
    """Close a run's record writer, side files and progress bar, fill in the summary's
    totals and write summary.json (both runners)."""
    writer.close()
    for f in files:
        f.close()
    if bar is not None:
        bar.close()
    summary.wall_s = round(time.perf_counter() - start, 3)
    summary.bytes_written = writer.bytes_written
    summary.mean_best_reward = sum(run_rewards) / len(run_rewards) if run_rewards else None
    summary.mean_best_reward_all = sum(all_rewards) / len(all_rewards) if all_rewards else None
    (run.out_dir / SUMMARY_FILE).write_text(
        json.dumps(summary.to_json(), indent=2) + "\n", encoding="utf-8"
    )


def iter_todo(
    run: RunStart,
    summary: SynthesisSummary,
    errors_f: Any,
    *,
    field_map: Mapping[str, str],
    limit: int | None,
    shard: tuple[int, int] | None = None,
) -> Iterator[PromptItem]:
    """The prompts a run still has to do, in input order (both runners' producer): bad
    lines are written to ``errors_f`` and counted, only the first ``limit`` usable rows are
    read, prompts of other shards are passed over, finished ids are counted as skipped."""
    for kind, it in _walk_input(run.in_path, run.items, field_map, run.done_ids, limit, shard):
        if isinstance(it, BadLine):
            summary.bad_lines += 1
            errors_f.write(json.dumps(it.to_json(), ensure_ascii=False) + "\n")
            errors_f.flush()
        elif kind != "other-shard":
            summary.inputs += 1
            if kind == "done":
                summary.skipped += 1
            else:
                yield it


def open_run(
    input: str | os.PathLike[str] | Sequence[PromptItem],
    output_dir: str | os.PathLike[str],
    summary: SynthesisSummary,
    *,
    field_map: Mapping[str, str],
    limit: int | None,
    shard: tuple[int, int] | None = None,
) -> RunStart:
    """Create the output dir and lock it (:class:`OutputLock`; the caller releases
    ``run.lock``), cut a torn last record, note the resume state in ``summary`` (torn
    bytes, config-digest mismatch) and count what is left to do."""
    out_dir = Path(output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    lock = OutputLock(out_dir).acquire()
    try:
        return _open_locked(input, out_dir, summary, lock, field_map, limit, shard)
    except BaseException:
        lock.release()
        raise


def _open_locked(
    input: str | os.PathLike[str] | Sequence[PromptItem],
    out_dir: Path,
    summary: SynthesisSummary,
    lock: OutputLock,
    field_map: Mapping[str, str],
    limit: int | None,
    shard: tuple[int, int] | None,
) -> RunStart:
    records_path = out_dir / RECORDS_FILE
    scan = repair_records(records_path)
    digest = summary.config_digest
    summary.torn_bytes_repaired = scan.torn_bytes
    summary.digest_mismatch = bool(scan.digests - {digest})
    if summary.digest_mismatch:
        logger.warning(
            "%s already holds records made with another config digest (%s); this run uses %s",
            records_path, ", ".join(sorted(scan.digests - {digest})), digest,
        )  # fmt: skip
    in_path: Path | None = None
    items: Sequence[PromptItem] | None = None
    if isinstance(input, str | os.PathLike):
        in_path = Path(input)
        if not in_path.exists():
            raise FileNotFoundError(f"input file not found: {in_path}")
    else:
        items = list(input)
    done_ids = set(scan.ids)
    todo = sum(
        kind == "todo" for kind, _ in _walk_input(in_path, items, field_map, done_ids, limit, shard)
    )
    return RunStart(out_dir, records_path, scan, done_ids, in_path, items, todo, lock)


async def run_synthesis(
    input: str | os.PathLike[str] | Sequence[PromptItem],
    output_dir: str | os.PathLike[str],
    *,
    method: str,
    agents: Any,
    reward: Any,
    context: Mapping[str, Any] | None = None,
    concurrency: int = 16,
    limit: int | None = None,
    field_map: Mapping[str, str] | Iterable[str] | None = None,
    fsync: bool = False,
    progress: bool | ProgressFactory = True,
    digest: str | None = None,
    prompt_timeout_s: float | None = None,
    collect_rows: bool = True,
    graph: Any = None,
    shard: tuple[int, int] | None = None,
    record_sink: Callable[[dict[str, Any]], Any] | None = None,
    failure_sink: Callable[[dict[str, Any]], Any] | None = None,
) -> SynthesisSummary:
    """Run ``method`` over every prompt of ``input`` and append one record per prompt.

    Args:
        input: a prompt file (JSONL / JSON array / Parquet) or already-parsed items.
        output_dir: created if missing; re-running with the same directory resumes.
        method: a name in :data:`toa_graph.methods.METHODS`.
        agents, reward: as taken by the method factories (configs or objects).
        context: per-run knobs (:class:`~toa_graph.context.SamplingContext` names).
        concurrency: prompts in flight at once.
        limit: only the first ``limit`` usable input rows.
        fsync: fsync after each record (slower; survives power loss, not just a kill).
        progress: show a tqdm bar (or pass a factory ``(total=, desc=) -> bar``).
        digest: config digest written in each record (default: computed from the args).
        prompt_timeout_s: give up on a prompt after this long (it is then "failed").
        graph: a compiled graph to use instead of building ``METHODS[method]``.
        shard: ``(k, n)``: only the prompts whose id hashes to shard ``k`` of ``n`` (run
            ``n`` processes, each with its own ``output_dir``, to use more CPU cores; export
            them together, ids are disjoint). ``limit`` applies before sharding.
        record_sink: when given, each finished record is handed to it instead of being
            appended to records.jsonl (the distributed runner streams records to its
            driver this way; see :mod:`toa_graph.distributed`).
        failure_sink: also called with each failed.jsonl entry (``id``, ``line``, ``error``).
    """
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency}")
    ctx = dict(context or {})
    fmap = parse_field_map(field_map)
    if graph is None:
        from toa_graph.methods import METHODS

        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; available: {', '.join(sorted(METHODS))}")
        # Bulk runs: no checkpointer (see the module docstring).
        graph = METHODS[method](agents=agents, reward=reward).compile(name=method)
    digest = digest or config_digest(method=method, context=ctx, agents=agents, reward=reward)

    summary = SynthesisSummary(method=method, output_dir=str(output_dir), config_digest=digest)
    run = open_run(input, output_dir, summary, field_map=fmap, limit=limit, shard=shard)
    try:
        out_dir, records_path, scan, todo = run.out_dir, run.records_path, run.scan, run.todo
        done_ids = run.done_ids

        bar: Any = None
        if progress:
            factory = progress if callable(progress) else _tqdm
            bar = factory(total=todo, desc=f"{method}")

        run_rewards: list[float] = []
        all_rewards = list(scan.best_rewards)
        queue: asyncio.Queue[PromptItem | None] = asyncio.Queue(maxsize=2 * concurrency)
        start = time.perf_counter()

        errors_f = (out_dir / ERRORS_FILE).open("w", encoding="utf-8")
        failed_f = (out_dir / FAILED_FILE).open("w", encoding="utf-8")
        writer = RecordWriter(records_path, fsync=fsync)

        def note_failure(item: PromptItem, reason: str, wall: float) -> None:
            summary.failed += 1
            entry = {"id": item.id, "line": item.line, "error": reason}
            failed_f.write(json.dumps(entry, ensure_ascii=False) + "\n")
            failed_f.flush()
            if failure_sink is not None:
                failure_sink(entry)
            if collect_rows:
                summary.rows.append(PromptResult(item.id, None, None, 0, 0, round(wall, 3), reason))

        async def process(item: PromptItem) -> None:
            t0 = time.perf_counter()
            inp: dict[str, Any] = {
                "prompt": item.prompt,
                "reference": item.reference,
                "id": item.id,
            }
            try:
                call = graph.ainvoke(inp, context=dict(ctx))
                out = await (asyncio.wait_for(call, prompt_timeout_s) if prompt_timeout_s else call)
            except asyncio.CancelledError:
                raise
            except TimeoutError:
                note_failure(
                    item, f"timed out after {prompt_timeout_s} s", time.perf_counter() - t0
                )
                return
            except Exception as exc:
                from toa_graph.agents import describe_error

                logger.warning("prompt %s failed: %s", item.id, describe_error(exc))
                note_failure(item, describe_error(exc), time.perf_counter() - t0)
                return
            wall = time.perf_counter() - t0
            record = build_record(item, out, method=method, digest=digest, context=ctx, wall_s=wall)
            best = record["best"]
            if not isinstance(best, dict) or best.get("reward") is None:
                errs = "; ".join(record["errors"]) or "no sample was generated"
                note_failure(
                    item,
                    f"no usable sample ({record['totals']['generations']} generations): {errs}",
                    wall,
                )
                return
            if item.id in done_ids:  # a duplicate can only come from the caller's own items
                return
            if record_sink is not None:
                record_sink(record)
            else:
                writer.append(record)
            done_ids.add(item.id)
            reward = summary.add_record(record, row=collect_rows)
            run_rewards.append(reward)
            all_rewards.append(reward)

        async def worker() -> None:
            while True:
                item = await queue.get()
                if item is None:
                    return
                try:
                    await process(item)
                finally:
                    if bar is not None:
                        bar.update(1)
                        if run_rewards:
                            bar.set_postfix(
                                best=f"{sum(run_rewards) / len(run_rewards):.4f}",
                                failed=summary.failed,
                                refresh=False,
                            )

        async def produce() -> None:
            todo_items = iter_todo(run, summary, errors_f, field_map=fmap, limit=limit, shard=shard)
            for n, it in enumerate(todo_items):
                await queue.put(it)
                if n % 256 == 0:
                    await asyncio.sleep(0)
            for _ in range(concurrency):
                await queue.put(None)

        workers = [
            asyncio.create_task(worker(), name=f"synth-worker-{i}") for i in range(concurrency)
        ]
        try:
            await asyncio.gather(produce(), *workers)
        finally:
            for w in workers:
                w.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.gather(*workers, return_exceptions=True)
            finish_run(
                run, summary, writer, (errors_f, failed_f), bar, start, run_rewards, all_rewards
            )
        return summary
    finally:
        run.lock.release()


def synthesize(*args: Any, **kwargs: Any) -> SynthesisSummary:
    """Blocking wrapper around :func:`run_synthesis` (for scripts and notebooks without a loop)."""
    return asyncio.run(run_synthesis(*args, **kwargs))
