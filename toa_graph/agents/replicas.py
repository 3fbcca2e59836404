"""The replicas of one agent and their health: a small state machine per replica.

A replica is *healthy* (``down_until is None``) or *out* until a cool-down ends. A
request failing with a server error takes it out (``cooldown_s``, doubling with each
consecutive strike up to ``max_cooldown_s``); when the cool-down ends, a background
health probe runs: an answer brings it back, a failure starts a longer cool-down (with no
probe, as for providers without a health endpoint, it is back on trial). A
request that succeeds on an out replica (it was the only choice) also brings it back.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from langchain_core.language_models import BaseChatModel

__all__ = ["ClientSet", "Replica", "ReplicaSet"]

logger = logging.getLogger("toa_graph.agents")

Probe = Callable[[str], Awaitable[tuple[bool, str]]]
"""``url -> (answered, why not)``."""


@dataclass
class ClientSet:
    """One event loop's chat clients of a replica, each with its own connection pool,
    and the requests in flight on each."""

    clients: list[BaseChatModel] = field(default_factory=list)
    load: list[int] = field(default_factory=list)


@dataclass
class Replica:
    url: str
    outstanding: int = 0
    clients: dict[asyncio.AbstractEventLoop, ClientSet] = field(default_factory=dict, repr=False)
    """Its chat clients per event loop (HTTP connections belong to the loop that opened
    them: a notebook's second ``asyncio.run``, a server's threads); a closed loop's are
    dropped when another loop comes."""
    unbound: ClientSet | None = field(default=None, repr=False)
    """Clients built outside any event loop, taken by the first loop that sends."""
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


class ReplicaSet:
    """The replicas of agent ``name``: which one gets the next request, and their health."""

    def __init__(
        self,
        name: str,
        urls: Sequence[str],
        *,
        cooldown_s: float,
        max_cooldown_s: float,
        probe: Probe | None = None,
    ) -> None:
        self.name = name
        self.replicas = [Replica(u) for u in urls]
        self.cooldown_s = cooldown_s
        self.max_cooldown_s = max_cooldown_s
        self._probe_fn = probe

    def __len__(self) -> int:
        return len(self.replicas)

    def choose(self, tried: Sequence[Replica] = ()) -> Replica:
        """The healthy replica with the fewest outstanding requests (ties: the first),
        skipping ``tried``; with none healthy, the one whose cool-down ends first."""
        if len(self.replicas) == 1:
            return self.replicas[0]
        now = time.monotonic()
        for r in self.replicas:
            if r.down_until is not None and r.down_until <= now:
                self._start_probe(r)
        healthy = [r for r in self.replicas if r.down_until is None and r not in tried]
        if healthy:
            return min(healthy, key=lambda r: r.outstanding)
        pool = [r for r in self.replicas if r not in tried] or self.replicas
        return min(pool, key=lambda r: (r.down_until or 0.0, r.outstanding))

    def any_left(self, tried: Sequence[Replica]) -> bool:
        """Whether a healthy replica not in ``tried`` remains."""
        return any(r.down_until is None and r not in tried for r in self.replicas)

    def _cooldown(self, replica: Replica) -> float:
        return min(self.max_cooldown_s, self.cooldown_s * 2 ** (replica.strikes - 1))

    def take_out(self, replica: Replica, err: str) -> None:
        replica.failures += 1
        if replica.down_until is not None:
            return  # already out: in-flight requests failing together count once
        replica.strikes += 1
        replica.outages += 1
        cool = self._cooldown(replica)
        replica.down_until = time.monotonic() + cool
        up = sum(r.down_until is None for r in self.replicas)
        logger.warning(
            "agent %s: replica %s taken out for %.1f s (%s); %d of %d replicas healthy",
            self.name, replica.url, cool, err, up, len(self.replicas),
        )  # fmt: skip

    def bring_back(self, replica: Replica, how: str) -> None:
        if replica.down_until is None:
            return
        replica.down_until = None
        replica.strikes = 0
        replica.recoveries += 1
        logger.warning("agent %s: replica %s is back (%s)", self.name, replica.url, how)

    def _start_probe(self, replica: Replica) -> None:
        if self._probe_fn is None:
            # nothing to probe with (a provider without a health endpoint): back in on
            # trial; its strikes stay, so failing again takes it out for longer
            replica.down_until = None
            logger.info("agent %s: replica %s back on trial", self.name, replica.url)
            return
        if replica.probe is not None and not replica.probe.done():
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        replica.probe = loop.create_task(self._probe(replica), name=f"probe {replica.url}")

    async def _probe(self, replica: Replica) -> None:
        assert self._probe_fn is not None
        ok, why = await self._probe_fn(replica.url)
        if replica.down_until is None:
            return  # a request got through meanwhile
        if ok:
            self.bring_back(replica, "health probe answered")
            return
        replica.strikes += 1
        cool = self._cooldown(replica)
        replica.down_until = time.monotonic() + cool
        logger.info(
            "agent %s: replica %s still down (%s); next probe in %.1f s",
            self.name, replica.url, why, cool,
        )  # fmt: skip

    def stats(self) -> list[dict[str, Any]]:
        """Per replica: url, healthy, outstanding, requests, failures, outages, recoveries."""
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
            for r in self.replicas
        ]
