"""Building an agent's chat client and reading its answers (text, token usage)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage

from toa_graph.agents.errors import describe_error
from toa_graph.config import AgentConfig
from toa_graph.text import message_text as text_of

if TYPE_CHECKING:
    from toa_graph.state import Usage

__all__ = [
    "Generation",
    "build_chat_model",
    "build_chat_openai",
    "health_check",
    "text_of",
    "usage_of",
]


@dataclass
class Generation:
    """The outcome of one generation: text plus accounting, or an error."""

    text: str
    usage: Usage
    latency_s: float
    error: str | None = None


def empty_usage() -> Usage:
    return {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0}


def usage_of(msg: BaseMessage) -> Usage:
    meta = getattr(msg, "usage_metadata", None) or {}
    inp = int(meta.get("input_tokens", 0) or 0)
    out = int(meta.get("output_tokens", 0) or 0)
    return {
        "input_tokens": inp,
        "output_tokens": out,
        "total_tokens": int(meta.get("total_tokens", inp + out) or 0),
    }


def split_shared_usage(gens: list[Generation], llm_output: dict[str, Any] | None) -> None:
    """With ``n`` choices the server reports one usage for the whole request (prompt tokens
    once, completion tokens summed) and LangChain copies it onto every choice. Spread it
    so that summing the samples gives the request's true total."""
    usage = (llm_output or {}).get("token_usage") or {}
    prompt = int(usage.get("prompt_tokens", 0) or 0)
    completion = int(usage.get("completion_tokens", 0) or 0)
    if not (prompt or completion):  # no request-level usage: the copy on each choice is it
        prompt, completion = gens[0].usage["input_tokens"], gens[0].usage["output_tokens"]
    k = len(gens)
    for i, g in enumerate(gens):
        inp = prompt // k + (1 if i < prompt % k else 0)
        out = completion // k + (1 if i < completion % k else 0)
        g.usage = {"input_tokens": inp, "output_tokens": out, "total_tokens": inp + out}
        if k > 1:  # the server counted the request, not each choice
            g.usage["estimated"] = True


async def health_check(url: str, cfg: AgentConfig, timeout_s: float) -> tuple[bool, str]:
    """``GET <url>/models``: (answered with 2xx, why not)."""
    headers = {}
    key = cfg.api_key()
    if key and key != "EMPTY":
        headers["Authorization"] = f"Bearer {key}"
    try:
        async with httpx.AsyncClient(timeout=timeout_s) as http:
            resp = await http.get(url.rstrip("/") + "/models", headers=headers)
    except Exception as exc:
        return False, describe_error(exc)
    if 200 <= resp.status_code < 300:
        return True, ""
    return False, f"HTTP {resp.status_code}"


def build_chat_openai(cfg: AgentConfig, url: str) -> BaseChatModel:
    """A ``ChatOpenAI`` for one replica URL of ``cfg``, with the client's own retries off:
    the pool retries (:class:`~toa_graph.retry.RetryPolicy`), so retries never stack."""
    from langchain_openai import ChatOpenAI

    if "://" in url and not url.startswith(("http://", "https://")):
        raise ValueError(
            f"agent {cfg.name!r}: base_url {url!r} is not an HTTP endpoint. For embedded:// "
            "agents start the servers first: `toa-graph embedded start` (or use "
            "toa_graph.embedded.EmbeddedStack, which resolves these URLs)"
        )

    kwargs: dict[str, Any] = {
        "model": cfg.model,
        "base_url": url,
        "api_key": cfg.api_key(),
        "timeout": cfg.timeout_s,
        "max_retries": 0,
        "stream_usage": True,
    }
    # unset sampling fields are left out of the request (the server's default applies)
    for key in ("temperature", "top_p", "max_tokens"):
        if getattr(cfg, key) is not None:
            kwargs[key] = getattr(cfg, key)
    if cfg.stop:
        kwargs["stop"] = list(cfg.stop)
    if cfg.extra_body:
        kwargs["extra_body"] = dict(cfg.extra_body)
    # Our own connection pool per client: langchain-openai otherwise shares one cached
    # client per URL across event loops ("Event loop is closed" on a second asyncio.run).
    kwargs["http_async_client"] = httpx.AsyncClient(
        limits=httpx.Limits(max_connections=1000, max_keepalive_connections=200),
        timeout=cfg.timeout_s,
    )
    return ChatOpenAI(**kwargs)


def build_chat_model(cfg: AgentConfig, url: str) -> BaseChatModel:
    """The chat client of ``cfg`` for one replica URL: ``ChatOpenAI`` for the ``openai``
    provider (any OpenAI-compatible endpoint), else LangChain's ``init_chat_model``."""
    if cfg.provider == "openai":
        return build_chat_openai(cfg, url)
    from toa_graph.agents.providers import build_provider_chat_model

    return build_provider_chat_model(cfg, url)
