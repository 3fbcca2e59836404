"""Reward models: the protocol, the callable adaptor and ``build_reward`` from config.

Implementations are imported only when a config asks for them (torch, transformers and
COMET stay unloaded for users who don't need them).
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from toa_graph.rewards.base import (
    CallableReward,
    RewardError,
    RewardLike,
    RewardModel,
    as_reward_model,
    check_scores,
    reward_counters,
)

if TYPE_CHECKING:
    from toa_graph.config import AgentConfig

__all__ = [
    "CallableReward",
    "LazyReward",
    "RewardError",
    "RewardLike",
    "RewardModel",
    "as_reward_model",
    "build_reward",
    "check_scores",
    "reward_counters",
]


def build_reward(cfg: Any, *, agents: Sequence[AgentConfig] = ()) -> RewardModel:
    """The reward model a config's ``reward:`` section describes (the kind's config class
    names its implementation: :data:`toa_graph.config.REWARD_KINDS`)."""
    from toa_graph.config import REWARD_KINDS

    kind = cfg.kind
    if kind not in REWARD_KINDS:
        raise RewardError(f"unknown reward kind {kind!r}; known: {sorted(REWARD_KINDS)}")
    implementation = REWARD_KINDS[kind].implementation
    if implementation is None:  # python: the config names its own callable
        module_name, _, attr = cfg.target.partition(":")
        try:
            obj: Any = importlib.import_module(module_name)
            for part in attr.split("."):
                obj = getattr(obj, part)
        except (ImportError, AttributeError) as exc:
            raise RewardError(f"reward.target {cfg.target!r} cannot be imported: {exc}") from exc
        if isinstance(obj, type):
            obj = obj(**cfg.kwargs)
        elif cfg.kwargs:
            import functools

            obj = functools.partial(obj, **cfg.kwargs)
        return as_reward_model(obj)
    module_name, _, class_name = implementation.partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    model: RewardModel = cls.from_config(cfg, agents=agents)
    return model


class LazyReward:
    """Builds the configured reward model on first use (in a worker thread, since loading
    weights blocks), so graphs can be constructed and served without loading anything."""

    def __init__(self, cfg: Any, *, agents: Sequence[AgentConfig] = ()) -> None:
        self.cfg = cfg
        self.agents = tuple(agents)
        self._model: RewardModel | None = None
        self._lock: asyncio.Lock | None = None

    async def load(self) -> RewardModel:
        if self._model is None:
            if self._lock is None:
                self._lock = asyncio.Lock()
            async with self._lock:
                if self._model is None:
                    self._model = await asyncio.to_thread(
                        build_reward, self.cfg, agents=self.agents
                    )
        return self._model

    async def ascore(
        self,
        prompt: Any,
        responses: Sequence[str],
        references: Sequence[str] | None = None,
    ) -> list[float]:
        model = await self.load()
        return await model.ascore(prompt, responses, references)

    def counters(self) -> dict[str, int]:
        """The loaded reward's counters (``{}`` before it is loaded or when it has none)."""
        return (reward_counters(self._model) or {}) if self._model is not None else {}

    def __repr__(self) -> str:
        return f"LazyReward(kind={self.cfg.kind!r})"
