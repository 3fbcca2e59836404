"""The agent pool: named chat models, created lazily, called with usage and latency recorded.

An agent is either an :class:`~toa_graph.config.AgentConfig` (a ``ChatOpenAI`` client, or
the provider's LangChain chat model, is built on first use, one per replica URL) or any
LangChain ``BaseChatModel`` (a fake in tests, or a client the caller built). Nothing is
created at import or construction time, so graphs built from a pool load cleanly in
servers and pickle. A replica's clients are kept per event loop (connections belong to the
loop that opened them), and a busy replica gets another client, with its own connection
pool, for every ``REQUESTS_PER_CLIENT`` (16) requests in flight: one deep HTTP pool costs
more per request than several shallow ones (``benchmarks/README.md``, issues 18 and 28).

Failures never escape as exceptions: after the retries of the agent's
:class:`~toa_graph.retry.RetryPolicy` (``max_retries + 1`` attempts, exponential backoff
with jitter, honouring ``Retry-After``) a call returns a :class:`Generation` carrying the
error, and the method records a failed sample and carries on with the other agents. The
pool is the only layer that retries: clients are built with their own retries off.

Replicas and failover: an agent with several ``base_urls`` gets its clients per replica,
and each request goes to the *healthy* replica with the fewest outstanding requests. A
replica whose request fails with a connection error, a timeout or an HTTP 5xx is taken
out for a cool-down (``cooldown_s``, doubling on each failed probe up to
``max_cooldown_s``) and the request is sent again at once to another healthy replica, so
a replica going down mid-run costs no samples. When the cool-down ends, a health probe
(``GET <base_url>/models``) runs in the background; if it answers, the replica is back
in. When every replica is out, requests go to the one whose cool-down ends first (the
request is then the probe) after the policy's backoff; ``max_retries + number of
replicas`` attempts in all.

Modules: :mod:`~toa_graph.agents.pool` (the pool), :mod:`~toa_graph.agents.replicas`
(replica health), :mod:`~toa_graph.agents.errors` (describing and classifying failures),
:mod:`~toa_graph.agents.client` (building clients, reading answers),
:mod:`~toa_graph.agents.providers` (other providers through ``init_chat_model``),
:mod:`~toa_graph.agents.limits` (per-agent request rate and concurrency caps).

Limits: an agent's ``requests_per_second`` and ``max_concurrency`` are enforced by the
pool for every request it sends (retries included), across all graph runs sharing it.
"""

from __future__ import annotations

from toa_graph.agents.client import Generation
from toa_graph.agents.errors import (
    EMPTY_RESPONSE,
    describe_error,
    is_bad_response,
    is_replica_error,
    is_retryable,
)
from toa_graph.agents.limits import AgentLimits
from toa_graph.agents.pool import AgentLike, AgentPool, AgentsLike, as_agent_pool

__all__ = [
    "EMPTY_RESPONSE",
    "AgentLike",
    "AgentLimits",
    "AgentPool",
    "AgentsLike",
    "Generation",
    "as_agent_pool",
    "describe_error",
    "is_bad_response",
    "is_replica_error",
    "is_retryable",
]
