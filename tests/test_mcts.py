"""Every TOA tree-search rule of docs/design.md, on the pure module (no LangGraph, no LLM)."""

from __future__ import annotations

import json
import math

import pytest

from toa_graph import mcts
from toa_graph.mcts import SearchParams, new_tree, record_result, select_play


def run(tree, params, reward_of, n):
    """Play n times, one play per step; reward_of(play) -> raw reward or None."""
    plays = []
    for _ in range(n):
        tree, play = select_play(tree, params)
        tree = record_result(
            tree, play, sample_id=f"s{play['index']}", reward=reward_of(play), params=params
        )
        plays.append((play["agent"], play["kind"], play["parent_sample"]))
    return tree, plays


def node_of_sample(tree, sid):
    return next(n for n in tree["nodes"] if n["sample"] == sid)


def test_new_tree_has_one_fresh_model_child_per_agent_in_order():
    t = new_tree(["a", "b", "c"])
    root = t["nodes"][0]
    assert root["type"] == "root" and root["visits"] == 1 and root["value_count"] == 0
    kids = [t["nodes"][i] for i in root["children"]]
    assert [k["agent"] for k in kids] == ["a", "b", "c"]
    assert all(k["type"] == "model" and k["mode"] == "fresh" and k["visits"] == 1 for k in kids)
    with pytest.raises(ValueError):
        new_tree([])
    with pytest.raises(ValueError):
        new_tree(["a", "a"])


def test_uct_formula_uses_mean_tree_reward_and_global_play_count():
    node = mcts._node(0, "model", -1, visits=4, value_sum=1.5, value_count=3)
    expected = 0.5 + 0.3 * math.sqrt(2 * math.log(10) / 4)
    assert mcts.uct(node, n_played=10, alpha=0.3) == pytest.approx(expected)
    # Exploration grows with the *global* count N, not the node's parent visits.
    assert mcts.uct(node, n_played=100, alpha=0.3) > mcts.uct(node, n_played=10, alpha=0.3)


def test_unvisited_child_scores_infinity_and_is_chosen_first():
    node = mcts._node(0, "model", -1)
    assert mcts.uct(node, n_played=50, alpha=0.01) == math.inf
    params = SearchParams(width=10, alpha=0.0)
    # Every agent is tried once before any is tried twice, in agent order.
    _, plays = run(new_tree(["a", "b", "c"]), params, lambda p: 1.0, 3)
    assert [p[0] for p in plays] == ["a", "b", "c"]


def test_selection_prefers_higher_mean_when_all_visited():
    params = SearchParams(width=100, alpha=0.0, tau=1.0)
    rewards = {"a": -1.0, "b": 2.0, "c": 0.0}
    _, plays = run(new_tree(["a", "b", "c"]), params, lambda p: rewards[p["agent"]], 6)
    assert [p[0] for p in plays] == ["a", "b", "c", "b", "b", "b"]


def test_global_play_count_drives_exploration_in_selection():
    # alpha large: after every child is visited once, exploration bonus depends on
    # ln N / visits; with equal means the least-visited child wins.
    params = SearchParams(width=100, alpha=10.0, tau=1.0)
    _, plays = run(new_tree(["a", "b"]), params, lambda p: 0.0, 6)
    assert [p[0] for p in plays] == ["a", "b", "a", "b", "a", "b"]


def test_tree_backs_up_sigmoid_of_reward_over_tau_along_the_path():
    params = SearchParams(width=1, tau=0.5)
    t = new_tree(["a", "b"])
    t, play = select_play(t, params)
    t = record_result(t, play, sample_id="s0", reward=0.3, params=params)
    v = 1 / (1 + math.exp(-0.3 / 0.5))
    root, model = t["nodes"][0], t["nodes"][play["node"]]
    for n in (root, model):
        assert n["value_sum"] == pytest.approx(v)
        assert n["value_count"] == 1
        assert n["visits"] == 2  # starts at 1, +1 per backed-up play
    resp = node_of_sample(t, "s0")
    assert resp["reward"] == 0.3  # the raw reward is kept on the response
    assert resp["value_count"] == 0  # backup starts at the expanded model node
    assert t["nodes"][play["node"] % 2 + 1]["value_count"] == 0  # the sibling untouched
    assert mcts.tree_reward(0.3, 0.5) == pytest.approx(v)


def test_response_gets_refine_children_in_agent_order():
    params = SearchParams(width=5)
    t = new_tree(["a", "b", "c"])
    t, play = select_play(t, params)
    t = record_result(t, play, sample_id="s0", reward=1.0, params=params)
    resp = node_of_sample(t, "s0")
    kids = [t["nodes"][i] for i in resp["children"]]
    assert [(k["agent"], k["mode"]) for k in kids] == [
        ("a", "refine"),
        ("b", "refine"),
        ("c", "refine"),
    ]
    assert not resp["fresh_added"]


def test_fresh_children_added_at_first_visit_with_stats_copied_from_root_children():
    params = SearchParams(width=2, alpha=0.0, tau=1.0)
    t, _ = run(new_tree(["a", "b"]), params, lambda p: {"a": 1.0, "b": 0.0}[p["agent"]], 2)
    root_kids = [dict(t["nodes"][i]) for i in t["nodes"][0]["children"]]
    t2, play = select_play(t, params)  # third play descends into s0 (first visit)
    resp = node_of_sample(t2, "s0")
    assert resp["fresh_added"]
    kids = [t2["nodes"][i] for i in resp["children"]]
    assert [(k["agent"], k["mode"]) for k in kids] == [
        ("a", "refine"), ("b", "refine"), ("a", "fresh"), ("b", "fresh"),
    ]  # fmt: skip
    for fresh, src in zip(kids[2:], root_kids, strict=True):
        assert (fresh["visits"], fresh["value_sum"], fresh["value_count"]) == (
            src["visits"], src["value_sum"], src["value_count"],
        )  # fmt: skip
    # the argument tree was not mutated (copy-on-write)
    assert not node_of_sample(t, "s0")["fresh_added"]
    assert play["kind"] == "refine" and play["parent_sample"] == "s0"


def test_fresh_child_play_generates_from_prompt_alone():
    params = SearchParams(width=1, alpha=0.0, tau=1.0)
    t = new_tree(["a"])
    # s0 (fresh, reward 1) then its refine child s1 (reward 0): the refine node now has a
    # lower mean than the fresh child under s0 (stats copied from the root's, mean 1), so
    # the third play goes to that fresh child, one layer down.
    t, _ = run(t, params, lambda p: 1.0 if p["index"] == 0 else 0.0, 2)
    s0 = node_of_sample(t, "s0")
    t, play = select_play(t, params)
    fresh_under_s0 = t["nodes"][play["node"]]
    assert fresh_under_s0["type"] == "model" and fresh_under_s0["mode"] == "fresh"
    assert fresh_under_s0["parent"] == s0["id"], "the play must reach a fresh child of s0"
    assert play["parent_response"] == s0["id"] and play["layer"] == 1
    # ... and it generates from the prompt alone: a fresh play, no sample to refine
    assert play["kind"] == "fresh" and play["parent_sample"] is None


def test_width_is_counted_over_the_whole_layer():
    params = SearchParams(width=3, alpha=0.0, tau=1.0)
    t = new_tree(["a", "b", "c"])
    t, _ = run(t, params, lambda p: {"a": 1.0, "b": 0.5, "c": 0.0}[p["agent"]], 2)
    # a and b have one response each: layer 0 holds 2 < width 3 -> nobody fully expanded
    assert mcts.responses_at_layer(t, 0) == 2
    a_model = t["nodes"][0]["children"][0]
    assert not mcts.fully_expanded(t, a_model, 3)
    t, _ = run(t, params, lambda p: 0.0, 1)  # c answers: layer 0 now holds 3
    assert mcts.responses_at_layer(t, 0) == 3
    # a has a single child but the *layer* has reached width: a is fully expanded
    assert len(t["nodes"][a_model]["children"]) == 1
    assert mcts.fully_expanded(t, a_model, 3)


def test_model_under_response_needs_a_child_beating_the_parent():
    params = SearchParams(width=1, alpha=0.0, tau=1.0)
    t = new_tree(["a"])
    t, _ = run(t, params, lambda p: 1.0, 1)  # s0 = 1.0 at layer 0
    t, play = select_play(t, params)  # a refines s0
    assert play["kind"] == "refine" and play["parent_sample"] == "s0"
    # equal to the parent is not "beating" it (strict), so refine-a is not fully expanded;
    # with an equal mean, refine-a also ties its fresh sibling and wins as the earlier child
    t = record_result(t, play, sample_id="s1", reward=1.0, params=params)
    refine_a = play["node"]
    assert mcts.responses_at_layer(t, 1) >= 1
    assert not mcts.fully_expanded(t, refine_a, 1)  # no child beats 1.0 -> keep generating
    t, play = select_play(t, params)
    t = record_result(t, play, sample_id="s2", reward=2.0, params=params)
    assert play["node"] == refine_a
    assert mcts.fully_expanded(t, refine_a, 1)  # s2 beats s0 -> fully expanded


def test_top_k_response_children_by_reward():
    params = SearchParams(width=1, alpha=0.0, tau=1.0, top_k_child=1)
    t = new_tree(["a"])
    rewards = iter([0.1, 0.9, 0.5])
    # width=1 but the root model keeps generating? No: after s0 it is fully expanded. Build
    # three responses under the root's model node by hand through plays at width 3.
    wide = SearchParams(width=3, alpha=0.0, tau=1.0)
    t, _plays = run(t, wide, lambda p: next(rewards), 3)
    a_model = t["nodes"][0]["children"][0]
    assert len(t["nodes"][a_model]["children"]) == 3
    # top-1: the 0.9 response (s1) is the only candidate, whatever its UCT
    _t1, play = select_play(t, params)
    assert play["parent_sample"] == "s1"
    # top-2 considers s1 (0.9) and s2 (0.5); both unvisited (+inf): the earliest, s1, wins;
    # make s1 look bad in the tree to see top-2 pick s2 instead
    nodes = list(t["nodes"])
    s1 = node_of_sample(t, "s1")
    nodes[s1["id"]] = {**s1, "value_sum": 0.0, "value_count": 5, "visits": 6}
    s2 = node_of_sample(t, "s2")
    nodes[s2["id"]] = {**s2, "value_sum": 4.0, "value_count": 5, "visits": 6}
    s0 = node_of_sample(t, "s0")
    nodes[s0["id"]] = {**s0, "value_sum": 5.0, "value_count": 5, "visits": 6}
    rigged = {**t, "nodes": nodes}
    _, p2 = select_play(rigged, SearchParams(width=3, alpha=0.0, tau=1.0, top_k_child=2))
    assert p2["parent_sample"] == "s2"  # s0 has the best UCT but is not in the top-2
    _, p1 = select_play(rigged, SearchParams(width=3, alpha=0.0, tau=1.0, top_k_child=1))
    assert p1["parent_sample"] == "s1"


def test_ties_go_to_the_earliest_child():
    params = SearchParams(width=100, alpha=0.0, tau=1.0)
    # all rewards equal: after the first round the means tie; 'a' (earliest) always wins
    _, plays = run(new_tree(["a", "b", "c"]), params, lambda p: 0.0, 6)
    assert [p[0] for p in plays] == ["a", "b", "c", "a", "a", "a"]


def test_hand_computed_play_sequence():
    """Two agents, width 2, alpha 0, tau 1; a's answers score 1, b's score 0 (see docs)."""
    params = SearchParams(width=2, alpha=0.0, tau=1.0)
    _, plays = run(new_tree(["a", "b"]), params, lambda p: {"a": 1.0, "b": 0.0}[p["agent"]], 5)
    assert plays == [
        ("a", "fresh", None),
        ("b", "fresh", None),
        ("a", "refine", "s0"),  # s0 first visit; its refine-a child is unvisited (+inf)
        ("b", "refine", "s0"),  # refine-b still unvisited
        ("a", "refine", "s0"),  # refine-a (0.731) ties fresh-a; earliest wins; s2 does not beat s0
    ]


def test_failed_play_backs_up_a_loss_and_adds_no_response():
    params = SearchParams(width=5, tau=1.0)
    t = new_tree(["a", "b"])
    t, play = select_play(t, params)
    t = record_result(t, play, sample_id="s0", reward=None, params=params)
    assert not any(n["type"] == "response" for n in t["nodes"])
    model = t["nodes"][play["node"]]
    assert model["value_count"] == 1 and model["value_sum"] == 0.0
    assert t["plays"] == 1 and t["inflight"] == []


def test_virtual_loss_spreads_parallel_plays_and_is_removed():
    params = SearchParams(width=10, alpha=0.0, tau=1.0)
    t = new_tree(["a", "b", "c"])
    picked = []
    plays = []
    for _ in range(3):  # one step of three plays
        t, play = select_play(t, params)
        plays.append(play)
        picked.append(play["agent"])
    assert picked == ["a", "b", "c"]  # virtual loss made the selected child "visited"
    assert len(t["inflight"]) == 3
    assert mcts.responses_at_layer(t, 0) == 3  # pending plays count towards width
    for play in plays:
        t = record_result(t, play, sample_id=f"s{play['index']}", reward=0.0, params=params)
    root = t["nodes"][0]
    assert root["visits"] == 4 and root["value_count"] == 3
    assert root["value_sum"] == pytest.approx(1.5)
    assert t["inflight"] == []
    with pytest.raises(ValueError):
        record_result(t, plays[0], sample_id="s0", reward=0.0, params=params)


@pytest.mark.parametrize("k", [2, 4, 7])
def test_select_plays_is_k_select_play_calls(k):
    """A step's selections in one call (counting responses per layer once) give the same
    plays and tree as k single selections, step after step, with width binding."""
    params = SearchParams(width=5, alpha=0.05, tau=0.1, top_k_child=2)
    one = many = new_tree(["x", "y", "z"])
    for _ in range(12):
        singles = []
        for _ in range(k):
            one, play = select_play(one, params)
            singles.append(play)
        many, batch = mcts.select_plays(many, params, k)
        assert batch == singles and many == one
        for play in batch:
            r = (hash((play["agent"], play["kind"], play["index"])) % 97) / 97 - 0.3
            r = None if play["index"] % 11 == 5 else r  # a failed play now and then
            kw = dict(sample_id=f"s{play['index']}", reward=r, params=params)
            one = record_result(one, play, **kw)
            many = record_result(many, play, **kw)
    assert max(n["layer"] for n in one["nodes"] if n["type"] == "response") >= 2


def test_one_play_per_step_is_deterministic_and_serialisable():
    params = SearchParams(width=4, alpha=0.05, tau=0.1)

    def reward(p):
        return (hash((p["agent"], p["kind"], p["parent_sample"], p["index"])) % 1000) / 1000

    t1, plays1 = run(new_tree(["x", "y", "z"]), params, reward, 40)
    t2, plays2 = run(new_tree(["x", "y", "z"]), params, reward, 40)
    assert plays1 == plays2
    assert json.loads(json.dumps(t1)) == t1  # plain JSON data
    assert t1 == t2
    # every refine parent is an existing response
    samples = {n["sample"] for n in t1["nodes"] if n["type"] == "response"}
    assert all(p[2] in samples for p in plays1 if p[1] == "refine")


def test_n_is_the_one_based_number_of_the_play_being_selected():
    """Near tie at the 5th play: N = 5 (reference: n_played = play_id + 1) picks a; the old
    N = 4 (plays finished) would pick b."""
    params = SearchParams(width=100, alpha=0.2, tau=1.0)
    rewards = {"a": 0.2, "b": 0.5}
    t, plays = run(new_tree(["a", "b"]), params, lambda p: rewards[p["agent"]], 4)
    assert [p[0] for p in plays] == ["a", "b", "b", "b"]
    a, b = (t["nodes"][i] for i in t["nodes"][0]["children"])
    assert (a["visits"], b["visits"]) == (2, 4)
    # the two UCTs differ by less than 0.002 and swap order between N = 4 and N = 5
    assert mcts.uct(a, 5, 0.2) > mcts.uct(b, 5, 0.2)
    assert mcts.uct(a, 4, 0.2) < mcts.uct(b, 4, 0.2)
    assert abs(mcts.uct(a, 5, 0.2) - mcts.uct(b, 5, 0.2)) < 0.002
    _, play = select_play(t, params)
    assert play["agent"] == "a" and play["index"] == 4


def test_rewards_are_compared_after_the_sigmoid_as_in_the_reference():
    # tau 0.1: raw 5 and 6 both give a tree reward of exactly 1.0, so the refinement (6)
    # does not "beat" its parent (5) and the refine node stays open.
    params = SearchParams(width=1, alpha=0.0, tau=0.1)
    assert mcts.tree_reward(5.0, 0.1) == mcts.tree_reward(6.0, 0.1) == 1.0
    t, plays = run(new_tree(["a"]), params, lambda p: 5.0 if p["kind"] == "fresh" else 6.0, 2)
    assert plays[1] == ("a", "refine", "s0")
    refine_a = node_of_sample(t, "s1")["parent"]
    assert not mcts.fully_expanded(t, refine_a, 1, tau=0.1)
    assert mcts.fully_expanded(t, refine_a, 1)  # raw rewards: 6 > 5


def test_pending_mean_keeps_the_best_branch_and_zero_spreads():
    params1 = SearchParams(width=100, alpha=0.01, tau=0.1)
    good = {"a": 0.0, "b": 1.0, "c": 0.2}
    t, _ = run(new_tree(["a", "b", "c"]), params1, lambda p: good[p["agent"]], 3)
    picks = {}
    for rule in ("mean", "zero"):
        tt, agents = t, []
        for _ in range(3):  # one step of three plays
            tt, play = select_play(tt, SearchParams(width=100, alpha=0.01, tau=0.1, pending=rule))
            agents.append(play["agent"])
        picks[rule] = agents
        assert len(tt["inflight"]) == 3
        # pending plays are an overlay: the stored statistics hold real results only
        assert tt["nodes"][0]["visits"] == t["nodes"][0]["visits"]
    # sequentially, b (clearly best) would be chosen three times
    assert picks["mean"] == ["b", "b", "b"]
    assert picks["zero"] == ["b", "c", "a"]
    with pytest.raises(ValueError):
        SearchParams(pending="bogus")  # type: ignore[arg-type]


def test_pending_value_of_an_unvisited_node_comes_from_its_nearest_visited_ancestor():
    params = SearchParams(width=100, alpha=0.0, tau=1.0)
    t, _ = run(new_tree(["a", "b"]), params, lambda p: 1.0, 1)  # a answered; b unvisited
    t, play = select_play(t, params)
    assert play["agent"] == "b"
    assert t["inflight"][0]["value"] == pytest.approx(mcts.tree_reward(1.0, 1.0))  # root's mean
    fresh, _ = select_play(new_tree(["a", "b"]), params)
    assert fresh["inflight"][0]["value"] == 0.0  # nothing known yet anywhere
