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
  1-based number of the play being selected (plays selected before it + 1: the reference's
  ``n_played = play_id + 1``); a child with no rewards scores +inf; among a model node's
  response children only the top-k by tree reward are considered; a tie goes to the
  earliest child.
* Expansion: a model node is *fully expanded* when the responses at its child layer,
  counted over the whole tree, number at least ``width`` and (its parent is the root, or
  one of its children beats the parent response's tree reward). Otherwise the play
  generates there. Rewards are compared as the reference compares them, after the
  sigmoid (two raw rewards that both saturate to 1.0 tie).
* Backup: the tree uses ``sigmoid(reward / tau)``; it is added to every node from the
  expanded model node up to the root (raw rewards stay in the samples).
* Determinism: children in creation order; nodes start with ``visits = 1`` and no rewards.

Several plays per step: a play selected but not yet recorded is *pending*. It counts as a
response at its layer (for ``width``) and, during the selections of the same step only,
as one more visit with a stand-in tree reward on every node of its path (an overlay; the
stored statistics hold real results only). ``SearchParams.pending`` picks the stand-in:

* ``"mean"`` (default): the chosen model node's current mean (the nearest ancestor's when
  it has none yet, 0 at the very start): the path keeps its value, so the next selection
  goes where the sequential search would most likely go next, instead of being pushed to
  a worse branch. On the simulated benchmark this keeps ``plays_per_step=4`` within 1% of
  one play per step (``benchmarks/README.md``).
* ``"zero"``: the classic virtual loss, a reward of 0 (spreads plays across branches).

With one play per step nothing is pending at selection time: the paper's algorithm.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, TypedDict

__all__ = [
    "PENDING_RULES",
    "InFlight",
    "Node",
    "PendingRule",
    "Play",
    "SearchParams",
    "Tree",
    "fully_expanded",
    "new_tree",
    "record_result",
    "responses_at_layer",
    "select_play",
    "select_plays",
    "sigmoid",
    "tree_reward",
    "uct",
]

NodeType = Literal["root", "model", "response"]
Mode = Literal["fresh", "refine"]
PendingRule = Literal["mean", "zero"]
PENDING_RULES: tuple[PendingRule, ...] = ("mean", "zero")


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
    value: float  # the stand-in tree reward on ``path`` until the result is recorded


class Tree(TypedDict):
    agents: list[str]
    nodes: list[Node]
    plays: int  # plays selected so far, including those in flight (the next N is plays + 1)
    inflight: list[InFlight]  # plays selected but not yet recorded (pending)


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
    pending: PendingRule = "mean"
    """Stand-in value of a pending play when several are selected per step (see above)."""

    def __post_init__(self) -> None:
        if self.pending not in PENDING_RULES:
            raise ValueError(f"pending must be one of {PENDING_RULES}, got {self.pending!r}")


def sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)


def tree_reward(raw: float, tau: float) -> float:
    """What the tree backs up for a raw reward: ``sigmoid(raw / tau)``.

    Computed as the reference does, ``1 / (1 + exp(-raw / tau))``, so that ties (and the
    saturation to 0.0 / 1.0) fall exactly where they fall there.
    """
    z = -raw / tau
    if z > 709.0:  # exp overflows; the reference's numpy gives 1 / (1 + inf) = 0.0
        return 0.0
    return 1.0 / (1.0 + math.exp(z))


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


Overlay = dict[int, tuple[int, float]]  # node -> (pending plays through it, their values)


def uct(node: Node, n_played: int, alpha: float, pending: tuple[int, float] = (0, 0.0)) -> float:
    """``mean(tree rewards) + alpha * sqrt(2 ln N / visits)``; +inf with no rewards yet.

    ``n_played`` is ``N``, the 1-based number of the play being selected. ``pending`` adds
    the stand-ins of plays in flight through this node (count, sum of values).
    """
    count = node["value_count"] + pending[0]
    if count == 0:
        return math.inf
    mean = (node["value_sum"] + pending[1]) / count
    n = max(n_played, 1)
    return mean + alpha * math.sqrt(2.0 * math.log(n) / (node["visits"] + pending[0]))


def _argmax_uct(
    nodes: list[Node], candidates: Sequence[int], n_played: int, alpha: float, overlay: Overlay
) -> int:
    best, best_score = candidates[0], -math.inf
    for c in candidates:  # strict '>' keeps the earliest child on ties
        score = uct(nodes[c], n_played, alpha, overlay.get(c, (0, 0.0)))
        if score > best_score:
            best, best_score = c, score
    return best


def responses_at_layer(tree: Tree, layer: int, *, include_pending: bool = True) -> int:
    """Responses at ``layer`` over the whole tree (plus plays in flight towards it)."""
    return _layer_counts(tree, include_pending=include_pending).get(layer, 0)


def _layer_counts(tree: Tree, *, include_pending: bool = True) -> dict[int, int]:
    """Responses per layer over the whole tree (plus plays in flight towards each layer),
    every layer in one pass."""
    counts: dict[int, int] = {}
    for n in tree["nodes"]:
        if n["type"] == "response":
            counts[n["layer"]] = counts.get(n["layer"], 0) + 1
    for f in tree["inflight"] if include_pending else ():
        counts[f["layer"]] = counts.get(f["layer"], 0) + 1
    return counts


def _child_layer(nodes: list[Node], model_idx: int) -> int:
    parent = nodes[nodes[model_idx]["parent"]]
    return 0 if parent["type"] == "root" else parent["layer"] + 1


def _value(node: Node, tau: float | None) -> float:
    raw = node["reward"]
    assert raw is not None
    return raw if tau is None else tree_reward(raw, tau)


def fully_expanded(
    tree: Tree,
    model_idx: int,
    width: int,
    tau: float | None = None,
    layer_counts: Mapping[int, int] | None = None,
) -> bool:
    """Whether selection descends below this model node instead of generating at it.

    With ``tau`` the "a child beats the parent" test compares tree rewards (as the search
    and the reference do); without it, raw rewards. ``layer_counts`` (from
    :func:`_layer_counts`) saves a pass over the tree per call.
    """
    nodes = tree["nodes"]
    model = nodes[model_idx]
    if not model["children"]:
        # Nothing to descend into (only when width < number of agents; the reference
        # crashes there, we generate).
        return False
    counts = _layer_counts(tree) if layer_counts is None else layer_counts
    if counts.get(_child_layer(nodes, model_idx), 0) < width:
        return False
    parent = nodes[model["parent"]]
    if parent["type"] == "root":
        return True
    bar = _value(parent, tau)
    return any(_value(nodes[c], tau) > bar for c in model["children"])


def _top_k_responses(nodes: list[Node], model_idx: int, k: int, tau: float) -> list[int]:
    children = nodes[model_idx]["children"]
    # Stable sort: among equal tree rewards the earlier child ranks first.
    ranked = sorted(children, key=lambda c: -_value(nodes[c], tau))
    keep = set(ranked[:k])
    return [c for c in children if c in keep]  # creation order, for the UCT tie rule


def _overlay(inflight: Sequence[InFlight]) -> Overlay:
    out: Overlay = {}
    for f in inflight:
        for idx in f["path"]:
            c, v = out.get(idx, (0, 0.0))
            out[idx] = (c + 1, v + f["value"])
    return out


def _stand_in(nodes: list[Node], path: Sequence[int], overlay: Overlay, rule: PendingRule) -> float:
    """The value a pending play stands in with (see the module docstring)."""
    if rule == "zero":
        return 0.0
    for idx in reversed(path):  # the chosen model node first, then its ancestors
        c, v = overlay.get(idx, (0, 0.0))
        count = nodes[idx]["value_count"] + c
        if count:
            return (nodes[idx]["value_sum"] + v) / count
    return 0.0


def select_play(tree: Tree, params: SearchParams) -> tuple[Tree, Play]:
    """Run one selection from the root and return (new tree, the play to run).

    The returned tree has the fresh children added to response nodes visited for the first
    time, the play counted in ``plays`` and recorded as pending in ``inflight``.
    """
    return _select(tree, params, _layer_counts(tree))


def select_plays(tree: Tree, params: SearchParams, k: int) -> tuple[Tree, list[Play]]:
    """``k`` selections in a row (one step of ``plays_per_step`` plays): the same plays
    and tree as ``k`` calls of :func:`select_play`, counting responses per layer once."""
    counts = _layer_counts(tree)
    plays: list[Play] = []
    for _ in range(k):
        tree, play = _select(tree, params, counts)
        counts[play["layer"]] = counts.get(play["layer"], 0) + 1  # now in flight there
        plays.append(play)
    return tree, plays


def _select(tree: Tree, params: SearchParams, counts: Mapping[int, int]) -> tuple[Tree, Play]:
    """:func:`select_play` given the tree's :func:`_layer_counts` (selection adds only
    model nodes, never responses, so one count serves the whole descent)."""
    nodes = list(tree["nodes"])
    n_played = tree["plays"] + 1  # the reference's n_played = play_id + 1
    overlay = _overlay(tree["inflight"])
    path = [0]
    current = 0
    while True:
        here = nodes[current]
        if here["type"] == "response" and not here["fresh_added"]:
            here = _add_fresh_children(nodes, current)
        chosen = _argmax_uct(nodes, here["children"], n_played, params.alpha, overlay)
        path.append(chosen)
        view = Tree(agents=tree["agents"], nodes=nodes, plays=0, inflight=tree["inflight"])
        if not fully_expanded(view, chosen, params.width, params.tau, counts):
            break
        candidates = _top_k_responses(nodes, chosen, params.top_k_child, params.tau)
        current = _argmax_uct(nodes, candidates, n_played, params.alpha, overlay)
        path.append(current)

    model = nodes[chosen]
    above = nodes[model["parent"]]
    layer = 0 if above["type"] == "root" else above["layer"] + 1
    refine = model["mode"] == "refine"
    play = Play(
        index=tree["plays"],
        node=chosen,
        agent=str(model["agent"]),
        kind="refine" if refine else "fresh",
        parent_sample=above["sample"] if refine else None,
        parent_response=model["parent"] if above["type"] == "response" else -1,
        layer=layer,
        path=path,
    )
    pending = InFlight(
        index=play["index"],
        path=path,
        layer=layer,
        value=_stand_in(nodes, path, overlay, params.pending),
    )
    return Tree(
        agents=tree["agents"],
        nodes=nodes,
        plays=tree["plays"] + 1,
        inflight=[*tree["inflight"], pending],
    ), play


def _add_fresh_children(nodes: list[Node], resp_idx: int) -> Node:
    """First visit of a response: one fresh model child per agent, stats copied from the
    root's children (real results only: pending plays live in the overlay)."""
    resp = nodes[resp_idx]
    children = list(resp["children"])
    for root_child in nodes[0]["children"]:
        src = nodes[root_child]
        idx = len(nodes)
        nodes.append(
            _node(
                idx,
                "model",
                resp_idx,
                agent=src["agent"],
                mode="fresh",
                visits=src["visits"],
                value_sum=src["value_sum"],
                value_count=src["value_count"],
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
    """Record a finished play: it stops being pending; add the response node, back up.

    ``reward`` is the raw reward; ``None`` means the generation or its scoring failed:
    no response node is added and the play backs up a tree reward of 0 (a loss), so the
    search moves away from a failing agent instead of retrying it forever.
    """
    inflight = [f for f in tree["inflight"] if f["index"] != play["index"]]
    if len(inflight) == len(tree["inflight"]):
        raise ValueError(f"play {play['index']} is not in flight (recorded twice?)")
    nodes = list(tree["nodes"])

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
