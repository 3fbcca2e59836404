"""The agent pool: named chat models, created lazily, called with usage and latency
recorded, retried under one :class:`~toa_graph.retry.RetryPolicy` per agent."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage, convert_to_messages

from toa_graph.agents.client import (
    Generation,
    build_chat_model,
    empty_usage,
    generation_of,
    health_check,
    split_shared_usage,
)
from toa_graph.agents.errors import (
    EMPTY_RESPONSE,
    EmptyResponseError,
    describe_error,
    is_replica_error,
    is_retryable,
)
from toa_graph.agents.limits import AgentLimits
from toa_graph.agents.providers import check_provider
from toa_graph.agents.replicas import ClientSet, Replica, ReplicaSet
from toa_graph.config import AgentConfig
from toa_graph.cost import Prices
from toa_graph.retry import RetryPolicy

__all__ = ["AgentLike", "AgentPool", "AgentsLike", "as_agent_pool"]

logger = logging.getLogger("toa_graph.agents")

REQUESTS_PER_CLIENT = 16
"""Requests in flight per chat client of a replica before another client (with its own
connection pool) is opened: httpx's pool costs more per request the more connections it
holds (it scans them on every request event), so one busy agent (PRS: a whole run's
requests on one agent) spreads its requests over several pools instead of one deep one.
16 rather than 64 cut ~20% of the CPU a request at 128 in flight over 3 agents
(benchmarks/README.md, issue 28)."""
MAX_CLIENTS_PER_REPLICA = 16

AgentLike = BaseChatModel | AgentConfig
AgentsLike = Mapping[str, AgentLike] | Sequence[AgentConfig]


def _retry_single(exc: BaseException) -> bool:
    return isinstance(exc, EmptyResponseError) or is_retryable(exc)


@dataclass
class _Agent:
    name: str
    config: AgentConfig | None
    model: BaseChatModel | None
    replicas: ReplicaSet | None
    retry: RetryPolicy
    limits: AgentLimits


class AgentPool:
    """Ordered, named agents. ``generate`` calls one; clients are built on first use.

    Args:
        agents: name -> chat model or AgentConfig (or a list of AgentConfig).
        cooldown_s: how long a failed replica stays out before it is probed.
        max_cooldown_s: cap of the cool-down, which doubles each time a probe fails.
        probe_timeout_s: timeout of the health probe ``GET <base_url>/models``.
        retry_backoff_s: first backoff before a request is sent again (doubles per
            attempt, with jitter; a server's ``Retry-After`` is honoured).
        limit_share: this pool's share of each agent's ``requests_per_second`` and
            ``max_concurrency`` (a Ray worker of N uses ``1/N``). The limits hold across
            every graph run, task and event loop using this pool.
        prices: name -> :class:`~toa_graph.cost.Prices` for agents given as chat models
            (an AgentConfig's own ``price_per_million`` wins).
    """

    def __init__(
        self,
        agents: AgentsLike,
        *,
        cooldown_s: float = 5.0,
        max_cooldown_s: float = 60.0,
        probe_timeout_s: float = 5.0,
        retry_backoff_s: float = 0.5,
        limit_share: float = 1.0,
        prices: Mapping[str, Prices] | None = None,
    ) -> None:
        self._prices = dict(prices or {})
        if not 0 < limit_share <= 1:
            raise ValueError(f"limit_share must be in (0, 1], got {limit_share}")
        self.limit_share = float(limit_share)
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
            self._agents[name] = self._make_agent(name, agent)

    def _make_agent(self, name: str, agent: AgentLike) -> _Agent:
        if isinstance(agent, BaseChatModel):
            return _Agent(name, None, agent, None, RetryPolicy(attempts=1), AgentLimits())
        if not isinstance(agent, AgentConfig):
            raise TypeError(
                f"agent {name!r}: expected a LangChain chat model or an AgentConfig, "
                f"got {type(agent).__name__}"
            )
        if agent.name != name:
            raise ValueError(f"agent key {name!r} does not match its config name {agent.name!r}")
        probe = None
        if agent.provider == "openai":  # other providers have no common health endpoint
            probe = functools.partial(_probe, cfg=agent, timeout_s=self.probe_timeout_s)
        else:
            check_provider(agent)  # a missing package fails here, not on every request
        replicas = ReplicaSet(
            name,
            agent.urls,
            cooldown_s=self.cooldown_s,
            max_cooldown_s=self.max_cooldown_s,
            probe=probe,
        )
        retry = RetryPolicy.from_retries(
            agent.max_retries, backoff_s=self.retry_backoff_s, retry_on=_retry_single
        )
        limits = AgentLimits.scaled(
            agent.requests_per_second, agent.max_concurrency, self.limit_share
        )
        return _Agent(name, agent, None, replicas, retry, limits)

    @property
    def names(self) -> list[str]:
        return list(self._agents)

    def __contains__(self, name: object) -> bool:
        return name in self._agents

    def __len__(self) -> int:
        return len(self._agents)

    def config(self, name: str) -> AgentConfig | None:
        return self._agent(name).config

    def retry_policy(self, name: str) -> RetryPolicy:
        """The retry policy of agent ``name`` (attempts from its ``max_retries``)."""
        return self._agent(name).retry

    def limits(self, name: str) -> AgentLimits:
        """The request limits of agent ``name`` in this pool (already scaled by
        ``limit_share``; inactive when its config sets none)."""
        return self._agent(name).limits

    def prices(self, name: str) -> Prices | None:
        """Agent ``name``'s prices (``None``: its generations carry no cost)."""
        cfg = self._agent(name).config
        if cfg is not None and cfg.price_per_million is not None:
            return cfg.price_per_million
        return self._prices.get(name)

    def max_tokens(self, name: str) -> int | None:
        """Agent ``name``'s own ``max_tokens`` (its config's, or its chat model's)."""
        agent = self._agent(name)
        value = (
            agent.config.max_tokens if agent.config else getattr(agent.model, "max_tokens", None)
        )
        return value if isinstance(value, int) else None

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

    def build_clients(self) -> None:
        """Build every replica's first client now instead of on first use (a worker
        process does this at start, so the first prompts do not pay for imports)."""
        for agent in self._agents.values():
            for replica in agent.replicas.replicas if agent.replicas else ():
                self._replica_client(agent, replica)

    def _replica_client(self, agent: _Agent, replica: Replica) -> tuple[ClientSet, int]:
        """This event loop's clients of the replica and the index of the least busy one;
        another client is opened when every one has :data:`REQUESTS_PER_CLIENT` requests
        in flight."""
        loop = _running_loop()
        if loop is None:
            shards = replica.unbound = replica.unbound or ClientSet()
        else:
            found = replica.clients.get(loop)
            if found is None:
                found = replica.unbound or ClientSet()
                replica.unbound = None
                for seen in list(replica.clients):  # list(): other threads' loops may add
                    if seen.is_closed():
                        replica.clients.pop(seen, None)  # its connections died with it
                replica.clients[loop] = found
            shards = found
        load = shards.load
        i = min(range(len(load)), key=load.__getitem__) if load else -1
        if i < 0 or (load[i] >= REQUESTS_PER_CLIENT and len(load) < MAX_CLIENTS_PER_REPLICA):
            assert agent.config is not None
            shards.clients.append(build_chat_model(agent.config, replica.url))
            load.append(0)
            i = len(load) - 1
        return shards, i

    def replica_stats(self, name: str) -> list[dict[str, Any]]:
        """Per replica of agent ``name``: url, healthy, outstanding, requests, failures,
        outages, recoveries (empty for agents given as chat models)."""
        replicas = self._agent(name).replicas
        return replicas.stats() if replicas else []

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
        if agent.replicas is None or len(agent.replicas) == 1:
            return await self._generate_single(agent, chat, kwargs, n)
        return await self._generate_failover(agent, chat, kwargs, n)

    async def _generate_single(
        self, agent: _Agent, chat: list[BaseMessage], kwargs: dict[str, Any], n: int
    ) -> list[Generation]:
        """One request to a single endpoint, retried under the agent's policy: server
        errors, 408/409/429 (after ``Retry-After``), malformed 200 answers and empty
        completions are asked again; other 4xx fail at once."""
        start = time.perf_counter()

        async def once() -> list[Generation]:
            if agent.model is not None:
                out = await self._request(agent, agent.model, None, chat, kwargs, n)
            else:
                assert agent.replicas is not None
                replica = agent.replicas.replicas[0]
                out = await self._request(agent, None, replica, chat, kwargs, n)
            if n == 1 and out[0].error == EMPTY_RESPONSE:
                raise EmptyResponseError(out)
            return out

        try:
            return await agent.retry.call(once, what=f"agent {agent.name}")
        except asyncio.CancelledError:
            raise
        except EmptyResponseError as empty:
            return list(empty.generations)
        except Exception as exc:
            return self._failed(agent.name, exc, time.perf_counter() - start, n)

    async def _generate_failover(
        self, agent: _Agent, chat: list[BaseMessage], kwargs: dict[str, Any], n: int
    ) -> list[Generation]:
        """One request over several replicas: a replica error takes the replica out and
        sends the request again at once to another healthy one; with none left, back off
        (the policy's backoff). ``attempts - 1 + replicas`` tries in all."""
        assert agent.config is not None and agent.replicas is not None
        replicas = agent.replicas
        attempts = agent.retry.attempts - 1 + len(replicas)
        tried: list[Replica] = []
        start = time.perf_counter()
        exc: Exception | None = None
        backoffs = 0
        for _ in range(attempts):
            replica = replicas.choose(tried)
            try:
                out = await self._request(agent, None, replica, chat, kwargs, n)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                exc = e
                replica_err = is_replica_error(e)
                if not replica_err and not is_retryable(e):
                    break
                if replica_err:
                    replicas.take_out(replica, describe_error(e))
                tried.append(replica)
                if not replicas.any_left(tried):
                    # nothing healthy left to try now: back off, then try again
                    await asyncio.sleep(agent.retry.delay(backoffs, e))
                    backoffs += 1
                    tried = []
                continue
            replicas.bring_back(replica, "a request succeeded")
            return out
        assert exc is not None
        return self._failed(agent.name, exc, time.perf_counter() - start, n)

    def _failed(self, name: str, exc: BaseException, latency: float, n: int) -> list[Generation]:
        err = describe_error(exc)
        logger.warning("agent %s failed after retries: %s", name, err)
        return [Generation("", empty_usage(), latency, err) for _ in range(n)]

    async def _request(
        self,
        agent: _Agent,
        model: BaseChatModel | None,
        replica: Replica | None,
        chat: list[BaseMessage],
        kwargs: dict[str, Any],
        n: int,
    ) -> list[Generation]:
        """One request, to ``model`` or to one of ``replica``'s clients, under the agent's
        limits; raises on failure. The latency counts from when the request is sent
        (after any wait for the limits)."""
        async with agent.limits.request():
            if replica is None:
                assert model is not None
                return await self._send(model, None, chat, kwargs, n)
            shards, i = self._replica_client(agent, replica)
            shards.load[i] += 1
            try:
                return await self._send(shards.clients[i], replica, chat, kwargs, n)
            finally:
                shards.load[i] -= 1

    async def _send(
        self,
        client: BaseChatModel,
        replica: Replica | None,
        chat: list[BaseMessage],
        kwargs: dict[str, Any],
        n: int,
    ) -> list[Generation]:
        start = time.perf_counter()
        if replica is not None:
            replica.outstanding += 1
        try:
            if n > 1:
                result_gens = await self._request_n(client, chat, kwargs, n, start)
            else:
                msg = await client.ainvoke(chat, **kwargs)
                result_gens = [generation_of(msg, time.perf_counter() - start)]
            if replica is not None:
                replica.requests += 1
            return result_gens
        finally:
            if replica is not None:
                replica.outstanding -= 1

    @staticmethod
    async def _request_n(
        client: BaseChatModel,
        chat: list[BaseMessage],
        kwargs: dict[str, Any],
        n: int,
        start: float,
    ) -> list[Generation]:
        """``n`` choices in one request; missing choices are failed generations."""
        result = await client.agenerate([chat], **kwargs)
        gens = result.generations[0]
        latency = time.perf_counter() - start
        out = []
        for g in gens:
            finish = (g.generation_info or {}).get("finish_reason")
            out.append(generation_of(getattr(g, "message", g), latency / len(gens), finish))
        if not out:
            raise RuntimeError("the endpoint returned no choices")
        split_shared_usage(out, result.llm_output)
        while len(out) < n:
            out.append(
                Generation("", empty_usage(), latency, "endpoint returned fewer choices than n")
            )
        return out[:n]


async def _probe(url: str, *, cfg: AgentConfig, timeout_s: float) -> tuple[bool, str]:
    return await health_check(url, cfg, timeout_s)


def as_agent_pool(agents: AgentsLike | AgentPool) -> AgentPool:
    """``agents`` itself when it is already a pool, else a new :class:`AgentPool` of them."""
    return agents if isinstance(agents, AgentPool) else AgentPool(agents)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
