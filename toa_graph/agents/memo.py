"""Generations remembered per prompt, so a resumed prompt pays for none twice.

The synthesis runner sets a :class:`PromptMemo` for each prompt it runs
(:data:`CURRENT_MEMO`, a context variable: every task the prompt's graph starts inherits
it), and :meth:`~toa_graph.agents.pool.AgentPool.generate` consults it: a request is keyed
by everything that determines it (agent, model, every message including the system
prompt, the sampling parameters sent) plus its **occurrence** within the prompt (random
and ensemble send one request many times), answered from the memo when it holds that
key, and kept in the memo when it returns without error. Methods need no change.

The memo's backing (:class:`GenerationBackend`) is the run directory's generation store
(:mod:`toa_graph.synthesis.genstore`); with no memo set, ``generate`` is unchanged.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from typing import Any, Protocol

from langchain_core.messages import BaseMessage

from toa_graph.agents.client import Generation

__all__ = ["CURRENT_MEMO", "GenerationBackend", "PromptMemo", "request_key"]


class GenerationBackend(Protocol):
    """Where a prompt's generations persist (the run directory's store)."""

    def put(self, prompt_id: str, key: str, occurrence: int, data: str) -> None: ...


def request_key(
    agent: str, model: str | None, chat: Sequence[BaseMessage], kwargs: Mapping[str, Any]
) -> str:
    """A hash of everything that determines a request's answer."""
    payload = {
        "agent": agent,
        "model": model,
        "messages": [[m.type, m.content, m.additional_kwargs or None] for m in chat],
        "params": dict(kwargs),
    }
    text = json.dumps(payload, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()


def encode_generations(gens: Sequence[Generation]) -> str:
    return json.dumps([dataclasses.asdict(g) for g in gens], ensure_ascii=False)


def decode_generations(data: str) -> list[Generation] | None:
    """Generations read back from the store; ``None`` when the entry is malformed."""
    try:
        items = json.loads(data)
        out = [Generation(**g) for g in items]
    except (ValueError, TypeError):
        return None
    if not out or any(not isinstance(g.text, str) or g.error is not None for g in out):
        return None
    return out


class PromptMemo:
    """One prompt's remembered generations: ``entries`` maps ``(key, occurrence)`` to the
    stored answer; each request of the prompt takes the next occurrence of its key."""

    def __init__(
        self,
        prompt_id: str,
        backend: GenerationBackend | None = None,
        entries: Mapping[tuple[str, int], str] | None = None,
    ) -> None:
        self.prompt_id = prompt_id
        self.backend = backend
        self.entries: dict[tuple[str, int], str] = dict(entries or {})
        self._seen: dict[str, int] = {}
        self.hits = 0
        self.kept = 0

    def occurrence(self, key: str) -> int:
        n = self._seen.get(key, 0)
        self._seen[key] = n + 1
        return n

    def lookup(self, key: str, occurrence: int) -> list[Generation] | None:
        data = self.entries.get((key, occurrence))
        gens = decode_generations(data) if data is not None else None
        if gens is not None:
            self.hits += 1
        return gens

    def keep(self, key: str, occurrence: int, gens: Sequence[Generation]) -> None:
        """Remember a request's answer, unless any generation in it failed."""
        if not gens or any(g.error is not None for g in gens):
            return
        data = encode_generations(gens)
        self.entries[(key, occurrence)] = data
        self.kept += 1
        if self.backend is not None:
            self.backend.put(self.prompt_id, key, occurrence, data)


CURRENT_MEMO: ContextVar[PromptMemo | None] = ContextVar("toa_graph_prompt_memo", default=None)
"""The memo of the prompt being run in this context (``None``: no memo)."""
