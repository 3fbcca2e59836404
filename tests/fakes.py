"""Fake chat models and rewards for offline unit tests (deterministic, instant or delayed)."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Sequence
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import Field

CONTRACT_KEYS = {
    "id",
    "agent",
    "text",
    "reward",
    "parent",
    "kind",
    "layer",
    "usage",
    "latency_s",
    "error",
    "stage",
    "scored",
}
"""The keys every sample carries (docs/design.md's output contract, plus the typed failure
fields ``stage`` and ``scored``)."""


class FakeAgent(BaseChatModel):
    """Deterministic chat model: replies ``"<name>#<k>: <last user text tail>"``.

    Records every call (the messages it saw) in ``calls``; can sleep ``delay_s`` per call
    and fail the calls whose 0-based index is in ``fail_on``.
    """

    name: str = "fake"
    delay_s: float = 0.0
    fail_on: frozenset[int] = frozenset()
    reply: Callable[[str, int, list[BaseMessage]], str] | None = None
    calls: list[list[BaseMessage]] = Field(default_factory=list)

    @property
    def _llm_type(self) -> str:
        return "fake-agent"

    def _answer(self, messages: list[BaseMessage]) -> ChatResult:
        k = len(self.calls)
        self.calls.append(list(messages))
        if k in self.fail_on:
            raise RuntimeError(f"{self.name}: injected failure on call {k}")
        last = str(messages[-1].content)
        text = (
            self.reply(self.name, k, messages) if self.reply else f"{self.name}#{k}: {last[-40:]}"
        )
        n_in = sum(len(str(m.content).split()) for m in messages)
        n_out = len(text.split())
        msg = AIMessage(
            text,
            usage_metadata={
                "input_tokens": n_in,
                "output_tokens": n_out,
                "total_tokens": n_in + n_out,
            },
        )
        return ChatResult(generations=[ChatGeneration(message=msg)])

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return self._answer(messages)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        return self._answer(messages)


def fake_agents(names: Sequence[str] = ("a", "b", "c"), **kwargs: Any) -> dict[str, FakeAgent]:
    return {n: FakeAgent(name=n, **kwargs) for n in names}


def hash_reward(prompt: Any, responses: list[str]) -> list[float]:
    """Deterministic pseudo-random reward in [-1, 1] from the response text."""
    out = []
    for r in responses:
        h = int(hashlib.sha256(r.encode()).hexdigest()[:8], 16)
        out.append((h / 0xFFFFFFFF) * 2 - 1)
    return out


def length_reward(prompt: Any, responses: list[str]) -> list[float]:
    return [float(len(r)) / 100.0 for r in responses]


def generations_ok(method: str, spent: int, budget: int, n_agents: int = 3) -> bool:
    """Every method spends exactly its budget, except debate: at most the budget (a round
    that does not fit is not started), and never less than its opening answers."""
    if method == "debate":
        return min(n_agents, budget) <= spent <= budget
    return spent == budget


def same_ids(done: Any, expected: set[str]) -> bool:
    """Whether a done set (ids kept as digests: membership and size only) holds exactly
    ``expected``."""
    return len(done) == len(expected) and all(x in done for x in expected)
