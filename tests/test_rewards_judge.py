"""The LLM judge's one retry layer, its HTTP 400 fallbacks (logged once, counted) and the
counters that wrappers forward to a run summary."""

from __future__ import annotations

import asyncio
import logging
from types import SimpleNamespace
from typing import Any

import httpx
import openai
import pytest

from toa_graph.rewards import LazyReward, reward_counters
from toa_graph.rewards.embedded import EmbeddedReward
from toa_graph.rewards.judge import JudgeReward


def _entry(token: str, tops: dict[str, float]) -> dict[str, Any]:
    import math

    return {
        "token": token,
        "logprob": math.log(tops.get(token, 1.0)),
        "top_logprobs": [{"token": t, "logprob": math.log(p)} for t, p in tops.items()],
    }


def _reply(text: str, content: list[dict[str, Any]] | None = None) -> Any:
    logprobs = SimpleNamespace(content=content) if content is not None else None
    choice = SimpleNamespace(message=SimpleNamespace(content=text), logprobs=logprobs)
    return SimpleNamespace(choices=[choice])


def _status_error(status: int) -> openai.APIStatusError:
    request = httpx.Request("POST", "http://127.0.0.1:9/v1/chat/completions")
    response = httpx.Response(status, request=request)
    cls = openai.BadRequestError if status == 400 else openai.InternalServerError
    return cls(f"HTTP {status}", response=response, body=None)


class Server:
    """A fake ``chat.completions`` endpoint: 400 for any request using a feature in
    ``rejects`` (``constraint``, ``prefill``, ``logprobs``); the first ``fail_first``
    requests get a 503. Answers rate "7" (with logprobs when asked)."""

    def __init__(self, rejects: set[str], fail_first: int = 0) -> None:
        self.rejects, self.fail_first = rejects, fail_first
        self.calls: list[dict[str, Any]] = []

    async def create(self, **kw: Any) -> Any:
        self.calls.append(kw)
        await asyncio.sleep(0.01)  # let concurrent requests overlap
        if len(self.calls) <= self.fail_first:
            raise _status_error(503)
        extra = kw.get("extra_body") or {}
        used = {
            "constraint": "structured_outputs" in extra,
            "prefill": bool(extra.get("continue_final_message")),
            "logprobs": bool(kw.get("logprobs")),
        }
        if any(used[f] for f in self.rejects):
            raise _status_error(400)
        if used["logprobs"]:
            return _reply("7", [_entry("7", {"7": 1.0})])
        return _reply("Rating: 7/10")


def _judge(server: Server, **kw: Any) -> JudgeReward:
    judge = JudgeReward(model="m", base_url="http://127.0.0.1:9/v1", **kw)
    client = SimpleNamespace(chat=SimpleNamespace(completions=server))
    judge._get_client = lambda: client  # type: ignore[method-assign]
    judge._sem = asyncio.Semaphore(8)
    return judge


def _fallback_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "toa_graph.rewards.judge" and r.levelno == logging.WARNING
    ]


async def test_a_400_on_logprobs_falls_back_to_text_once_logged_once_and_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    server = Server(rejects={"logprobs"})
    judge = _judge(server, constrain=False, prefill=False)
    scores = await judge.ascore("q?", [f"answer {i}" for i in range(6)])  # concurrent
    scores += await judge.ascore("q2?", ["another"])
    assert scores == [7.0] * 7
    warnings = _fallback_warnings(caplog)
    assert len(warnings) == 1 and "logprob ratings" in warnings[0], warnings
    assert "parsed from the reply text" in warnings[0]
    counts = judge.counters()
    assert counts["judge_fallbacks"] == 1 and counts["judge_text_ratings"] == 7
    # the 6 concurrent first requests each hit the 400 once, then every one asked without
    rejected = [c for c in server.calls if c.get("logprobs")]
    assert len(rejected) == 6 and counts["judge_requests"] == len(server.calls) == 6 + 7
    assert judge.use_logprobs is False


async def test_concurrent_400s_drop_only_the_feature_the_server_rejects(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    server = Server(rejects={"constraint"})
    judge = _judge(server)
    scores = await judge.ascore("q?", [f"a{i}" for i in range(8)])
    assert scores == [7.0] * 8
    # many requests saw the 400 at once: the constraint goes, prefill and logprobs stay
    assert (judge.constrain, judge.prefill, judge.use_logprobs) == (False, True, True)
    assert len(_fallback_warnings(caplog)) == 1
    assert judge.counters()["judge_fallbacks"] == 1
    assert judge.counters()["judge_text_ratings"] == 0  # logprob ratings throughout


async def test_a_400_without_features_left_is_an_error_not_a_loop() -> None:
    class AlwaysBad(Server):
        async def create(self, **kw: Any) -> Any:
            self.calls.append(kw)
            raise _status_error(400)

    bad = AlwaysBad(set())
    judge = _judge(bad)
    from toa_graph.rewards.base import RewardError

    with pytest.raises(RewardError, match="request failed"):
        await judge.ascore("q?", ["a"])
    assert len(bad.calls) == 4  # with all three features, then without each in turn
    assert judge.counters()["judge_fallbacks"] == 3


async def test_transient_errors_are_retried_by_the_judge_policy_only() -> None:
    server = Server(rejects=set(), fail_first=2)
    judge = _judge(server, max_retries=2)
    judge.retry = type(judge.retry)(attempts=3, backoff_s=0.001)
    assert await judge.ascore("q?", ["a"]) == [7.0]
    counts = judge.counters()
    assert counts["judge_requests"] == 3 and counts["judge_retries"] == 2
    assert counts["judge_fallbacks"] == 0


async def test_wrappers_forward_the_judge_counters() -> None:
    server = Server(rejects={"logprobs"})
    judge = _judge(server, constrain=False, prefill=False)
    wrapper = EmbeddedReward(judge=judge, load_math=False)
    await wrapper.ascore("q?", ["a"])
    assert reward_counters(wrapper) == judge.counters()
    assert reward_counters(wrapper)["judge_fallbacks"] == 1
    lazy = LazyReward(SimpleNamespace(kind="embedded"))
    assert reward_counters(lazy) == {}  # nothing loaded yet
    lazy._model = wrapper
    assert reward_counters(lazy)["judge_text_ratings"] == 1
    assert reward_counters(object()) is None  # no counters() at all


async def test_the_batching_layer_reports_its_counters_and_its_scorers() -> None:
    from toa_graph.rewards.batching import BatchingReward

    class Scorer:
        def prepare(self, prompt: Any, response: str, reference: str | None = None) -> Any:
            return SimpleNamespace(text=response, n_tokens=len(response))

        def score_batch(self, items: Any) -> list[float]:
            return [float(i.n_tokens) for i in items]

        def counters(self) -> dict[str, int]:
            return {"scorer_events": 3}

    reward = BatchingReward(Scorer(), max_wait_ms=0)
    assert await reward.ascore("q", ["ab", "abcd"]) == [2.0, 4.0]
    counts = reward_counters(reward)
    assert counts["batching_calls"] == 1 and counts["batching_items"] == 2
    assert counts["scorer_events"] == 3 and "batching_forward_s" not in counts
