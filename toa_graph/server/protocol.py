"""Request and response models of the OpenAI-compatible API (the subset served here).

Field names follow OpenAI's chat completions API so that the official clients parse the
responses. Extensions are prefixed ``x_toa`` (responses) or are plain extra request fields
the OpenAI client sends through ``extra_body`` (``budget``, ``reference``, ``context``).
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class ErrorInfo(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    """OpenAI's error body: ``{"error": {"message", "type", "param", "code"}}``."""

    error: ErrorInfo


# ------------------------------------------------------------------------------ requests


class TextPart(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart] | None = None
    name: str | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text for p in self.content)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")

    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    """``POST /v1/chat/completions``. Unknown OpenAI fields (``top_p``, ``seed``, ...) are
    accepted and ignored: the method's agents keep their own sampling settings."""

    model_config = ConfigDict(extra="ignore")

    model: str = Field(description="A method name from /v1/models, optionally '@BUDGET'.")
    messages: list[ChatMessage]
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = 1
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    user: str | None = None
    # -- extensions (OpenAI clients: extra_body={...})
    budget: int | None = Field(default=None, description="Generations to spend on this request.")
    reference: str | list[str] | None = Field(
        default=None, description="Gold answer / reference translation for the reward."
    )
    context: dict[str, Any] | None = Field(
        default=None, description="Other per-run knobs of the method (see toa_graph.registry)."
    )
    options: dict[str, Any] | None = Field(
        default=None, description="Method options, e.g. MoA's aggregator."
    )


# ------------------------------------------------------------------------------ responses


def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def now() -> int:
    return int(time.time())


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = Field(default_factory=now)
    owned_by: str = "toa-graph"
    x_toa: dict[str, Any] | None = None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class UsageInfo(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cost: float | None = None
    """Every generation of the search at the agents' ``price_per_million`` (our extension;
    ``None`` when no agent has prices)."""


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class Choice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: Literal["stop", "length"] = "stop"
    logprobs: None = None


class ChatCompletionResponse(BaseModel):
    id: str = Field(default_factory=completion_id)
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=now)
    model: str
    choices: list[Choice]
    usage: UsageInfo
    x_toa: dict[str, Any] = Field(
        default_factory=dict,
        description="method, best_agent, best_reward, best_id, samples, errors, budget, seconds",
    )


class DeltaMessage(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChunkChoice(BaseModel):
    index: int = 0
    delta: DeltaMessage
    finish_reason: Literal["stop", "length"] | None = None
    logprobs: None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: UsageInfo | None = None
    x_toa: dict[str, Any] | None = None
