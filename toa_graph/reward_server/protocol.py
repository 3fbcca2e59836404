"""Request and response bodies of the reward server (pydantic; no HTTP, no model).

Two APIs share one batcher:

- the project's own ``POST /v1/score``: ``{"items": [{"prompt", "response", "reference"}]}``
  -> ``{"scores": [float | null], "errors": [str | null], "batch_sizes": [int]}``; a
  ``null`` score is an item the reward could not score (its error says why);
- OpenRLHF's ``POST /get_reward`` (``openrlhf/cli/serve_rm.py`` and its remote-RM client):
  ``{"query": [str], "prompts": [str] (optional), "labels": [...] (optional)}`` ->
  ``{"rewards": [float], "scores": [float], "extra_logs": {name: [float]}}``.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from toa_graph.state import Prompt

__all__ = [
    "GetRewardRequest",
    "GetRewardResponse",
    "ScoreItem",
    "ScoreRequest",
    "ScoreResponse",
    "label_reference",
]


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class ScoreItem(_Body):
    prompt: Prompt
    """Text, or chat messages (``[{"role", "content"}]``)."""
    response: str
    reference: str | None = None
    """Gold answer / reference text for verifiable and reference rewards."""


class ScoreRequest(_Body):
    items: list[ScoreItem] = Field(min_length=1)


class ScoreResponse(BaseModel):
    scores: list[float | None]
    errors: list[str | None]
    batch_sizes: list[int]
    """The size of the batch each item was scored in (clients report the mean)."""


class GetRewardRequest(_Body):
    """OpenRLHF's body; fields it may add (``metas``, ``datasources``...) are ignored."""

    query: list[str] = Field(min_length=1)
    prompts: list[str] | None = None
    labels: list[Any] | None = None

    @field_validator("query", mode="before")
    @classmethod
    def _one_query(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v  # older clients send one string

    @field_validator("prompts", "labels")
    @classmethod
    def _same_length(cls, v: list[Any] | None, info: Any) -> list[Any] | None:
        query = info.data.get("query")
        if v is not None and query is not None and len(v) != len(query):
            raise ValueError(f"has {len(v)} entries but query has {len(query)}")
        return v


class GetRewardResponse(BaseModel):
    rewards: list[float]
    scores: list[float]
    extra_logs: dict[str, list[float]]


def label_reference(label: Any) -> str | None:
    """An OpenRLHF label as a reference: strings as they are, numbers as text, ``None`` and
    blanks as no reference; anything else as its JSON text."""
    if label is None:
        return None
    if isinstance(label, str):
        return label if label.strip() else None
    if isinstance(label, bool | int | float):
        return str(label)
    import json

    return json.dumps(label)
