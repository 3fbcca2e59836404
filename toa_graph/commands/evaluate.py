"""``toa-graph evaluate`` (placeholder while it is written)."""

from __future__ import annotations

from typing import Any


def add_parser(sub: Any) -> None:
    sub.add_parser("evaluate", help="evaluate a model")
