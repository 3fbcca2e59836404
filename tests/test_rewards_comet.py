"""COMET reward: lazy import with a clear message, src/mt/ref wiring (fake comet module)."""

from __future__ import annotations

import asyncio
import sys
import types

import pytest

from toa_graph.rewards.base import RewardError
from toa_graph.rewards.comet import CometReward, source_text


class FakeModel:
    def __init__(self) -> None:
        self.calls: list[list[dict]] = []

    def predict(self, data, batch_size=8, gpus=0, progress_bar=True):
        self.calls.append(list(data))
        scores = [len(d["mt"]) / 100 + (0.5 if d.get("ref") == d["mt"] else 0.0) for d in data]
        return types.SimpleNamespace(scores=scores, system_score=sum(scores) / len(scores))


@pytest.fixture
def fake_comet(monkeypatch):
    model = FakeModel()
    mod = types.ModuleType("comet")
    mod.download_model = lambda name: f"/fake/{name}.ckpt"
    mod.load_from_checkpoint = lambda path: model
    monkeypatch.setitem(sys.modules, "comet", mod)
    return model


async def test_missing_package_message(monkeypatch):
    monkeypatch.setitem(sys.modules, "comet", None)  # import comet -> ImportError
    reward = CometReward(device="cpu", max_wait_ms=1)
    with pytest.raises(RewardError, match=r"toa-graph\[comet\]"):
        await reward.ascore("Übersetze: Hallo", ["Hello"])


async def test_kiwi_is_reference_free_and_batched(fake_comet):
    reward = CometReward("Unbabel/wmt22-cometkiwi-da", device="cpu", max_wait_ms=20)
    prompt = [
        {"role": "system", "content": "translate"},
        {"role": "user", "content": "Guten Morgen"},
    ]
    results = await asyncio.gather(
        reward.ascore(prompt, ["Good morning", "Morning"], ["Good morning"]),
        reward.ascore("Hallo Welt", ["Hello world"]),
    )
    assert results[0] == pytest.approx([0.12, 0.07])
    assert results[1] == pytest.approx([0.11])
    assert len(fake_comet.calls) == 1  # one predict for both callers
    rows = fake_comet.calls[0]
    assert {r["src"] for r in rows} == {"Guten Morgen", "Hallo Welt"}
    assert all("ref" not in r for r in rows)


async def test_reference_based_uses_and_needs_reference(fake_comet):
    reward = CometReward("Unbabel/wmt22-comet-da", device="cpu", max_wait_ms=1)
    scores = await reward.ascore("Guten Morgen", ["Good morning", "Morning"], ["Good morning"])
    assert scores == pytest.approx([0.62, 0.07])
    assert fake_comet.calls[0][0]["ref"] == "Good morning"
    with pytest.raises(RewardError, match="reference-based"):
        await reward.ascore("Guten Morgen", ["Good morning"])


def test_source_text():
    assert source_text("abc") == "abc"
    assert (
        source_text([{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}])
        == "x"
    )
    with pytest.raises(RewardError):
        source_text([{"role": "system", "content": "s"}])


def test_from_config():
    from toa_graph.config import CometRewardConfig

    r = CometReward.from_config(CometRewardConfig(kind="comet", device="cpu"))
    assert r.scorer.model_name == "Unbabel/wmt22-cometkiwi-da" and not r.scorer.reference_based
