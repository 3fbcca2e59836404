"""Writing and reading export rows: JSONL or Parquet, streamed, renamed into place."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from toa_graph.errors import UserError

__all__ = [
    "PARQUET_BATCH",
    "EmptyExportError",
    "read_jsonl_rows",
    "read_record_files",
    "write_rows",
]


class EmptyExportError(UserError):
    """An export produced no rows (nothing was written): a 0-row file would not load."""


def write_rows(
    rows: Iterable[Mapping[str, Any]], path: str | os.PathLike[str], *, fmt: str | None = None
) -> int:
    """Write rows as JSONL (default) or Parquet (``fmt="parquet"`` or a ``.parquet`` path).

    The file is written next to its final name and renamed into place, so a reader never
    sees half a dataset. Returns the number of rows; raises :class:`EmptyExportError`
    (writing nothing) when there are none.
    """
    p = Path(path)
    fmt = fmt or ("parquet" if p.suffix.lower() in (".parquet", ".pq") else "jsonl")
    if fmt not in ("jsonl", "parquet"):
        raise ValueError(f"format must be jsonl or parquet, got {fmt!r}")
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.tmp")
    n = 0
    if fmt == "jsonl":
        with tmp.open("w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
                n += 1
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        writer: Any = None
        try:
            for batch in _batches(rows, PARQUET_BATCH):
                table = pa.Table.from_pylist(batch, schema=writer.schema if writer else None)
                if writer is None:
                    writer = pq.ParquetWriter(tmp, table.schema)
                writer.write_table(table)
                n += len(batch)
        finally:
            if writer is not None:
                writer.close()
    if not n:
        tmp.unlink(missing_ok=True)
        raise EmptyExportError(f"no rows to write to {p}: nothing was written")
    os.replace(tmp, p)
    return n


PARQUET_BATCH = 10_000
"""Rows per Parquet row group (the schema is the first batch's)."""


def _batches(rows: Iterable[Mapping[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    for row in rows:
        batch.append(dict(row))
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def read_jsonl_rows(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """The rows of a JSONL file written by :func:`write_rows`, streamed."""
    with Path(path).open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def read_record_files(
    paths: Sequence[str | os.PathLike[str]], stats: Any = None, *, allow_mixed: bool = False
) -> Iterator[dict[str, Any]]:
    """Records from several files or output directories, each id once (the first input
    wins, so shards of one job export together); a record left out is counted in ``stats``
    (an :class:`~toa_graph.exports.ExportStats`; two runs over the same prompts: export
    them one by one to keep both). Each path must hold records of one data digest (a
    ``MixedDigestError`` otherwise, unless ``allow_mixed``); several paths may differ."""
    from toa_graph.synthesis import read_records
    from toa_graph.synthesis.digest import check_export_digests

    first: dict[str, str] = {}
    for path in paths:
        digests: set[str] = set()
        if not allow_mixed:
            check_export_digests(path, digests)
        for rec in read_records(path):
            dd = rec.get("data_digest")
            if not allow_mixed and dd and dd not in digests:
                digests.add(str(dd))
                check_export_digests(path, digests)
            if (rid := str(rec["id"])) not in first:
                first[rid] = str(path)
                yield rec
            elif stats is not None:
                stats.skip(
                    f"left out of {path}: id already read from {first[rid]} (the first "
                    "input wins; export each run alone to keep both)"
                )
