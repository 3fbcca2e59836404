"""A verl reward function that scores through a running ``toa-graph serve-reward``.

This file stands alone (standard library only), so verl can load it by path in its own
environment; ``toa-graph serve-reward --verl-path`` prints where it is. In verl's config:

    custom_reward_function:
      path: <the printed path>
      name: compute_score            # or compute_score_async
      reward_kwargs:
        url: http://127.0.0.1:8700   # default: $TOA_REWARD_URL
        fallback: 0.0                # score for an item the server failed (default: raise)

``compute_score(data_source, solution_str, ground_truth, extra_info)`` sends the response
(``solution_str``), the gold answer (``ground_truth``) and the prompt, which verl passes
only through ``extra_info`` (its ``prompt``, ``question`` or ``messages`` key, when the
dataset put one there; else the prompt is empty). ``compute_score_async`` is its async
twin. A bearer token is read from ``$TOA_REWARD_TOKEN``.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import urllib.error
import urllib.request
from typing import Any

PROMPT_KEYS = ("prompt", "messages", "question", "query", "problem")
RETRY_STATUS = (429, 502, 503, 504)


def _prompt(extra_info: Any) -> Any:
    if isinstance(extra_info, dict):
        for key in PROMPT_KEYS:
            value = extra_info.get(key)
            if isinstance(value, str):
                return value
            if isinstance(value, list | tuple) and all(isinstance(m, dict) for m in value):
                return [dict(m) for m in value]
    return ""


def _post(url: str, body: dict[str, Any], timeout: float, retries: int) -> dict[str, Any]:
    data = json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    token = os.environ.get("TOA_REWARD_TOKEN")
    if token:
        headers["Authorization"] = f"Bearer {token}"
    delay = 0.5
    for attempt in range(retries + 1):
        req = urllib.request.Request(url.rstrip("/") + "/v1/score", data, headers)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                out: dict[str, Any] = json.loads(resp.read())
                return out
        except urllib.error.HTTPError as exc:
            if exc.code not in RETRY_STATUS or attempt == retries:
                raise RuntimeError(f"reward server: HTTP {exc.code}: {exc.read()[:300]!r}") from exc
            wait = float(exc.headers.get("Retry-After") or delay)
        except (urllib.error.URLError, OSError) as exc:
            if attempt == retries:
                raise RuntimeError(f"reward server {url}: {exc}") from exc
            wait = delay
        time.sleep(wait)
        delay = min(delay * 2, 8.0)
    raise AssertionError("unreachable")


def compute_score(
    data_source: Any,
    solution_str: str,
    ground_truth: Any = None,
    extra_info: Any = None,
    *,
    url: str | None = None,
    fallback: float | None = None,
    timeout: float = 120.0,
    retries: int = 4,
    **_: Any,
) -> float:
    """verl's reward function: the server's score for ``solution_str``."""
    server = url or os.environ.get("TOA_REWARD_URL") or "http://127.0.0.1:8700"
    item = {
        "prompt": _prompt(extra_info),
        "response": solution_str,
        "reference": None if ground_truth is None else str(ground_truth),
    }
    body = _post(server, {"items": [item]}, timeout, retries)
    score = body["scores"][0]
    if score is None:
        if fallback is None:
            raise RuntimeError(f"reward server could not score the item: {body['errors'][0]}")
        return float(fallback)
    return float(score)


async def compute_score_async(
    data_source: Any,
    solution_str: str,
    ground_truth: Any = None,
    extra_info: Any = None,
    **kwargs: Any,
) -> float:
    """The async twin of :func:`compute_score` (the HTTP call runs in a worker thread)."""
    return await asyncio.to_thread(
        compute_score, data_source, solution_str, ground_truth, extra_info, **kwargs
    )
