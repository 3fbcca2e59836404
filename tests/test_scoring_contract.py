"""The one scoring contract (toa_graph.rewards.base, sampling.score_samples): a NaN among
four scores fails exactly that sample, whichever shipped reward kind (or plain callable)
produced it. Each case builds the shipped reward (from its config where that loads no
weights) and replaces only its innermost scorer (the model forward, the HTTP request, the
metric) with one that returns NaN for the response containing "bad"."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pytest

from toa_graph.config import RewardAdapter
from toa_graph.rewards import as_reward_model, build_reward
from toa_graph.rewards.base import RewardModel
from toa_graph.sampling import score_samples
from toa_graph.state import Sample

RESPONSES = ["fine one", "fine two", "bad three", "fine four"]


def _score(text: str) -> float:
    return math.nan if "bad" in text else float(len(text))


def one_nan(prompt: Any, responses: list[str]) -> list[float]:
    """A ``python`` reward target (importable as tests.test_scoring_contract:one_nan)."""
    return [_score(r) for r in responses]


@dataclass
class _Item:
    text: str
    n_tokens: int = 1


class _Scorer:
    """A PairScorer standing in for a transformers / COMET forward pass."""

    name = "fake-forward"
    padded = True

    def prepare(self, prompt: Any, response: str, reference: str | None = None) -> _Item:
        return _Item(response)

    def score_batch(self, items: Sequence[_Item]) -> list[float]:
        return [_score(it.text) for it in items]


def _callable(mp: pytest.MonkeyPatch) -> RewardModel:
    return as_reward_model(one_nan)


def _python(mp: pytest.MonkeyPatch) -> RewardModel:
    cfg = RewardAdapter.validate_python(
        {"kind": "python", "target": "tests.test_scoring_contract:one_nan"}
    )
    return build_reward(cfg)


def _math(mp: pytest.MonkeyPatch) -> RewardModel:
    from toa_graph.rewards.math import MathReward

    # a 0/1 check cannot produce a NaN itself: its scoring function stands in
    mp.setattr(MathReward, "score", lambda self, responses, refs: [_score(r) for r in responses])
    return build_reward(RewardAdapter.validate_python({"kind": "math"}))


def _reference(mp: pytest.MonkeyPatch) -> RewardModel:
    from toa_graph.rewards import reference

    mp.setattr(reference, "chrf_scores", lambda responses, refs: [_score(r) for r in responses])
    return build_reward(RewardAdapter.validate_python({"kind": "reference", "metric": "chrf"}))


def _embedded(mp: pytest.MonkeyPatch) -> RewardModel:
    from toa_graph.rewards import reference
    from toa_graph.rewards.reference import ReferenceReward

    mp.setattr(reference, "chrf_scores", lambda responses, refs: [_score(r) for r in responses])
    mp.setattr(ReferenceReward, "score", lambda self, responses, refs: [_score(r) for r in responses])  # fmt: skip
    reward = build_reward(RewardAdapter.validate_python({"kind": "embedded"}))
    reward._math_loaded = True  # type: ignore[attr-defined]  # "fine" is no math answer anyway
    return reward


def _judge(mp: pytest.MonkeyPatch) -> RewardModel:
    from toa_graph.rewards.judge import JudgeReward

    async def one(self: Any, prompt: Any, response: str, refs: Any) -> float:
        return _score(response)  # the request and the rating parse

    mp.setattr(JudgeReward, "_score_one", one)
    cfg = {"kind": "judge", "model": "m", "base_url": "http://127.0.0.1:9/v1"}
    return build_reward(RewardAdapter.validate_python(cfg))


def _vllm(mp: pytest.MonkeyPatch) -> RewardModel:
    from toa_graph.rewards.vllm_pool import VLLMPoolingReward

    async def one(self: Any, prompt: Any, response: str) -> float:
        return _score(response)  # one /classify request

    mp.setattr(VLLMPoolingReward, "_one", one)
    cfg = {"kind": "vllm", "model": "rm", "base_url": "http://127.0.0.1:9"}
    return build_reward(RewardAdapter.validate_python(cfg))


def _hf(mp: pytest.MonkeyPatch) -> RewardModel:
    from toa_graph.rewards.hf import HFReward

    return HFReward(_Scorer(), max_wait_ms=0)  # type: ignore[arg-type]


def _comet(mp: pytest.MonkeyPatch) -> RewardModel:
    from toa_graph.rewards.comet import CometScorer

    mp.setattr(CometScorer, "score_batch", lambda self, items: [_score(it.mt) for it in items])
    cfg = {"kind": "comet", "model": "Unbabel/wmt22-cometkiwi-da", "device": "cpu"}
    return build_reward(RewardAdapter.validate_python(cfg))


def _remote(mp: pytest.MonkeyPatch) -> RewardModel:
    from toa_graph.rewards import remote

    async def post(client: Any, url: str, items: list[dict[str, Any]], **kw: Any) -> Any:
        scores = [_score(it["response"]) for it in items]  # the serve-reward request
        return {"scores": scores, "errors": [None] * len(items), "batch_sizes": [len(items)]}

    mp.setattr(remote, "post_items", post)
    return build_reward(
        RewardAdapter.validate_python({"kind": "remote", "url": "http://127.0.0.1:9"})
    )


BUILDERS: dict[str, Callable[[pytest.MonkeyPatch], RewardModel]] = {
    "callable": _callable,
    "python": _python,
    "math": _math,
    "reference": _reference,
    "embedded": _embedded,
    "judge": _judge,
    "vllm": _vllm,
    "hf": _hf,
    "comet": _comet,
    "remote": _remote,
}


def test_every_shipped_reward_kind_is_covered() -> None:
    from toa_graph.config import REWARD_KINDS

    assert set(REWARD_KINDS) <= set(BUILDERS)


@pytest.mark.parametrize("kind", sorted(BUILDERS))
async def test_one_nan_among_four_fails_exactly_that_sample(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    reward = BUILDERS[kind](monkeypatch)
    samples: list[Sample] = [
        {"id": f"s{i}", "text": t, "error": None, "reward": None}  # type: ignore[typeddict-item]
        for i, t in enumerate(RESPONSES)
    ]
    out = await score_samples(reward, "a question", "a reference answer", samples)
    failed = [s for s in out if s.get("error")]
    assert [s["id"] for s in failed] == ["s2"]
    assert failed[0]["reward"] is None and "non-finite" in str(failed[0]["error"])
    assert failed[0].get("stage") == "reward"
    assert [s["reward"] for s in out if s["id"] != "s2"] == [
        float(len(t)) for t in RESPONSES if "bad" not in t
    ]
