"""Building an agent's chat client and reading its answers (answer, trace, token usage)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage

from toa_graph.agents.errors import EMPTY_RESPONSE, describe_error
from toa_graph.config import AgentConfig
from toa_graph.reasoning import (
    REASONING_FIELDS,
    estimate_tokens,
    reasoning_request,
    set_path,
    settings_of,
    split_message,
)
from toa_graph.text import message_text as text_of

if TYPE_CHECKING:
    from toa_graph.state import Usage

__all__ = [
    "Generation",
    "build_chat_model",
    "build_chat_openai",
    "generation_of",
    "health_check",
    "text_of",
    "usage_of",
]


@dataclass
class Generation:
    """The outcome of one generation: the final answer (``text``) and the model's thinking
    trace (``reasoning``, ``None`` when it gave none) plus accounting, or an error."""

    text: str
    usage: Usage
    latency_s: float
    error: str | None = None
    reasoning: str | None = None


def generation_of(msg: Any, latency_s: float, finish_reason: str | None = None) -> Generation:
    """One answer read from a chat message: split into answer and trace
    (:func:`~toa_graph.reasoning.split_message`), the reasoning tokens counted (the
    provider's count, else estimated from the trace). A generation that stopped inside its
    thinking, with no answer after it, is a failure saying so."""
    split = split_message(msg)
    usage = usage_of(msg)
    add_reasoning_tokens(usage, split.reasoning)
    error = None
    if split.unfinished and not split.answer.strip():
        finish = finish_reason or _finish_reason(msg)
        if finish == "length":
            error = (
                "cut off inside its thinking: max_tokens (thinking plus answer) ran out "
                "before an answer; raise max_tokens or set a smaller thinking_budget"
            )
        else:
            error = f"no answer after its thinking (finish_reason={finish})"
    elif not split.answer.strip():
        error = EMPTY_RESPONSE
    return Generation(split.answer, usage, latency_s, error, split.reasoning)


def _finish_reason(msg: Any) -> str | None:
    meta = getattr(msg, "response_metadata", None) or {}
    reason = meta.get("finish_reason") or meta.get("stop_reason")
    return "length" if reason in ("length", "max_tokens", "MAX_TOKENS") else reason


def add_reasoning_tokens(usage: Usage, reasoning: str | None) -> None:
    """Where the provider counted no reasoning tokens but the model gave a trace: count
    them from its length and mark the usage ``estimated``."""
    if reasoning and not usage.get("reasoning_tokens"):
        usage["reasoning_tokens"] = estimate_tokens(reasoning)
        usage["estimated"] = True


def empty_usage() -> Usage:
    return {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0}


def usage_of(msg: BaseMessage | Any) -> Usage:
    meta = getattr(msg, "usage_metadata", None) or {}
    inp = int(meta.get("input_tokens", 0) or 0)
    out = int(meta.get("output_tokens", 0) or 0)
    usage: Usage = {
        "input_tokens": inp,
        "output_tokens": out,
        "total_tokens": int(meta.get("total_tokens", inp + out) or 0),
    }
    reasoning = (meta.get("output_token_details") or {}).get("reasoning")
    if reasoning:  # the provider's count (OpenAI completion_tokens_details.reasoning_tokens)
        usage["reasoning_tokens"] = int(reasoning)
    return usage


def split_shared_usage(gens: list[Generation], llm_output: dict[str, Any] | None) -> None:
    """With ``n`` choices the server reports one usage for the whole request (prompt tokens
    once, completion tokens summed) and LangChain copies it onto every choice. Spread it
    so that summing the samples gives the request's true total."""
    usage = (llm_output or {}).get("token_usage") or {}
    prompt = int(usage.get("prompt_tokens", 0) or 0)
    completion = int(usage.get("completion_tokens", 0) or 0)
    details = usage.get("completion_tokens_details") or {}
    thinking = int(details.get("reasoning_tokens", 0) or 0)
    if not (prompt or completion):  # no request-level usage: the copy on each choice is it
        prompt, completion = gens[0].usage["input_tokens"], gens[0].usage["output_tokens"]
        if not gens[0].usage.get("estimated"):  # a count of the provider's, not ours
            thinking = int(gens[0].usage.get("reasoning_tokens", 0) or 0)
    k = len(gens)
    for i, g in enumerate(gens):
        inp = prompt // k + (1 if i < prompt % k else 0)
        out = completion // k + (1 if i < completion % k else 0)
        g.usage = {"input_tokens": inp, "output_tokens": out, "total_tokens": inp + out}
        if thinking:
            g.usage["reasoning_tokens"] = thinking // k + (1 if i < thinking % k else 0)
        if k > 1:  # the server counted the request, not each choice
            g.usage["estimated"] = True
        add_reasoning_tokens(g.usage, g.reasoning)


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
    extra_body = dict(cfg.extra_body)
    for path, value in reasoning_request(cfg.provider, **settings_of(cfg)).items():
        set_path(kwargs if path == "reasoning_effort" else extra_body, _body_key(path), value)
    if extra_body:
        kwargs["extra_body"] = extra_body
    # Our own connection pool per client: langchain-openai otherwise shares one cached
    # client per URL across event loops ("Event loop is closed" on a second asyncio.run).
    kwargs["http_async_client"] = httpx.AsyncClient(
        limits=httpx.Limits(max_connections=1000, max_keepalive_connections=200),
        timeout=cfg.timeout_s,
    )
    return reasoning_chat_openai()(**kwargs)


def _body_key(path: str) -> str:
    return path.removeprefix("extra_body.")


_REASONING_CHAT_OPENAI: type[BaseChatModel] | None = None


def reasoning_chat_openai() -> type[BaseChatModel]:
    """``ChatOpenAI`` that keeps the thinking trace: it copies ``reasoning_content``,
    ``reasoning`` and ``reasoning_details`` of each choice (and each streamed delta) into
    the message's ``additional_kwargs``, which ``ChatOpenAI`` leaves out on purpose.

    Overrides two private methods of langchain-openai (``_create_chat_result``,
    ``_convert_chunk_to_generation_chunk``): pyproject pins the versions where they have
    this shape, and ``tests/test_reasoning.py`` fails when an upgrade changes them."""
    global _REASONING_CHAT_OPENAI
    if _REASONING_CHAT_OPENAI is not None:
        return _REASONING_CHAT_OPENAI
    from langchain_openai import ChatOpenAI

    class ReasoningChatOpenAI(ChatOpenAI):
        def _create_chat_result(self, response: Any, generation_info: Any = None) -> Any:
            result = super()._create_chat_result(response, generation_info)
            raw = response.get("choices") if isinstance(response, dict) else response.choices
            for gen, choice in zip(result.generations, raw or (), strict=False):
                _keep_trace(gen.message, _field(choice, "message"))
            return result

        def _convert_chunk_to_generation_chunk(
            self, chunk: dict, default_chunk_class: type, base_generation_info: dict | None
        ) -> Any:
            out = super()._convert_chunk_to_generation_chunk(
                chunk, default_chunk_class, base_generation_info
            )
            choices = chunk.get("choices") or ()
            if out is not None and choices:
                _keep_trace(out.message, choices[0].get("delta"))
            return out

    _REASONING_CHAT_OPENAI = ReasoningChatOpenAI
    return ReasoningChatOpenAI


def _field(raw: Any, name: str) -> Any:
    """A field of a response part: a dict's key or an OpenAI SDK object's attribute (the
    SDK keeps fields it does not know, such as ``reasoning_content``, as extras)."""
    return raw.get(name) if isinstance(raw, dict) else getattr(raw, name, None)


def _keep_trace(message: Any, raw: Any) -> None:
    for name in REASONING_FIELDS:
        value = _field(raw, name) if raw is not None else None
        if value:
            message.additional_kwargs[name] = value


def build_chat_model(cfg: AgentConfig, url: str) -> BaseChatModel:
    """The chat client of ``cfg`` for one replica URL: ``ChatOpenAI`` for the ``openai``
    provider (any OpenAI-compatible endpoint), else LangChain's ``init_chat_model``."""
    if cfg.provider == "openai":
        return build_chat_openai(cfg, url)
    from toa_graph.agents.providers import build_provider_chat_model

    return build_provider_chat_model(cfg, url)
