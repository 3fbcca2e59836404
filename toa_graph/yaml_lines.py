"""Where each node of a YAML document stands: the line numbers config errors cite."""

from __future__ import annotations

from typing import Any

import yaml

__all__ = ["line_index"]


def line_index(text: str) -> dict[tuple[Any, ...], int]:
    """Map each YAML node path (keys and list indices) to its 1-based line."""
    index: dict[tuple[Any, ...], int] = {}
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return index

    def walk(node: Any, path: tuple[Any, ...]) -> None:
        index[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                key = k.value
                index[(*path, key)] = k.start_mark.line + 1
                walk(v, (*path, key))
                index[(*path, key)] = k.start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode):
            for i, v in enumerate(node.value):
                walk(v, (*path, i))

    if root is not None:
        walk(root, ())
    return index
