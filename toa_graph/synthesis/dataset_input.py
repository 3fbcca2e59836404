"""Hugging Face datasets as prompt input: ``hf:ORG/NAME[:CONFIG]`` streamed from the Hub,
and local dataset directories (``save_to_disk`` output, or a folder of JSONL / JSON /
Parquet files).

Rows go through the same :func:`~toa_graph.synthesis.inputs.normalize_row` as a prompt
file: the same field aliases, ``--field-map``, ids (a content hash when a row has none,
so resume works) and bad rows reported by number. A Hub dataset is read with
``streaming=True`` (never downloaded whole); a ``save_to_disk`` directory is memory-mapped;
a folder of files is read file by file with the prompt-file reader, so a bad JSONL line is
reported with its file and line.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from toa_graph.errors import UserError
from toa_graph.synthesis.inputs import (
    HUB_PREFIX,
    BadLine,
    DatasetInput,
    LoadResult,
    PromptItem,
    _dedupe,
    _iter_rows,
    iter_input,
    parse_field_map,
)

__all__ = [
    "DATA_SUFFIXES",
    "data_files",
    "iter_dataset",
    "iter_source",
    "load_source",
    "parse_hub_id",
    "resolve_input",
]

DATA_SUFFIXES = (".jsonl", ".json", ".parquet", ".pq")
"""Files of a dataset folder that are read as prompt rows."""
_HUB_NAME = re.compile(r"^[\w.-]+(/[\w.-]+)?$")


def parse_hub_id(source: str) -> tuple[str, str | None]:
    """``"hf:ORG/NAME:CONFIG"`` -> ``("ORG/NAME", "CONFIG")`` (config ``None`` when absent)."""
    name, _, config = source.removeprefix(HUB_PREFIX).partition(":")
    if not _HUB_NAME.match(name) or (config and not re.match(r"^[\w.-]+$", config)):
        raise UserError(
            f"--input {source!r}: expected hf:ORG/NAME or hf:ORG/NAME:CONFIG, "
            "e.g. hf:openai/gsm8k:main"
        )
    return name, config or None


def resolve_input(
    source: str | os.PathLike[str] | DatasetInput, split: str | None = None
) -> Path | DatasetInput:
    """What ``--input`` names: a prompt file (a ``Path``) or a dataset (``hf:`` id or a
    directory). ``split`` only applies to datasets. Raises ``FileNotFoundError`` for a
    missing local path and :class:`UserError` for a malformed ``hf:`` id or a stray split."""
    if isinstance(source, DatasetInput):
        return source
    text = os.fspath(source)
    if text.startswith(HUB_PREFIX):
        parse_hub_id(text)
        return DatasetInput(text, split)
    path = Path(text)
    if not path.exists():
        raise FileNotFoundError(f"input file not found: {path}")
    if path.is_dir():
        return DatasetInput(text, split)
    if split is not None:
        raise UserError(
            f"--split {split} applies to hf: datasets and dataset directories, "
            f"not to the file {path}"
        )
    return path


def iter_source(
    source: str | os.PathLike[str] | DatasetInput,
    *,
    field_map: Mapping[str, str] | None = None,
    split: str | None = None,
) -> Iterator[PromptItem | BadLine]:
    """Stream what ``--input`` names -- a prompt file, an ``hf:`` id or a dataset
    directory -- as items and bad rows."""
    resolved = resolve_input(source, split)
    if isinstance(resolved, DatasetInput):
        return iter_dataset(resolved, parse_field_map(field_map))
    return iter_input(resolved, field_map=field_map)


def load_source(
    source: str | os.PathLike[str] | DatasetInput,
    *,
    field_map: Mapping[str, str] | None = None,
    split: str | None = None,
) -> LoadResult:
    """All of :func:`iter_source` at once."""
    out = LoadResult()
    for it in iter_source(source, field_map=field_map, split=split):
        if isinstance(it, PromptItem):
            out.items.append(it)
        else:
            out.errors.append(it)
    return out


def iter_dataset(
    source: DatasetInput, field_map: Mapping[str, str]
) -> Iterator[PromptItem | BadLine]:
    """Stream a dataset's rows as items and bad rows (1-based row numbers within the split;
    for a folder of files, line/row numbers within each file, named in the reason)."""
    if source.is_hub:
        yield from _dedupe(_iter_rows(_hub_rows(source), field_map))
        return
    root = Path(source.source)
    if (root / "dataset_dict.json").exists() or (root / "state.json").exists():
        yield from _dedupe(_iter_rows(_disk_rows(root, source.split), field_map))
        return
    yield from _dedupe(_folder_items(root, source.split, field_map))


def _datasets() -> Any:
    try:
        import datasets
    except ImportError as exc:
        raise ImportError(
            "hf: inputs and dataset directories need `datasets`: pip install 'toa-graph[data]'"
        ) from exc
    return datasets


def _hub_rows(source: DatasetInput) -> Iterator[Any]:
    name, config = parse_hub_id(source.source)
    datasets = _datasets()
    try:
        ds = datasets.load_dataset(name, config, split=source.split, streaming=True)
    except (FileNotFoundError, ValueError) as exc:
        raise UserError(f"--input {source.describe()}: {exc}") from exc
    yield from _pick_split(ds, source)


def _disk_rows(root: Path, split: str | None) -> Iterator[Any]:
    loaded = _datasets().load_from_disk(str(root))  # memory-mapped Arrow, not read into RAM
    if hasattr(loaded, "keys"):
        yield from _pick_split(loaded, DatasetInput(str(root), split))
    elif split is not None:
        raise UserError(f"{root} holds one dataset saved without splits: drop --split {split}")
    else:
        yield from loaded


def _pick_split(ds: Any, source: DatasetInput) -> Any:
    """A dataset dict's split: the one asked for, else its only split, else ``train``."""
    if not hasattr(ds, "keys"):
        return ds
    names = list(ds.keys())
    name = source.split or (names[0] if len(names) == 1 else "train")
    if name not in names:
        raise UserError(
            f"--input {source.describe()}: no split {name!r}; it has {', '.join(names)} "
            "(choose one with --split)"
        )
    return ds[name]


def data_files(root: Path, split: str | None) -> list[Path]:
    """The data files of a folder, sorted; with ``split``, those whose path names it the
    Hub's way (``train.jsonl``, ``data/train-00000-of-00001.parquet``, ``test/x.jsonl``).
    Without, the ``train`` files when some file is named so, else every file."""
    files = sorted(
        p for p in root.rglob("*") if p.is_file() and p.name.lower().endswith(DATA_SUFFIXES)
    )

    def named(p: Path, s: str) -> bool:
        rel = p.relative_to(root).as_posix().lower()
        return re.search(rf"(^|[/_.-]){re.escape(s.lower())}([/_.-]|$)", rel) is not None

    if split is not None:
        chosen = [p for p in files if named(p, split)]
    else:
        chosen = [p for p in files if named(p, "train")] or files
    if not chosen:
        what = f"for split {split!r} " if split else ""
        raise UserError(
            f"{root}: no {'/'.join(DATA_SUFFIXES)} files {what}in this folder"
            + (f" (it has {', '.join(p.name for p in files[:5])})" if files else "")
        )
    return chosen


def _folder_items(
    root: Path, split: str | None, field_map: Mapping[str, str]
) -> Iterator[PromptItem | BadLine]:
    for path in data_files(root, split):
        rel = path.relative_to(root).as_posix()
        for it in iter_input(path, field_map=field_map):
            yield (
                it
                if isinstance(it, PromptItem)
                else BadLine(it.line, f"{rel}: {it.reason}", it.text)
            )
