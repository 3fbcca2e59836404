"""The reward server's work, free of HTTP: load the reward once, check requests, feed the
one batcher, map outcomes to each API's answer, and count everything for ``/metrics``.

:mod:`toa_graph.reward_server.app` only parses bodies and turns :class:`RewardServingError`
into status codes.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toa_graph.errors import ToaGraphError
from toa_graph.reward_server.batcher import ItemBatcher, QueueFull, ScoredItem
from toa_graph.reward_server.protocol import (
    GetRewardRequest,
    GetRewardResponse,
    ScoreRequest,
    ScoreResponse,
    label_reference,
)
from toa_graph.reward_server.template import PolicyTemplate, split_query
from toa_graph.rewards.base import RewardModel
from toa_graph.state import Prompt

__all__ = ["RewardServerSettings", "RewardServing", "RewardServingError", "load_reward_config"]

logger = logging.getLogger(__name__)


class RewardServingError(ToaGraphError):
    """A request the server refuses (4xx) or cannot serve now (429/503)."""

    def __init__(self, status: int, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


@dataclass(kw_only=True)
class RewardServerSettings:
    """Limits and knobs of one reward server (the ``serve-reward`` flags)."""

    api_key: str | None = field(default=None, repr=False)
    """Bearer token clients must send; ``None``: no authentication."""
    max_batch_size: int = 64
    max_wait_ms: float = 10.0
    """How long the first waiting item waits for others before its batch is scored."""
    idle_ms: float | None = 1.0
    """A batch is also scored once no item arrived for this long (``None``: never)."""
    max_queue: int = 4096
    """Items waiting or being scored; more get 429 with Retry-After."""
    max_items: int = 1024
    """Items in one request."""
    max_text_chars: int = 100_000
    """Longest prompt, response or query text."""
    max_body_bytes: int = 16 << 20
    fallback_score: float = 0.0
    """``/get_reward``'s score for an item the reward could not score (logged, counted)."""
    retry_after_s: float = 1.0


def load_reward_config(path: str | os.PathLike[str]) -> tuple[Any, list[Any]]:
    """The ``reward:`` section of a YAML file (and its agents, for judge/embedded rewards);
    the file may hold only a ``reward:`` section, or be a whole project config."""
    from toa_graph.config import ConfigError, RewardAdapter, load_config

    p = Path(path)
    try:
        import yaml

        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"{p}: config file not found") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: YAML syntax error: {exc}") from exc
    if not isinstance(data, dict) or "reward" not in data:
        raise ConfigError(f"{p}: expected a mapping with a 'reward:' section")
    if "agents" in data or isinstance(data["reward"], str):
        cfg = load_config(p)
        reward, agents = cfg.reward, list(cfg.agents)
    else:
        from pydantic import ValidationError

        try:
            reward, agents = RewardAdapter.validate_python(data["reward"]), []
        except ValidationError as exc:
            raise ConfigError(f"{p}: invalid reward section:\n{exc}") from exc
    if reward.kind == "remote":
        raise ConfigError(f"{p}: serve-reward needs a reward to load, not kind 'remote'")
    return reward, agents


class RewardServing:
    """Holds the reward (``None`` while it loads), the batcher and the counters."""

    def __init__(
        self,
        settings: RewardServerSettings | None = None,
        *,
        template: PolicyTemplate | None = None,
    ) -> None:
        self.settings = settings or RewardServerSettings()
        self.template = template
        self.reward: RewardModel | None = None
        self.batcher: ItemBatcher | None = None
        self.load_error: str | None = None
        self.started = time.time()
        self.requests: dict[str, int] = {"score": 0, "get_reward": 0}
        self.rejected: dict[str, int] = {"bad_request": 0, "queue_full": 0, "unauthorized": 0}
        self.fallback_scores = 0

    # ---------------------------------------------------------------- lifecycle

    def set_reward(self, reward: RewardModel) -> None:
        s = self.settings
        self.reward = reward
        self.batcher = ItemBatcher(
            reward, max_batch_size=s.max_batch_size, max_wait_ms=s.max_wait_ms,
            idle_ms=s.idle_ms, max_queue=s.max_queue,
        )  # fmt: skip

    async def load(self, cfg: Any, agents: Sequence[Any] = ()) -> None:
        """Build the configured reward in a worker thread (``/health`` is 503 meanwhile)."""
        from toa_graph.rewards import build_reward

        t0 = time.perf_counter()
        try:
            reward = await asyncio.to_thread(build_reward, cfg, agents=agents)
        except Exception as exc:
            self.load_error = f"{type(exc).__name__}: {exc}"
            logger.error("reward %r failed to load: %s", cfg.kind, exc)
            return
        self.set_reward(reward)
        logger.info("reward %r loaded in %.1f s", cfg.kind, time.perf_counter() - t0)

    async def aclose(self) -> None:
        if self.batcher is not None:
            await self.batcher.aclose()

    def health(self) -> tuple[int, dict[str, Any]]:
        if self.batcher is not None:
            return 200, {"status": "ok"}
        if self.load_error is not None:
            return 503, {"status": "failed", "error": self.load_error}
        return 503, {"status": "loading"}

    # ---------------------------------------------------------------- the two APIs

    async def score(self, req: ScoreRequest) -> ScoreResponse:
        """The project's own API (``remote`` rewards, the verl and TRL adapters)."""
        self.requests["score"] += 1
        for i, it in enumerate(req.items):
            self._check_text(f"items[{i}].response", it.response)
            self._check_text(f"items[{i}].prompt", _prompt_text(it.prompt))
            self._check_text(f"items[{i}].reference", it.reference or "")
        out = await self._score([(it.prompt, it.response, it.reference) for it in req.items])
        return ScoreResponse(
            scores=[o.score for o in out],
            errors=[o.error for o in out],
            batch_sizes=[o.batch_size for o in out],
        )

    async def get_reward(self, req: GetRewardRequest) -> GetRewardResponse:
        """OpenRLHF's ``/get_reward``: queries split back into (messages, response)."""
        self.requests["get_reward"] += 1
        none: list[str | None] = [None] * len(req.query)
        prompts: list[str | None] = list(req.prompts) if req.prompts is not None else none
        labels = req.labels or [None] * len(req.query)
        items: list[tuple[Prompt, str, str | None]] = []
        for i, (query, prompt, label) in enumerate(zip(req.query, prompts, labels, strict=True)):
            self._check_text(f"query[{i}]", query)
            conv, response = split_query(query, prompt, self.template)
            items.append((conv, response, label_reference(label)))
        out = await self._score(items)
        scores = []
        for i, o in enumerate(out):
            if o.score is None:
                self.fallback_scores += 1
                logger.warning(
                    "get_reward: query[%d] scored %s (fallback): %s",
                    i, self.settings.fallback_score, o.error,
                )  # fmt: skip
                scores.append(self.settings.fallback_score)
            else:
                scores.append(o.score)
        failed = [0.0 if o.score is not None else 1.0 for o in out]
        return GetRewardResponse(
            rewards=scores, scores=scores,
            extra_logs={"reward_failed": failed, "batch_size": [float(o.batch_size) for o in out]},
        )  # fmt: skip

    # ---------------------------------------------------------------- shared

    def bad_request(self, message: str, status: int = 400) -> RewardServingError:
        self.rejected["bad_request"] += 1
        return RewardServingError(status, message)

    def _check_text(self, where: str, text: str) -> None:
        limit = self.settings.max_text_chars
        if len(text) > limit:
            raise self.bad_request(f"{where}: {len(text)} characters (max {limit})", 413)

    async def _score(self, items: list[tuple[Prompt, str, str | None]]) -> list[ScoredItem]:
        if len(items) > self.settings.max_items:
            raise self.bad_request(
                f"{len(items)} items in one request (max {self.settings.max_items})", 413
            )
        if self.batcher is None:
            _, body = self.health()
            raise RewardServingError(
                503, f"reward not ready: {body.get('error') or body['status']}",
                retry_after=self.settings.retry_after_s if self.load_error is None else None,
            )  # fmt: skip
        try:
            return await self.batcher.score(items)
        except QueueFull as exc:
            self.rejected["queue_full"] += 1
            raise RewardServingError(
                429, f"server busy: {exc}", retry_after=self.settings.retry_after_s
            ) from None

    def metrics(self) -> dict[str, Any]:
        batcher = self.batcher
        return {
            "pid": os.getpid(),
            "uptime_s": round(time.time() - self.started, 3),
            "reward": repr(self.reward) if self.reward is not None else None,
            "requests": dict(self.requests),
            "rejected": dict(self.rejected),
            "fallback_scores": self.fallback_scores,
            "queued": batcher.pending if batcher is not None else 0,
            "batcher": batcher.metrics.as_dict() if batcher is not None else None,
            "settings": {
                "max_batch_size": self.settings.max_batch_size,
                "max_wait_ms": self.settings.max_wait_ms,
                "idle_ms": self.settings.idle_ms,
                "max_queue": self.settings.max_queue,
            },
        }


def _prompt_text(prompt: Prompt) -> str:
    if isinstance(prompt, str):
        return prompt
    return "".join(str(m.get("content") or "") for m in prompt)
