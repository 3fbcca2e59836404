"""Reward models: the protocol, the callable adaptor and ``build_reward`` from config.

Implementations are imported only when a config asks for them (torch, transformers and
COMET stay unloaded for users who don't need them).
"""

from __future__ import annotations

from toa_graph.rewards.base import (
    CallableReward,
    LazyReward,
    RewardError,
    RewardLike,
    RewardModel,
    as_reward_model,
    build_reward,
    check_scores,
    reward_counters,
)

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
