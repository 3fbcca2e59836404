"""Clients of a running ``toa-graph serve-reward``: the ``remote`` reward kind here, and
the TRL adapter (:mod:`toa_graph.reward_server.trl`) built on the same :func:`post_items`.

Both post to the project's own ``POST /v1/score`` through :func:`post_items`, which
retries under the one retry policy and hands back one outcome per item: a score, or
``None`` with the server's reason.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Sequence
from typing import Any

from toa_graph.retry import RetryPolicy
from toa_graph.rewards.base import RewardError
from toa_graph.state import Prompt

__all__ = ["RemoteReward", "post_items"]

logger = logging.getLogger(__name__)


def _token(api_key_env: str | None) -> str | None:
    if not api_key_env:
        return None
    value = os.environ.get(api_key_env)
    if not value:
        raise RewardError(f"remote reward: env var {api_key_env} (api_key_env) is not set")
    return value


async def post_items(
    client: Any,
    url: str,
    items: list[dict[str, Any]],
    *,
    token: str | None = None,
    max_retries: int = 4,
) -> dict[str, Any]:
    """``POST {url}/v1/score`` with ``items``, retried under the project's one
    :class:`~toa_graph.retry.RetryPolicy` (connection errors, 5xx, 429 with its
    ``Retry-After``); the response body (``scores``, ``errors``, ``batch_sizes``).
    Raises :class:`RewardError` once retries are spent or on a 4xx (the request's fault)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    endpoint = url.rstrip("/") + "/v1/score"

    async def once() -> dict[str, Any]:
        resp = await client.post(endpoint, json={"items": items}, headers=headers)
        resp.raise_for_status()
        body: dict[str, Any] = resp.json()
        return body

    try:
        return await RetryPolicy.from_retries(max_retries).call(once, what=f"reward server {url}")
    except Exception as exc:
        response = getattr(exc, "response", None)
        detail = f": {response.text[:300]}" if response is not None else ""
        raise RewardError(f"reward server {url}: {type(exc).__name__}: {exc}{detail}") from exc


class _HTTPUser:
    """An httpx client made on first use in each event loop, dropped when pickled."""

    timeout_s: float = 120.0

    def _client(self) -> Any:
        import httpx

        loop = asyncio.get_running_loop()
        client = self.__dict__.get("_http")
        if client is None or self.__dict__.get("_http_loop") is not loop:
            limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
            client = httpx.AsyncClient(timeout=self.timeout_s, limits=limits)
            self.__dict__["_http"], self.__dict__["_http_loop"] = client, loop
        return client

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in ("_http", "_http_loop")}


class RemoteReward(_HTTPUser):
    """A :class:`~toa_graph.rewards.base.RewardModel` scored by a running ``serve-reward``
    (``kind: remote``), so several runs and Ray workers share one loaded model.

    An item the server could not score fails the call (:class:`RewardError`), like any
    reward: the caller records the error on its samples. Picklable (ship it to workers).
    """

    name = "remote"

    def __init__(
        self,
        url: str,
        *,
        api_key_env: str | None = None,
        timeout_s: float = 120.0,
        max_retries: int = 4,
    ) -> None:
        self.url = url
        self.api_key_env = api_key_env
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.stats = {"requests": 0, "items": 0, "batch_size_sum": 0, "failed_items": 0}

    @classmethod
    def from_config(cls, cfg: Any, *, agents: Any = ()) -> RemoteReward:
        return cls(cfg.url, api_key_env=cfg.api_key_env, timeout_s=cfg.timeout_s,
                   max_retries=cfg.max_retries)  # fmt: skip

    async def ascore(
        self,
        prompt: Prompt,
        responses: Sequence[str],
        references: Sequence[str] | None = None,
    ) -> list[float]:
        if not responses:
            return []
        ref = next((r for r in references or () if r and str(r).strip()), None)
        items = [{"prompt": prompt, "response": r, "reference": ref} for r in responses]
        body = await post_items(
            self._client(), self.url, items, token=_token(self.api_key_env),
            max_retries=self.max_retries,
        )  # fmt: skip
        self.stats["requests"] += 1
        self.stats["items"] += len(items)
        self.stats["batch_size_sum"] += sum(int(b) for b in body.get("batch_sizes") or ())
        errors = [e for e in body.get("errors") or () if e]
        if errors:
            self.stats["failed_items"] += len(errors)
            raise RewardError(f"reward server {self.url}: {errors[0]}")
        return [float(s) for s in body["scores"]]

    def counters(self) -> dict[str, int]:
        """For the run summary: ``remote_batch_size_sum / remote_items`` is the mean size of
        the server batches this process's items were scored in (summed over workers)."""
        return {f"remote_{k}": v for k, v in self.stats.items()}

    def __repr__(self) -> str:
        return f"RemoteReward({self.url})"
