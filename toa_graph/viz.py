"""Looking at a TOA search tree: as indented text, or drawn with matplotlib.

The tree is the ``tree`` output of the TOA graph (a flat node list with parent indices,
see :mod:`toa_graph.mcts`): root -> model nodes (an agent, fresh or refine) -> response
nodes (a sample) -> model nodes -> ... Model nodes the search never tried are left out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["draw_tree", "tree_lines"]


def _shown(nodes: Sequence[Mapping[str, Any]], i: int) -> bool:
    n = nodes[i]
    return n["type"] != "model" or bool(n["children"])


def _label(n: Mapping[str, Any]) -> str:
    if n["type"] == "root":
        return "prompt"
    if n["type"] == "model":
        return f"{n['agent']} ({n['mode']}, {n['visits'] - 1} visits)"
    reward = "error" if n["reward"] is None else f"{n['reward']:.3f}"
    return f"{n['sample']} by {n['agent']}: reward {reward}"


def tree_lines(
    tree: Mapping[str, Any], samples: Sequence[Mapping[str, Any]] = (), *, width: int = 60
) -> list[str]:
    """The tree as indented lines; with ``samples``, each response shows its text's start.

    >>> tree = {"nodes": [
    ...     {"id": 0, "type": "root", "parent": -1, "children": [1]},
    ...     {"id": 1, "type": "model", "parent": 0, "children": [2], "agent": "a",
    ...      "mode": "fresh", "visits": 2},
    ...     {"id": 2, "type": "response", "parent": 1, "children": [], "agent": "a",
    ...      "sample": "s0", "reward": 0.5}]}
    >>> print("\\n".join(tree_lines(tree)))
    prompt
    └─ a (fresh, 1 visits)
       └─ s0 by a: reward 0.500
    """
    nodes = tree["nodes"]
    texts = {s["id"]: " ".join(str(s.get("text") or "").split()) for s in samples}
    out: list[str] = []

    def walk(i: int, prefix: str, last: bool, top: bool) -> None:
        n = nodes[i]
        line = _label(n)
        if n["type"] == "response" and texts.get(n["sample"]):
            line += f"  | {texts[n['sample']][:width]}"
        out.append(line if top else f"{prefix}{'└─ ' if last else '├─ '}{line}")
        kids = [c for c in n["children"] if _shown(nodes, c)]
        child_prefix = "" if top else prefix + ("   " if last else "│  ")
        for k, c in enumerate(kids):
            walk(c, child_prefix, k == len(kids) - 1, False)

    walk(0, "", True, True)
    return out


def draw_tree(tree: Mapping[str, Any], *, ax: Any = None, title: str | None = None) -> Any:
    """Draw the tree with matplotlib (tidy layout: leaves spread, parents centred over
    their children; responses coloured by reward). Returns the axes."""
    import matplotlib.pyplot as plt

    nodes = tree["nodes"]
    pos: dict[int, tuple[float, float]] = {}
    next_x = [0.0]

    def place(i: int, depth: int) -> float:
        kids = [c for c in nodes[i]["children"] if _shown(nodes, c)]
        if kids:
            xs = [place(c, depth + 1) for c in kids]
            x = (xs[0] + xs[-1]) / 2
        else:
            x = next_x[0]
            next_x[0] += 1.0
        pos[i] = (x, -float(depth))
        return x

    place(0, 0)
    rewards = [n["reward"] for n in nodes if n["type"] == "response" and n["reward"] is not None]
    lo, hi = (min(rewards), max(rewards)) if rewards else (0.0, 1.0)
    cmap = plt.get_cmap("viridis")
    if ax is None:
        _, ax = plt.subplots(
            figsize=(max(6.0, 0.9 * next_x[0]), 1.1 * (1 + max(-y for _, y in pos.values())))
        )
    for i, (x, y) in pos.items():
        p = nodes[i]["parent"]
        if p >= 0 and p in pos:
            px, py = pos[p]
            ax.plot([px, x], [py, y], color="0.7", lw=1, zorder=1)
    for i, (x, y) in pos.items():
        n = nodes[i]
        if n["type"] == "root":
            ax.scatter([x], [y], s=260, marker="*", color="black", zorder=2)
        elif n["type"] == "model":
            ax.scatter([x], [y], s=60, marker="s", color="0.85", edgecolor="0.4", zorder=2)
            ax.annotate(
                f"{n['agent']}\n{n['mode']}", (x, y), fontsize=6, ha="center", va="top",
                xytext=(0, -6), textcoords="offset points",
            )  # fmt: skip
        else:
            r = n["reward"]
            color = "red" if r is None else cmap(0.5 if hi == lo else (r - lo) / (hi - lo))
            ax.scatter([x], [y], s=180, color=color, edgecolor="black", zorder=2)
            ax.annotate(
                f"{n['sample']}\n{'err' if r is None else f'{r:.2f}'}", (x, y), fontsize=7,
                ha="center", va="bottom", xytext=(0, 7), textcoords="offset points",
            )  # fmt: skip
    ax.set_axis_off()
    ax.set_title(title or f"TOA tree: {sum(n['type'] == 'response' for n in nodes)} responses")
    return ax
