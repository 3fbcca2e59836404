"""Prompt-file input: parsing and validation with line numbers, sharding, and the input walk.

The loader is a pure function of the input bytes (:func:`parse_jsonl`), so it can be
property-tested; :func:`iter_input` streams the same parsing over a file (JSONL, a JSON
array, or Parquet) without holding the whole dataset in memory; Hugging Face datasets
(:class:`DatasetInput`) are read by :mod:`toa_graph.synthesis.dataset_input`.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Container, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toa_graph.errors import UserError
from toa_graph.sampling import validate_prompt
from toa_graph.state import Prompt
from toa_graph.synthesis.idtable import IdTable
from toa_graph.text import content_text as _content_text

PROMPT_FIELDS = ("prompt", "instruction", "question", "messages")
"""Input fields tried, in order, for the prompt (a string, or chat messages)."""
REFERENCE_FIELDS = ("reference", "references", "gold_response", "answer", "output")
"""Input fields tried, in order, for the reference (gold answer / reference translation)."""
ID_FIELDS = ("id", "prompt_id")
"""Input fields tried, in order, for the prompt id. Without one, a content hash is used."""
MAPPABLE = ("prompt", "reference", "id")
HUB_PREFIX = "hf:"
"""``--input hf:ORG/NAME[:CONFIG]`` names a Hugging Face Hub dataset."""


class InputError(UserError):
    """One input row cannot be used (the message is the reason written to errors.jsonl)."""


@dataclass(frozen=True)
class DatasetInput:
    """A Hugging Face dataset as prompt input: ``hf:ORG/NAME[:CONFIG]`` (streamed from the
    Hub) or a local directory (``save_to_disk`` output, or a folder of JSONL / Parquet)."""

    source: str
    split: str | None = None
    """The split to read; default: the only split, else ``train``."""

    @property
    def is_hub(self) -> bool:
        return self.source.startswith(HUB_PREFIX)

    def describe(self) -> str:
        return self.source + (f" (split {self.split})" if self.split else "")


@dataclass(frozen=True)
class PromptItem:
    """One usable input row."""

    id: str
    prompt: Prompt
    reference: str | list[str] | None
    fields: dict[str, Any]
    """The input row as read."""
    line: int
    """1-based line (JSONL) or row (Parquet / JSON array) number."""
    taken: tuple[str, ...] = ()
    """The row's fields that became ``prompt``, ``reference`` and ``id``."""

    def extra_fields(self) -> dict[str, Any]:
        """The row's other fields (written under the record's ``input``: each value once)."""
        return {k: v for k, v in self.fields.items() if k not in self.taken}


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
        rid = "h" + content_digest({"prompt": prompt, "reference": reference})[:16]
    elif isinstance(rid, bool) or not isinstance(rid, str | int):
        raise InputError(
            f"id field {iname!r} must be a string or an integer, got {type(rid).__name__}"
        )
    else:
        rid = str(rid)
        if not rid.strip():
            raise InputError(f"empty id (field {iname!r})")
    taken = tuple(n for n in (pname, rname, iname) if n is not None)
    if pname == "instruction" and isinstance(prompt, str) and prompt != row[pname]:
        taken += ("input",)  # Alpaca's input was appended to the prompt
    return PromptItem(
        id=rid, prompt=prompt, reference=reference, fields=row, line=line, taken=taken
    )


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
    """A repeated id is a bad line naming the line it was first seen on (the ids seen are
    kept as 16 bytes each, not as strings: see :mod:`toa_graph.synthesis.idtable`)."""
    first_seen = IdTable(values=True)
    for it in stream:
        if isinstance(it, PromptItem) and not first_seen.add(it.id, it.line):
            first = first_seen.get(it.id)
            yield BadLine(it.line, f"duplicate id {it.id!r} (first seen on line {first})", "")
            continue
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
    """Stream a prompt file (JSONL, a JSON array, or Parquet) as items and bad lines (for
    ``hf:`` ids and dataset directories too: :func:`~toa_graph.synthesis.iter_source`)."""
    fmap = parse_field_map(field_map)
    p = Path(path)
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


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)


def content_digest(obj: Any) -> str:
    return hashlib.sha256(canonical_json(obj).encode("utf-8")).hexdigest()


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


def walk_input(
    path: Path | None,
    items: Iterable[PromptItem | BadLine] | None,
    fmap: Mapping[str, str],
    done: Container[str],
    limit: int | None,
    shard: tuple[int, int] | None,
    *,
    dedupe: bool = True,
) -> Iterator[tuple[str, PromptItem | BadLine]]:
    """Each input row in order as ``("bad", line)``, ``("other-shard", item)``,
    ``("done", item)`` or ``("todo", item)``; stops after ``limit`` usable rows.
    ``dedupe=False``: ``items`` are already de-duplicated (a dataset stream)."""
    if items is not None:
        stream: Iterable[PromptItem | BadLine] = _dedupe(items) if dedupe else items
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
