"""placeholder (being written)."""

from typing import Any


def add_parser(sub: Any) -> None:
    sub.add_parser("chat", help="(work in progress)")
