"""Helpers that Ray worker processes import by name (so they live in a module, not a test)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from toa_graph.rewards.batching import BatchingReward


@dataclass
class _Item:
    text: str
    n_tokens: int


class SlowLengthScorer:
    """A :class:`~toa_graph.rewards.batching.PairScorer` whose every forward takes
    ``forward_s`` whatever its size (a GPU-like cost): reward = words / 100."""

    name = "slow-length"

    def __init__(self, forward_s: float = 0.2) -> None:
        self.forward_s = forward_s

    def prepare(self, prompt: Any, response: str, reference: str | None = None) -> _Item:
        return _Item(response, max(1, len(response.split())))

    def score_batch(self, items: Sequence[_Item]) -> list[float]:
        time.sleep(self.forward_s)
        return [len(it.text.split()) / 100.0 for it in items]


class BatchingLengthReward(BatchingReward):
    """``reward: {kind: python, target: 'tests.distributed_fakes:BatchingLengthReward'}``"""

    def __init__(self, forward_s: float = 0.5, max_wait_ms: float = 20.0) -> None:
        super().__init__(SlowLengthScorer(forward_s), max_wait_ms=max_wait_ms, max_batch_size=256)


class RewardCaller:
    """A stand-in worker (run it as a Ray actor): scores ``n`` responses concurrently."""

    def ping(self) -> bool:
        return True

    async def go(self, reward: Any, n: int) -> list[float]:
        out = await asyncio.gather(
            *(reward.ascore("prompt", [f"answer number {i} " + "w " * i]) for i in range(n))
        )
        return [s[0] for s in out]


class CountingHashReward:
    """:func:`tests.fakes.hash_reward`'s scores, with the optional ``counters()`` a run
    summary merges: responses scored, and calls whose prompt was a plain string."""

    def __init__(self) -> None:
        self.responses = 0
        self.string_prompts = 0

    async def ascore(
        self, prompt: Any, responses: Sequence[str], references: Sequence[str] | None = None
    ) -> list[float]:
        from tests.fakes import hash_reward

        self.responses += len(responses)
        self.string_prompts += isinstance(prompt, str)
        return hash_reward(prompt, list(responses))

    def counters(self) -> dict[str, int]:
        return {"responses": self.responses, "string_prompts": self.string_prompts}
