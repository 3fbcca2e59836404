"""Training data: read the ``export`` output (or a Hub dataset) and check every row against
the trainer's format before any model loads.

Pure checks over plain rows; the only I/O is reading the file.

SFT rows (what TRL's ``SFTTrainer`` reads): ``{"messages": [{"role", "content"}, ...]}``
ending with an assistant turn, or ``{"prompt", "completion"}``, or ``{"text"}``.
DPO / T-DPO rows (``DPOTrainer``): ``{"prompt", "chosen", "rejected"}``, each a string or
a list of chat turns (the prompt may be left out when chosen and rejected are whole
conversations).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

from toa_graph.distill_errors import TrainError

__all__ = ["TrainKind", "check_rows", "load_rows", "row_error"]

TrainKind = Literal["sft", "dpo", "tdpo"]

_ROLES = {"system", "user", "assistant", "tool"}


def _turns_error(value: Any, field: str) -> str | None:
    if not isinstance(value, list) or not value:
        return f"field {field!r} must be a non-empty list of chat turns"
    for i, turn in enumerate(value):
        if not isinstance(turn, Mapping):
            return f"field {field!r}[{i}] must be an object with 'role' and 'content'"
        if turn.get("role") not in _ROLES:
            return f"field {field!r}[{i}].role must be one of {sorted(_ROLES)}"
        if not isinstance(turn.get("content"), str):
            return f"field {field!r}[{i}].content must be a string"
    return None


def _text_or_turns_error(row: Mapping[str, Any], field: str) -> str | None:
    if field not in row or row[field] is None:
        return f"missing field {field!r}"
    value = row[field]
    if isinstance(value, str):
        return None if value.strip() else f"field {field!r} is empty"
    return _turns_error(value, field)


def row_error(row: Any, kind: TrainKind) -> str | None:
    """What is wrong with one row for a trainer (naming the field), or None if it is fine.

    >>> row_error({"messages": [{"role": "user", "content": "hi"}]}, "sft")
    "field 'messages' must end with an assistant turn"
    >>> row_error({"prompt": "q", "chosen": "a"}, "dpo")
    "missing field 'rejected'"
    """
    if not isinstance(row, Mapping):
        return "row is not a JSON object"
    if kind == "sft":
        if "messages" in row:
            err = _turns_error(row["messages"], "messages")
            if err is None and row["messages"][-1]["role"] != "assistant":
                err = "field 'messages' must end with an assistant turn"
            return err
        if "prompt" in row or "completion" in row:
            return _text_or_turns_error(row, "prompt") or _text_or_turns_error(row, "completion")
        if "text" in row:
            return _text_or_turns_error(row, "text")
        return "missing field 'messages' (or 'prompt'/'completion', or 'text')"
    for field in ("chosen", "rejected"):
        err = _text_or_turns_error(row, field)
        if err:
            return err
    if "prompt" not in row and isinstance(row["chosen"], str):
        return "missing field 'prompt'"
    return _text_or_turns_error(row, "prompt") if "prompt" in row else None


def check_rows(rows: Iterable[Any], kind: TrainKind, source: str) -> int:
    """Raise :class:`TrainError` naming the first bad row (1-based) and field; return the count.

    An empty data set is an error too: training on nothing would write an empty checkpoint.
    """
    n = 0
    for n, row in enumerate(rows, start=1):
        err = row_error(row, kind)
        if err:
            raise TrainError(f"{source}: row {n} is not {kind} training data: {err}")
    if n == 0:
        raise TrainError(f"{source}: no rows to train on (the data set is empty)")
    return n


def _read_jsonl(path: Path) -> list[Any]:
    rows: list[Any] = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise TrainError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
    return rows


def load_rows(source: str, *, split: str = "train") -> list[dict[str, Any]]:
    """Rows of a local ``.jsonl`` / ``.json`` / ``.parquet`` file, or of a Hub dataset id."""
    path = Path(source)
    if path.suffix in {".jsonl", ".json"} and path.exists():
        if path.suffix == ".json":
            data = json.loads(path.read_text(encoding="utf-8") or "[]")
            return list(data) if isinstance(data, list) else [data]
        return _read_jsonl(path)
    if path.suffix in {".jsonl", ".json", ".parquet"} and not path.exists():
        raise TrainError(f"data file not found: {source}")
    try:
        import datasets
    except ImportError as e:  # pragma: no cover - the train extra installs it
        raise TrainError("reading this data needs `pip install 'toa-graph[train]'`") from e
    if path.suffix == ".parquet":
        ds = datasets.load_dataset("parquet", data_files=str(path), split="train")
    else:
        try:
            ds = datasets.load_dataset(source, split=split)
        except Exception as e:  # any Hub failure is the user's to fix
            raise TrainError(f"cannot load dataset {source!r} (split {split!r}): {e}") from e
    return [dict(r) for r in ds]
