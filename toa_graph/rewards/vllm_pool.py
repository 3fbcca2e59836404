"""Client for reward models served by vLLM's pooling runner (``/classify`` or ``/pooling``).

Start the server with e.g. ``vllm serve Skywork/Skywork-Reward-Llama-3.1-8B-v0.2
--runner pooling`` (older vLLM: ``--task reward`` / ``--task classify``). Each response is
sent as a chat conversation (``messages`` = the prompt's messages + the assistant answer),
so the server applies the model's own chat template, with ``"use_activation": false`` so
the score is the raw logit (no sigmoid/softmax), like the transformers scorer. vLLM
batches concurrent requests itself; this client sends one request per response, all at
once (bounded by ``max_concurrency``).

Retries under a :class:`~toa_graph.retry.RetryPolicy` (``max_retries + 1`` attempts,
exponential backoff with jitter, ``Retry-After`` honoured) on HTTP 5xx, 408/409/429 and
connection errors / timeouts; any other failure raises
:class:`~toa_graph.rewards.base.RewardError` naming the endpoint. Nothing above retries
the call again (``score_samples`` does not), so a failing request is sent exactly
``max_retries + 1`` times.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from toa_graph.retry import RetryPolicy
from toa_graph.rewards.base import RewardError
from toa_graph.rewards.hf import to_messages
from toa_graph.state import Prompt

if TYPE_CHECKING:  # pragma: no cover
    import httpx

    from toa_graph.config import VLLMRewardConfig

__all__ = ["VLLMPoolingReward", "score_from_response"]


def _first_number(obj: Any) -> float | None:
    """The score in a pooling result: a number, ``[x, ...]`` or per-token ``[[x], ...]``
    (last token)."""
    while isinstance(obj, list) and obj:
        obj = obj[-1] if isinstance(obj[0], list) else obj[0]
    if isinstance(obj, bool):
        return None
    if isinstance(obj, int | float):
        return float(obj)
    return None


def score_from_response(body: Any, endpoint: str) -> float:
    """Extract the one score from a ``/classify`` or ``/pooling`` JSON answer."""
    try:
        item = body["data"][0]
    except (KeyError, IndexError, TypeError):
        raise RewardError(
            f"{endpoint}: unexpected response (no data[0]): {str(body)[:200]}"
        ) from None
    for key in ("probs", "logits", "score", "data", "embedding"):
        if isinstance(item, dict) and key in item:
            value = _first_number(item[key])
            if value is not None:
                return value
    raise RewardError(f"{endpoint}: no score in response item: {str(item)[:200]}")


class VLLMPoolingReward:
    """A :class:`~toa_graph.rewards.base.RewardModel` backed by a vLLM pooling server.

    Args:
        base_url: server root (``http://host:8000``; a trailing ``/v1`` is ignored, as the
            pooling routes live at the root).
        model: served model name.
        endpoint: ``classify`` or ``pooling``.
        api_key: bearer token, if the server wants one.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        endpoint: str = "classify",
        api_key: str | None = None,
        timeout_s: float = 120.0,
        max_retries: int = 4,
        backoff_s: float = 0.5,
        max_concurrency: int = 64,
    ) -> None:
        if endpoint not in ("classify", "pooling"):
            raise ValueError("endpoint must be 'classify' or 'pooling'")
        root = base_url.rstrip("/")
        if root.endswith("/v1"):
            root = root[: -len("/v1")]
        self.url = f"{root}/{endpoint}"
        self.model = model
        self.endpoint = endpoint
        self.api_key = api_key
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.retry = RetryPolicy.from_retries(max_retries, backoff_s=backoff_s)
        """The one retry layer of a score request (HTTP 5xx, 429, connection errors)."""
        self.max_concurrency = max_concurrency
        self.name = f"vllm:{model}"
        self.requests = 0
        self.retries = 0
        self._client: httpx.AsyncClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sem: asyncio.Semaphore | None = None

    @classmethod
    def from_config(cls, cfg: VLLMRewardConfig, *, agents: Any = ()) -> VLLMPoolingReward:
        key = None
        if cfg.api_key_env:
            key = os.environ.get(cfg.api_key_env)
            if not key:
                raise RewardError(
                    f"vllm reward: env var {cfg.api_key_env} (api_key_env) is not set"
                )
        return cls(
            cfg.base_url,
            cfg.model,
            endpoint=cfg.endpoint,
            api_key=key,
            timeout_s=cfg.timeout_s,
            max_retries=cfg.max_retries,
            max_concurrency=getattr(cfg, "max_concurrency", 64),
        )

    def _session(self) -> tuple[httpx.AsyncClient, asyncio.Semaphore]:
        import httpx

        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
            self._client = httpx.AsyncClient(timeout=self.timeout_s, headers=headers)
            self._loop = loop
            self._sem = asyncio.Semaphore(self.max_concurrency)
        assert self._sem is not None
        return self._client, self._sem

    def payload(self, prompt: Prompt, response: str) -> dict[str, Any]:
        return {
            "model": self.model,
            "messages": to_messages(prompt, response),
            "use_activation": False,
        }

    async def _one(self, prompt: Prompt, response: str) -> float:
        import httpx

        client, sem = self._session()
        body = self.payload(prompt, response)

        async def post() -> httpx.Response:
            async with sem:
                self.requests += 1
                r = await client.post(self.url, json=body)
            r.raise_for_status()
            return r

        try:
            r = await self.retry.call(post, what=self.url, on_retry=self._count_retry)
        except httpx.HTTPStatusError as exc:
            resp = exc.response
            if self.retry.retry_on(exc):  # retryable, and the attempts ran out
                raise RewardError(
                    f"{self.url}: failed after {self.retry.attempts} attempts: "
                    f"HTTP {resp.status_code}: {resp.text[:200]}"
                ) from None
            raise RewardError(f"{self.url}: HTTP {resp.status_code}: {resp.text[:300]}") from None
        except httpx.HTTPError as exc:
            raise RewardError(
                f"{self.url}: failed after {self.retry.attempts} attempts: "
                f"{type(exc).__name__}: {exc}"
            ) from None
        try:
            data = r.json()
        except ValueError:
            raise RewardError(f"{self.url}: response is not JSON: {r.text[:200]}") from None
        return score_from_response(data, self.url)

    def _count_retry(self, exc: BaseException) -> None:
        self.retries += 1

    def counters(self) -> dict[str, int]:
        """HTTP requests sent and retries among them (for run summaries)."""
        return {"reward_requests": self.requests, "reward_retries": self.retries}

    async def ascore(
        self,
        prompt: Prompt,
        responses: Sequence[str],
        references: Sequence[str] | None = None,
    ) -> list[float]:
        if isinstance(responses, str):
            raise TypeError("responses must be a list of strings, not a string")
        return list(await asyncio.gather(*(self._one(prompt, r) for r in responses)))

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def __repr__(self) -> str:
        return f"VLLMPoolingReward({self.url}, model={self.model!r})"
