"""The agent pool: named chat models, created lazily, called with usage and latency recorded.

An agent is either an :class:`~toa_graph.config.AgentConfig` (a ``ChatOpenAI`` client is
built on first use, one per replica URL) or any LangChain ``BaseChatModel`` (a fake in
tests, or a client the caller built). Nothing is created at import or construction time,
so graphs built from a pool load cleanly in servers and pickle.

Failures never escape as exceptions: after the client's own retries (exponential backoff
with jitter, honouring ``Retry-After``) a call returns a :class:`Generation` carrying the
error, and the method records a failed sample and carries on with the other agents.

Replicas and failover: an agent with several ``base_urls`` gets one client per replica,
and each request goes to the *healthy* replica with the fewest outstanding requests. A
replica whose request fails with a connection error, a timeout or an HTTP 5xx is taken
out for a cool-down (``cooldown_s``, doubling on each failed probe up to
``max_cooldown_s``) and the request is sent again at once to another healthy replica, so
a replica going down mid-run costs no samples. When the cool-down ends, a health probe
(``GET <base_url>/models``) runs in the background; if it answers, the replica is back
in. When every replica is out, requests go to the one whose cool-down ends first (the
request is then the probe) after a short backoff. Multi-replica clients are built with
``max_retries=0``: the pool does the retrying (``max_retries + number of replicas``
attempts), so a dead replica is skipped immediately instead of after the client's own
backoff. Single-URL agents keep the client's retries as before.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, convert_to_messages

from toa_graph.config import AgentConfig
from toa_graph.text import message_text as _text_of

if TYPE_CHECKING:
    from toa_graph.state import Usage

logger = logging.getLogger(__name__)

AgentLike = BaseChatModel | AgentConfig

EMPTY_RESPONSE = "empty response"
"""The error of a generation whose completion came back with no text."""
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
    loop: asyncio.AbstractEventLoop | None = field(default=None, repr=False)
    """The event loop the client's connections belong to (``None``: not used yet)."""
    down_until: float | None = None
    """``time.monotonic()`` when the cool-down ends; ``None`` while healthy."""
    strikes: int = 0
    """Consecutive times taken out (sets the cool-down); reset when it comes back."""
    probe: asyncio.Task[None] | None = field(default=None, repr=False)
    requests: int = 0
    """Requests answered."""
    failures: int = 0
    """Requests that failed with a replica error (connection, timeout, 5xx)."""
    outages: int = 0
    """Times taken out."""
    recoveries: int = 0
    """Times probed back in."""

    @property
    def healthy(self) -> bool:
        return self.down_until is None


@dataclass
class _Agent:
    name: str
    config: AgentConfig | None
    model: BaseChatModel | None
    replicas: list[_Replica] = field(default_factory=list)


class AgentPool:
    """Ordered, named agents. ``generate`` calls one; clients are built on first use.

    Args:
        agents: name -> chat model or AgentConfig (or a list of AgentConfig).
        cooldown_s: how long a failed replica stays out before it is probed.
        max_cooldown_s: cap of the cool-down, which doubles each time a probe fails.
        probe_timeout_s: timeout of the health probe ``GET <base_url>/models``.
        retry_backoff_s: first backoff before asking a single endpoint again after a
            malformed answer or an empty completion (doubles per attempt, with jitter).
    """

    def __init__(
        self,
        agents: AgentsLike,
        *,
        cooldown_s: float = 5.0,
        max_cooldown_s: float = 60.0,
        probe_timeout_s: float = 5.0,
        retry_backoff_s: float = 0.5,
    ) -> None:
        if cooldown_s <= 0 or max_cooldown_s < cooldown_s or probe_timeout_s <= 0:
            raise ValueError("need 0 < cooldown_s <= max_cooldown_s and probe_timeout_s > 0")
        self.cooldown_s = float(cooldown_s)
        self.max_cooldown_s = float(max_cooldown_s)
        self.probe_timeout_s = float(probe_timeout_s)
        self.retry_backoff_s = float(retry_backoff_s)
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
        replica = self._choose(agent, ())
        return self._replica_client(agent, replica), replica

    def build_clients(self) -> None:
        """Build every replica's client now instead of on first use (a worker process
        does this at start, so the first prompts do not pay for imports)."""
        for agent in self._agents.values():
            for replica in agent.replicas:
                self._replica_client(agent, replica)

    def _replica_client(self, agent: _Agent, replica: _Replica) -> BaseChatModel:
        loop = _running_loop()
        if (
            replica.client is not None
            and None not in (loop, replica.loop)
            and loop is not replica.loop
        ):
            # HTTP connections belong to the event loop that opened them: a pool reused
            # from a second asyncio.run() (notebooks, repeated synthesize()) needs new ones.
            replica.client = None
        if replica.client is None:
            assert agent.config is not None
            replica.client = _build_chat_openai(
                agent.config,
                replica.url,
                max_retries=0 if len(agent.replicas) > 1 else None,
            )
        if loop is not None:
            replica.loop = loop
        return replica.client

    def _choose(self, agent: _Agent, tried: Sequence[_Replica]) -> _Replica:
        """The healthy replica with the fewest outstanding requests (ties: the first),
        skipping ``tried``; with none healthy, the one whose cool-down ends first."""
        if len(agent.replicas) == 1:
            return agent.replicas[0]
        now = time.monotonic()
        for r in agent.replicas:
            if r.down_until is not None and r.down_until <= now:
                self._start_probe(agent, r)
        healthy = [r for r in agent.replicas if r.down_until is None and r not in tried]
        if healthy:
            return min(healthy, key=lambda r: r.outstanding)
        pool = [r for r in agent.replicas if r not in tried] or agent.replicas
        return min(pool, key=lambda r: (r.down_until or 0.0, r.outstanding))

    def _take_out(self, agent: _Agent, replica: _Replica, err: str) -> None:
        replica.failures += 1
        if replica.down_until is not None:
            return  # already out: in-flight requests failing together count once
        replica.strikes += 1
        replica.outages += 1
        cool = min(self.max_cooldown_s, self.cooldown_s * 2 ** (replica.strikes - 1))
        replica.down_until = time.monotonic() + cool
        up = sum(r.down_until is None for r in agent.replicas)
        logger.warning(
            "agent %s: replica %s taken out for %.1f s (%s); %d of %d replicas healthy",
            agent.name, replica.url, cool, err, up, len(agent.replicas),
        )  # fmt: skip

    def _bring_back(self, agent: _Agent, replica: _Replica, how: str) -> None:
        if replica.down_until is None:
            return
        replica.down_until = None
        replica.strikes = 0
        replica.recoveries += 1
        logger.warning("agent %s: replica %s is back (%s)", agent.name, replica.url, how)

    def _start_probe(self, agent: _Agent, replica: _Replica) -> None:
        if replica.probe is not None and not replica.probe.done():
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        replica.probe = loop.create_task(self._probe(agent, replica), name=f"probe {replica.url}")

    async def _probe(self, agent: _Agent, replica: _Replica) -> None:
        assert agent.config is not None
        ok, why = await _health_check(replica.url, agent.config, self.probe_timeout_s)
        if replica.down_until is None:
            return  # a request got through meanwhile
        if ok:
            self._bring_back(agent, replica, "health probe answered")
            return
        replica.strikes += 1
        cool = min(self.max_cooldown_s, self.cooldown_s * 2 ** (replica.strikes - 1))
        replica.down_until = time.monotonic() + cool
        logger.info(
            "agent %s: replica %s still down (%s); next probe in %.1f s",
            agent.name, replica.url, why, cool,
        )  # fmt: skip

    def replica_stats(self, name: str) -> list[dict[str, Any]]:
        """Per replica of agent ``name``: url, healthy, outstanding, requests, failures,
        outages, recoveries (empty for agents given as chat models)."""
        return [
            {
                "url": r.url,
                "healthy": r.down_until is None,
                "outstanding": r.outstanding,
                "requests": r.requests,
                "failures": r.failures,
                "outages": r.outages,
                "recoveries": r.recoveries,
            }
            for r in self._agent(name).replicas
        ]

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
        kwargs: dict[str, Any] = {}
        if temperature is not None:
            kwargs["temperature"] = temperature
        if max_tokens is not None:
            kwargs["max_tokens"] = max_tokens
        if n > 1:
            kwargs["n"] = n
        chat = convert_to_messages(list(messages))
        if agent.model is not None or len(agent.replicas) == 1:
            return await self._generate_single(agent, chat, kwargs, n)
        return await self._generate_failover(agent, chat, kwargs, n)

    async def _generate_single(
        self, agent: _Agent, chat: list[BaseMessage], kwargs: dict[str, Any], n: int
    ) -> list[Generation]:
        """One request to a single endpoint. The client retries transport errors, 5xx and
        429 itself; a malformed 200 answer (empty, truncated or non-JSON body) or an empty
        completion is asked again here, with backoff and jitter, up to ``max_retries``."""
        client, replica = self._client(agent)
        attempts = 1 + (agent.config.max_retries if agent.config is not None else 0)
        start = time.perf_counter()
        for attempt in range(attempts):
            last = attempt + 1 >= attempts
            try:
                out = await self._request(client, replica, chat, kwargs, n)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if last or not is_bad_response(exc):
                    return self._failed(agent.name, exc, time.perf_counter() - start, n)
                why = describe_error(exc)
            else:
                if last or not (n == 1 and out[0].error == EMPTY_RESPONSE):
                    return out
                why = EMPTY_RESPONSE
            delay = self.retry_backoff_s * 2**attempt * (0.5 + random.random() / 2)
            logger.info(
                "agent %s: bad answer (%s); asking again in %.2f s (%d/%d)",
                agent.name, why, delay, attempt + 1, attempts - 1,
            )  # fmt: skip
            await asyncio.sleep(min(delay, 8.0))
        raise AssertionError("unreachable")  # pragma: no cover

    async def _generate_failover(
        self, agent: _Agent, chat: list[BaseMessage], kwargs: dict[str, Any], n: int
    ) -> list[Generation]:
        """One request over several replicas: a replica error takes the replica out and
        sends the request again at once to another healthy one; with none left, back off."""
        assert agent.config is not None
        attempts = agent.config.max_retries + len(agent.replicas)
        tried: list[_Replica] = []
        start = time.perf_counter()
        exc: Exception | None = None
        backoffs = 0
        for _ in range(attempts):
            replica = self._choose(agent, tried)
            client = self._replica_client(agent, replica)
            try:
                out = await self._request(client, replica, chat, kwargs, n)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                exc = e
                replica_err = is_replica_error(e)
                if not replica_err and not is_retryable(e):
                    break
                if replica_err:
                    self._take_out(agent, replica, describe_error(e))
                tried.append(replica)
                if not any(r.down_until is None and r not in tried for r in agent.replicas):
                    # nothing healthy left to try now: back off, then try again
                    delay = min(8.0, 0.25 * 2**backoffs) * (0.5 + random.random() / 2)
                    backoffs += 1
                    await asyncio.sleep(delay)
                    tried = []
                continue
            self._bring_back(agent, replica, "a request succeeded")
            return out
        assert exc is not None
        return self._failed(agent.name, exc, time.perf_counter() - start, n)

    def _failed(self, name: str, exc: BaseException, latency: float, n: int) -> list[Generation]:
        err = describe_error(exc)
        logger.warning("agent %s failed after retries: %s", name, err)
        return [Generation("", _empty_usage(), latency, err) for _ in range(n)]

    async def _request(
        self,
        client: BaseChatModel,
        replica: _Replica | None,
        chat: list[BaseMessage],
        kwargs: dict[str, Any],
        n: int,
    ) -> list[Generation]:
        """One request to one client; raises on failure."""
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
                    text = _text_of(msg or g)
                    err = None if text.strip() else EMPTY_RESPONSE
                    out.append(Generation(text, usage, latency / len(gens), err))
                if not out:
                    raise RuntimeError("the endpoint returned no choices")
                _split_shared_usage(out, result.llm_output)
                while len(out) < n:
                    out.append(
                        Generation(
                            "", _empty_usage(), latency, "endpoint returned fewer choices than n"
                        )
                    )
                result_gens = out[:n]
            else:
                msg = await client.ainvoke(chat, **kwargs)
                latency = time.perf_counter() - start
                text = _text_of(msg)
                error = None if text.strip() else EMPTY_RESPONSE
                result_gens = [Generation(text, _usage_of(msg), latency, error)]
            if replica is not None:
                replica.requests += 1
            return result_gens
        finally:
            if replica is not None:
                replica.outstanding -= 1


def as_agent_pool(agents: AgentsLike | AgentPool) -> AgentPool:
    """``agents`` itself when it is already a pool, else a new :class:`AgentPool` of them."""
    return agents if isinstance(agents, AgentPool) else AgentPool(agents)


def is_replica_error(exc: BaseException) -> bool:
    """Whether a failed request says the replica is unwell (connection refused or reset,
    timeout, HTTP 5xx) rather than that the request itself is bad (4xx)."""
    status = getattr(exc, "status_code", None)
    if isinstance(status, int):
        return status >= 500
    if isinstance(exc, ConnectionError | TimeoutError):
        return True
    names = {c.__name__ for c in type(exc).__mro__}
    # openai.APIConnectionError / APITimeoutError, httpx.TransportError (connect, read,
    # remote protocol errors), without importing either here.
    return bool(names & {"APIConnectionError", "APITimeoutError", "TransportError"})


def is_retryable(exc: BaseException) -> bool:
    """Worth sending again (to any replica): replica errors, 408/409/429, malformed answers."""
    status = getattr(exc, "status_code", None)
    return is_replica_error(exc) or status in (408, 409, 429) or is_bad_response(exc)


def is_bad_response(exc: BaseException) -> bool:
    """An HTTP 200 whose body is not a chat completion: empty, truncated or not JSON (a
    proxy's error page, a server dying mid-write). The openai client does not retry these."""
    if isinstance(exc, json.JSONDecodeError):
        return True
    names = {c.__name__ for c in type(exc).__mro__}
    if names & {"APIResponseValidationError"}:
        return True
    # langchain-openai, given the text of a non-JSON 200 body instead of a completion
    return isinstance(exc, ValueError) and str(exc).startswith("Unexpected response type")


async def _health_check(url: str, cfg: AgentConfig, timeout_s: float) -> tuple[bool, str]:
    """``GET <url>/models``: (answered with 2xx, why not)."""
    import httpx

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


def _split_shared_usage(gens: list[Generation], llm_output: dict[str, Any] | None) -> None:
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


def _build_chat_openai(
    cfg: AgentConfig, url: str, *, max_retries: int | None = None
) -> BaseChatModel:
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
        "max_retries": cfg.max_retries if max_retries is None else max_retries,
        "stream_usage": True,
    }
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


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
