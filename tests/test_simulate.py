"""The simulated benchmark world: hidden skills, refinement, noisy reward, determinism."""

from __future__ import annotations

import pytest
from langchain_core.messages import HumanMessage

from toa_graph.prompts import REFINE_TEMPLATE
from toa_graph.simulate import (
    DEFAULT_AGENTS,
    SimReward,
    SimWorld,
    sim_agents,
    sim_prompts,
    true_quality,
)

PROMPT = sim_prompts(1, start=5)[0]["prompt"]


def test_same_seed_same_world_other_seed_other_world():
    a, b, c = SimWorld(seed=1), SimWorld(seed=1), SimWorld(seed=2)
    assert a.skill("sim-a", 5) == b.skill("sim-a", 5) != c.skill("sim-a", 5)
    assert a.fresh("sim-b", 5, "#0") == b.fresh("sim-b", 5, "#0") != a.fresh("sim-b", 5, "#1")


def test_skills_vary_by_task_around_the_agent_skill():
    w = SimWorld(seed=0)
    skills = [w.skill("sim-a", t) for t in range(400)]
    mean = sum(skills) / len(skills)
    assert mean == pytest.approx(DEFAULT_AGENTS[0].skill, abs=0.02)
    assert max(skills) - min(skills) > 0.2  # the affinity spread is real


def test_refine_moves_towards_the_agent_ceiling():
    w = SimWorld(seed=0, refine_sd=0.0)
    spec = w.spec("sim-d")
    ceiling = w.skill("sim-d", 5) + spec.refine_lift
    for shown in (0.2, ceiling, 1.5):
        q = w.refine("sim-d", 5, shown, "n")
        assert q == pytest.approx(shown + spec.refine_rate * (ceiling - shown))
    assert w.refine("sim-d", 5, 1.5, "n") < 1.5  # a weak refiner can make a strong answer worse


def test_reward_is_true_quality_plus_a_fixed_noise_per_answer():
    exact = SimWorld(seed=0, reward_sd=0.0)
    agent = sim_agents(exact)["sim-a"]
    text = agent.invoke([HumanMessage(PROMPT)]).content
    assert isinstance(text, str)
    q = true_quality(text)
    assert q is not None and SimReward(exact)(None, [text]) == [q]
    noisy = SimWorld(seed=0)
    r1, r2 = SimReward(noisy)(None, [text, text])
    assert r1 == r2 != q  # the same answer always gets the same (noisy) reward
    assert SimReward(noisy)(None, ["plain text"]) == [0.0] and true_quality("plain") is None


def test_repeated_requests_differ_and_fresh_agents_replay_them():
    w = SimWorld(seed=4)
    first = [sim_agents(w)["sim-c"] for _ in range(2)]
    runs = [[m.invoke([HumanMessage(PROMPT)]).content for _ in range(3)] for m in first]
    assert runs[0] == runs[1]  # reproducible from fresh agents
    assert len(set(runs[0])) == 3  # repeated samples differ


def test_refine_prompt_builds_on_the_shown_answer_and_pays_its_tokens():
    w = SimWorld(seed=0, refine_sd=0.0)
    agents = sim_agents(w)
    parent = agents["sim-e"].invoke([HumanMessage(PROMPT)])
    parent_q = true_quality(str(parent.content))
    text = REFINE_TEMPLATE.format(question=PROMPT, answer=parent.content)
    child = agents["sim-d"].invoke([HumanMessage(text)])
    assert true_quality(str(child.content)) == pytest.approx(
        w.refine("sim-d", 5, parent_q, "x"), abs=1e-6
    )
    fresh_in = parent.usage_metadata["input_tokens"]
    assert fresh_in == w.question_tokens
    assert child.usage_metadata["input_tokens"] == fresh_in + parent.usage_metadata["output_tokens"]


def test_parallel_plays_benchmark_script_runs(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    cmd = [sys.executable, str(root / "benchmarks" / "parallel_plays.py"), "--tasks", "3",
           "--seeds", "1", "--budget", "12", "--graph-check", "1", "--latency", "0"]  # fmt: skip
    out = subprocess.run(
        cmd, capture_output=True, text=True, check=True, cwd=root, env={"PYTHONPATH": str(root)}
    ).stdout
    assert "3 tasks x 1 seeds = 3 prompts" in out
    assert out.count("best answer = pure run's") == 3
    lines = [ln.split() for ln in out.splitlines() if ln.strip().startswith(("1 ", "4 "))]
    assert [(ln[0], ln[1]) for ln in lines] == [("1", "(paper)"), ("4", "zero"), ("4", "mean")]
