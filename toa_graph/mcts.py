"""TOA's Monte Carlo tree search as pure functions over plain, serialisable data.

No LangGraph, no I/O. The tree is a dict holding a flat list of nodes with parent indices;
every function returns a new tree and never mutates its argument (copy-on-write on the
nodes it touches), so the tree can live in graph state under any checkpointer.

Node types alternate: ``root -> model -> response -> model -> ...``.

* The root and every response node have one *model* child per agent. A model child under
  a response means "this agent refines that response" (``mode="refine"``). The first time
  selection reaches a response node it also gets one ``mode="fresh"`` model child per
  agent (answer the prompt afresh) whose statistics are copied from the root's children.
* Selection: ``UCT = mean(tree rewards) + alpha * sqrt(2 ln N / visits)`` with ``N`` the
  global play count; a child with no rewards scores +inf; among a model node's response
  children only the top-k by reward are considered; a tie goes to the earliest child.
* Expansion: a model node is *fully expanded* when the responses at its child layer,
  counted over the whole tree, number at least ``width`` and (its parent is the root, or
  one of its children beats the parent response's reward). Otherwise the play generates
  there.
* Backup: the tree uses ``sigmoid(reward / tau)``; it is added to every node from the
  expanded model node up to the root (raw rewards stay in the samples).
* Determinism: children in creation order; nodes start with ``visits = 1`` and no rewards.

Several plays per step use *virtual loss*: a selected play adds a visit and a reward of 0
along its path (and counts as a pending response at its layer) until its result is
recorded, so the next selection in the same step looks elsewhere. With one play per step
the virtual loss is always removed before the next selection: the paper's algorithm.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, TypedDict

__all__ = [
    "InFlight",
    "Node",
    "Play",
    "SearchParams",
    "Tree",
    "fully_expanded",
    "new_tree",
    "record_result",
    "responses_at_layer",
    "select_play",
    "sigmoid",
    "tree_reward",
    "uct",
]

NodeType = Literal["root", "model", "response"]
Mode = Literal["fresh", "refine"]


class Node(TypedDict):
    id: int
    type: NodeType
    parent: int  # -1 for the root
    children: list[int]
    agent: str | None  # model nodes: the agent to call; response nodes: who wrote it
    mode: Mode | None  # model nodes only
    sample: str | None  # response nodes: the sample id
    reward: float | None  # response nodes: raw reward of the sample
    layer: int  # response nodes: response depth (0 = answers under the root)
    visits: int
    value_sum: float  # sum of tree rewards backed up through this node
    value_count: int  # number of tree rewards backed up through this node
    fresh_added: bool  # response nodes: fresh children were added at the first visit


class InFlight(TypedDict):
    index: int
    path: list[int]
    layer: int


class Tree(TypedDict):
    agents: list[str]
    nodes: list[Node]
    plays: int  # global play count N (plays selected, including those in flight)
    inflight: list[InFlight]  # plays selected but not yet recorded (carry a virtual loss)


class Play(TypedDict):
    """One play chosen by selection: call ``agent`` at model node ``node``."""

    index: int  # 0-based play number, in selection order
    node: int
    agent: str
    kind: Mode
    parent_sample: str | None  # the sample to refine (refine) or None (fresh)
    parent_response: int  # tree index of the response above ``node`` (-1 under the root)
    layer: int  # layer the new response will sit at
    path: list[int]  # node indices from the root to ``node``


@dataclass(frozen=True, kw_only=True)
class SearchParams:
    alpha: float = 0.01
    tau: float = 0.1
    width: int = 1
    top_k_child: int = 1


def sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)


def tree_reward(raw: float, tau: float) -> float:
    """What the tree backs up for a raw reward: ``sigmoid(raw / tau)``."""
    return sigmoid(raw / tau)


def _node(
    idx: int,
    type_: NodeType,
    parent: int,
    *,
    agent: str | None = None,
    mode: Mode | None = None,
    sample: str | None = None,
    reward: float | None = None,
    layer: int = 0,
    visits: int = 1,
    value_sum: float = 0.0,
    value_count: int = 0,
) -> Node:
    return Node(
        id=idx,
        type=type_,
        parent=parent,
        children=[],
        agent=agent,
        mode=mode,
        sample=sample,
        reward=reward,
        layer=layer,
        visits=visits,
        value_sum=value_sum,
        value_count=value_count,
        fresh_added=False,
    )


def new_tree(agents: Sequence[str]) -> Tree:
    """A root with one (fresh) model child per agent, in agent order."""
    if not agents:
        raise ValueError("TOA needs at least one agent")
    if len(set(agents)) != len(agents):
        raise ValueError(f"agent names must be unique, got {list(agents)}")
    root = _node(0, "root", -1)
    nodes: list[Node] = [root]
    for i, name in enumerate(agents, start=1):
        nodes.append(_node(i, "model", 0, agent=name, mode="fresh"))
        root["children"].append(i)
    return Tree(agents=list(agents), nodes=nodes, plays=0, inflight=[])


def uct(node: Node, total_plays: int, alpha: float) -> float:
    """``mean(tree rewards) + alpha * sqrt(2 ln N / visits)``; +inf with no rewards yet."""
    if node["value_count"] == 0:
        return math.inf
    mean = node["value_sum"] / node["value_count"]
    n = max(total_plays, 1)
    return mean + alpha * math.sqrt(2.0 * math.log(n) / node["visits"])


def _argmax_uct(
    nodes: list[Node], candidates: Sequence[int], total_plays: int, alpha: float
) -> int:
    best, best_score = candidates[0], -math.inf
    for c in candidates:  # strict '>' keeps the earliest child on ties
        score = uct(nodes[c], total_plays, alpha)
        if score > best_score:
            best, best_score = c, score
    return best


def responses_at_layer(tree: Tree, layer: int, *, include_pending: bool = True) -> int:
    """Responses at ``layer`` over the whole tree (plus plays in flight towards it)."""
    count = sum(1 for n in tree["nodes"] if n["type"] == "response" and n["layer"] == layer)
    if include_pending:
        count += sum(1 for f in tree["inflight"] if f["layer"] == layer)
    return count


def _child_layer(nodes: list[Node], model_idx: int) -> int:
    parent = nodes[nodes[model_idx]["parent"]]
    return 0 if parent["type"] == "root" else parent["layer"] + 1


def fully_expanded(tree: Tree, model_idx: int, width: int) -> bool:
    """Whether selection descends below this model node instead of generating at it."""
    nodes = tree["nodes"]
    model = nodes[model_idx]
    if not model["children"]:
        # Nothing to descend into (possible only when width < number of agents).
        return False
    if responses_at_layer(tree, _child_layer(nodes, model_idx)) < width:
        return False
    parent = nodes[model["parent"]]
    if parent["type"] == "root":
        return True
    parent_reward = parent["reward"]
    assert parent_reward is not None
    return any(
        (r := nodes[c]["reward"]) is not None and r > parent_reward for c in model["children"]
    )


def _top_k_responses(nodes: list[Node], model_idx: int, k: int) -> list[int]:
    children = nodes[model_idx]["children"]
    # Stable sort: among equal rewards the earlier child ranks first.
    ranked = sorted(children, key=lambda c: -float(nodes[c]["reward"]))  # type: ignore[arg-type]
    keep = set(ranked[:k])
    return [c for c in children if c in keep]  # creation order, for the UCT tie rule


def select_play(tree: Tree, params: SearchParams) -> tuple[Tree, Play]:
    """Run one selection from the root and return (new tree, the play to run).

    The returned tree has the fresh children added to response nodes visited for the first
    time, the play counted in ``plays`` and a virtual loss applied along its path.
    """
    nodes = list(tree["nodes"])
    total = tree["plays"]
    path = [0]
    current = 0
    while True:
        here = nodes[current]
        if here["type"] == "response" and not here["fresh_added"]:
            here = _add_fresh_children(nodes, current, tree["inflight"])
        chosen = _argmax_uct(nodes, here["children"], total, params.alpha)
        path.append(chosen)
        if not fully_expanded(Tree(**{**tree, "nodes": nodes}), chosen, params.width):
            break
        candidates = _top_k_responses(nodes, chosen, params.top_k_child)
        current = _argmax_uct(nodes, candidates, total, params.alpha)
        path.append(current)

    model = nodes[chosen]
    above = nodes[model["parent"]]
    layer = 0 if above["type"] == "root" else above["layer"] + 1
    refine = model["mode"] == "refine"
    play = Play(
        index=total,
        node=chosen,
        agent=str(model["agent"]),
        kind="refine" if refine else "fresh",
        parent_sample=above["sample"] if refine else None,
        parent_response=model["parent"] if above["type"] == "response" else -1,
        layer=layer,
        path=path,
    )
    _apply_path(nodes, path, visits=1, value=0.0, count=1)  # virtual loss
    inflight = [*tree["inflight"], InFlight(index=total, path=path, layer=layer)]
    return Tree(agents=tree["agents"], nodes=nodes, plays=total + 1, inflight=inflight), play


def _add_fresh_children(nodes: list[Node], resp_idx: int, inflight: Sequence[InFlight]) -> Node:
    """First visit of a response: one fresh model child per agent, stats from the root's
    children (without the virtual losses of plays still in flight)."""
    resp = nodes[resp_idx]
    children = list(resp["children"])
    for root_child in nodes[0]["children"]:
        src = nodes[root_child]
        virtual = sum(1 for f in inflight if root_child in f["path"])
        idx = len(nodes)
        nodes.append(
            _node(
                idx,
                "model",
                resp_idx,
                agent=src["agent"],
                mode="fresh",
                visits=src["visits"] - virtual,
                value_sum=src["value_sum"],
                value_count=src["value_count"] - virtual,
            )
        )
        children.append(idx)
    updated = Node(**{**resp, "children": children, "fresh_added": True})
    nodes[resp_idx] = updated
    return updated


def _apply_path(
    nodes: list[Node], path: Sequence[int], *, visits: int, value: float, count: int
) -> None:
    for idx in path:
        n = nodes[idx]
        nodes[idx] = Node(
            **{
                **n,
                "visits": n["visits"] + visits,
                "value_sum": n["value_sum"] + value,
                "value_count": n["value_count"] + count,
            }
        )


def record_result(
    tree: Tree,
    play: Play,
    *,
    sample_id: str,
    reward: float | None,
    params: SearchParams,
) -> Tree:
    """Record a finished play: remove its virtual loss, add the response node, back up.

    ``reward`` is the raw reward; ``None`` means the generation or its scoring failed:
    no response node is added and the play backs up a tree reward of 0 (a loss), so the
    search moves away from a failing agent instead of retrying it forever.
    """
    inflight = [f for f in tree["inflight"] if f["index"] != play["index"]]
    if len(inflight) == len(tree["inflight"]):
        raise ValueError(f"play {play['index']} is not in flight (recorded twice?)")
    nodes = list(tree["nodes"])
    _apply_path(nodes, play["path"], visits=-1, value=-0.0, count=-1)

    if reward is not None:
        model_idx = play["node"]
        idx = len(nodes)
        response = _node(
            idx,
            "response",
            model_idx,
            agent=play["agent"],
            sample=sample_id,
            reward=reward,
            layer=play["layer"],
        )
        nodes.append(response)
        # Its refine children, one per agent in agent order (fresh ones come at first visit).
        for name in tree["agents"]:
            child = len(nodes)
            nodes.append(_node(child, "model", idx, agent=name, mode="refine"))
            response["children"].append(child)
        model = nodes[model_idx]
        nodes[model_idx] = Node(**{**model, "children": [*model["children"], idx]})
        value = tree_reward(reward, params.tau)
    else:
        value = 0.0
    # path runs root -> ... -> model node: exactly "from the expanded model node to the root".
    _apply_path(nodes, play["path"], visits=1, value=value, count=1)
    return Tree(agents=tree["agents"], nodes=nodes, plays=tree["plays"], inflight=inflight)
