"""The agent pool: named chat models, created lazily, called with usage and latency recorded.

An agent is either an :class:`~toa_graph.config.AgentConfig` (a ``ChatOpenAI`` client is
built on first use, one per replica URL) or any LangChain ``BaseChatModel`` (a fake in
tests, or a client the caller built). Nothing is created at import or construction time,
so graphs built from a pool load cleanly in servers and pickle.

Failures never escape as exceptions: after the client's own retries (exponential backoff
with jitter, honouring ``Retry-After``) a call returns a :class:`Generation` carrying the
error, and the method records a failed sample and carries on with the other agents.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, convert_to_messages

from toa_graph.config import AgentConfig

if TYPE_CHECKING:
    from toa_graph.state import Usage

logger = logging.getLogger(__name__)

AgentLike = BaseChatModel | AgentConfig
AgentsLike = Mapping[str, AgentLike] | Sequence[AgentConfig]


@dataclass
class Generation:
    """The outcome of one generation: text plus accounting, or an error."""

    text: str
    usage: Usage
    latency_s: float
    error: str | None = None


def _empty_usage() -> Usage:
    return {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0}


def _usage_of(msg: BaseMessage) -> Usage:
    meta = getattr(msg, "usage_metadata", None) or {}
    inp = int(meta.get("input_tokens", 0) or 0)
    out = int(meta.get("output_tokens", 0) or 0)
    return {
        "input_tokens": inp,
        "output_tokens": out,
        "total_tokens": int(meta.get("total_tokens", inp + out) or 0),
    }


def describe_error(exc: BaseException) -> str:
    """A one-line error for records and logs. Never includes request headers (API keys)."""
    name = type(exc).__name__
    status = getattr(exc, "status_code", None)
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if len(text) > 300:
        text = text[:300] + "..."
    return f"{name}{f' (HTTP {status})' if status else ''}: {text}" if text else name


@dataclass
class _Replica:
    url: str
    outstanding: int = 0
    client: BaseChatModel | None = None


@dataclass
class _Agent:
    name: str
    config: AgentConfig | None
    model: BaseChatModel | None
    replicas: list[_Replica] = field(default_factory=list)


class AgentPool:
    """Ordered, named agents. ``generate`` calls one; clients are built on first use."""

    def __init__(self, agents: AgentsLike) -> None:
        self._agents: dict[str, _Agent] = {}
        items: list[tuple[str, AgentLike]]
        if isinstance(agents, Mapping):
            items = list(agents.items())
        else:
            items = [(a.name, a) for a in agents]
        if not items:
            raise ValueError("at least one agent is needed")
        for name, agent in items:
            if isinstance(agent, AgentConfig):
                if agent.name != name:
                    raise ValueError(
                        f"agent key {name!r} does not match its config name {agent.name!r}"
                    )
                self._agents[name] = _Agent(name, agent, None, [_Replica(u) for u in agent.urls])
            elif isinstance(agent, BaseChatModel):
                self._agents[name] = _Agent(name, None, agent)
            else:
                raise TypeError(
                    f"agent {name!r}: expected a LangChain chat model or an AgentConfig, "
                    f"got {type(agent).__name__}"
                )

    @property
    def names(self) -> list[str]:
        return list(self._agents)

    def __contains__(self, name: object) -> bool:
        return name in self._agents

    def __len__(self) -> int:
        return len(self._agents)

    def config(self, name: str) -> AgentConfig | None:
        return self._agent(name).config

    def system_prompt(self, name: str) -> str | None:
        cfg = self._agent(name).config
        return cfg.system_prompt if cfg else None

    def supports_n(self, name: str) -> bool:
        cfg = self._agent(name).config
        return bool(cfg and cfg.supports_n)

    def _agent(self, name: str) -> _Agent:
        try:
            return self._agents[name]
        except KeyError:
            raise KeyError(f"unknown agent {name!r}; agents: {self.names}") from None

    def _client(self, agent: _Agent) -> tuple[BaseChatModel, _Replica | None]:
        if agent.model is not None:
            return agent.model, None
        # Least outstanding requests first; ties go to the first replica.
        replica = min(agent.replicas, key=lambda r: r.outstanding)
        if replica.client is None:
            replica.client = _build_chat_openai(agent.config, replica.url)  # type: ignore[arg-type]
        return replica.client, replica

    async def generate(
        self,
        name: str,
        messages: Sequence[BaseMessage | dict[str, Any]],
        *,
        temperature: float | None = None,
        max_tokens: int | None = None,
        n: int = 1,
    ) -> list[Generation]:
        """Generate ``n`` answers from agent ``name``. Always returns ``n`` generations;
        failed ones carry ``error``. With ``n > 1`` one request asks for ``n`` choices
        where the endpoint supports it, else ``n`` concurrent requests are made."""
        agent = self._agent(name)
        if n > 1 and not (agent.config and agent.config.supports_n):
            results = await asyncio.gather(
                *(
                    self.generate(name, messages, temperature=temperature, max_tokens=max_tokens)
                    for _ in range(n)
                )
            )
            return [g[0] for g in results]
        client, replica = self._client(agent)
        kwargs: dict[str, Any] = {}
        if temperature is not None:
            kwargs["temperature"] = temperature
        if max_tokens is not None:
            kwargs["max_tokens"] = max_tokens
        if n > 1:
            kwargs["n"] = n
        chat = convert_to_messages(list(messages))
        start = time.perf_counter()
        if replica is not None:
            replica.outstanding += 1
        try:
            if n > 1:
                result = await client.agenerate([chat], **kwargs)
                gens = result.generations[0]
                latency = time.perf_counter() - start
                out = []
                for g in gens:
                    msg = getattr(g, "message", None)
                    usage = _usage_of(msg) if isinstance(msg, AIMessage) else _empty_usage()
                    out.append(Generation(_text_of(msg or g), usage, latency / len(gens)))
                if not out:
                    raise RuntimeError("the endpoint returned no choices")
                _split_shared_usage(out, result.llm_output)
                while len(out) < n:
                    out.append(
                        Generation(
                            "", _empty_usage(), latency, "endpoint returned fewer choices than n"
                        )
                    )
                return out[:n]
            msg = await client.ainvoke(chat, **kwargs)
            latency = time.perf_counter() - start
            text = _text_of(msg)
            error = None if text.strip() else "empty response"
            return [Generation(text, _usage_of(msg), latency, error)]
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            latency = time.perf_counter() - start
            err = describe_error(exc)
            logger.warning("agent %s failed after retries: %s", name, err)
            return [Generation("", _empty_usage(), latency, err) for _ in range(n)]
        finally:
            if replica is not None:
                replica.outstanding -= 1


def _text_of(msg: Any) -> str:
    content = getattr(msg, "content", None)
    if content is None:
        content = getattr(msg, "text", "")
    if isinstance(content, list):
        return "".join(c.get("text", "") if isinstance(c, dict) else str(c) for c in content)
    return str(content)


def _split_shared_usage(gens: list[Generation], llm_output: dict[str, Any] | None) -> None:
    """With ``n`` choices the server reports one usage: prompt tokens once, completion tokens
    summed. Spread it so that summing the samples gives the request's true total."""
    usage = (llm_output or {}).get("token_usage") or {}
    if not usage or any(g.usage["total_tokens"] for g in gens[1:]):
        return
    k = len(gens)
    prompt = int(usage.get("prompt_tokens", 0) or 0)
    completion = int(usage.get("completion_tokens", 0) or 0)
    for i, g in enumerate(gens):
        inp = prompt // k + (1 if i < prompt % k else 0)
        out = completion // k + (1 if i < completion % k else 0)
        g.usage = {"input_tokens": inp, "output_tokens": out, "total_tokens": inp + out}


def _build_chat_openai(cfg: AgentConfig, url: str) -> BaseChatModel:
    from langchain_openai import ChatOpenAI

    if "://" in url and not url.startswith(("http://", "https://")):
        raise ValueError(
            f"agent {cfg.name!r}: base_url {url!r} is not an HTTP endpoint. For embedded:// "
            "agents start the servers first: `python -m toa_graph.embedded start` (or use "
            "toa_graph.embedded.EmbeddedStack, which resolves these URLs)"
        )

    kwargs: dict[str, Any] = {
        "model": cfg.model,
        "base_url": url,
        "api_key": cfg.api_key(),
        "temperature": cfg.temperature,
        "top_p": cfg.top_p,
        "max_tokens": cfg.max_tokens,
        "timeout": cfg.timeout_s,
        "max_retries": cfg.max_retries,
        "stream_usage": True,
    }
    if cfg.stop:
        kwargs["stop"] = list(cfg.stop)
    if cfg.extra_body:
        kwargs["extra_body"] = dict(cfg.extra_body)
    return ChatOpenAI(**kwargs)
