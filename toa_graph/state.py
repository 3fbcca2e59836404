"""The one state/output contract that every sampling method shares.

Every method graph takes :class:`SamplingInput` and returns :class:`SamplingOutput`, so any
method can replace another as a subgraph or inside the synthesis runner. State is plain,
JSON-serialisable data (plus LangChain messages, which every checkpointer stores): no
clients, no callables.

The input is a ``prompt`` or, as in LangGraph's ``MessagesState``, a ``messages``
conversation; a run given ``messages`` appends its best answer there as an ``AIMessage``
(through ``add_messages``, so a ``MessagesState`` parent gets one new message).
"""

from __future__ import annotations

import operator
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal, NewType, NotRequired, Required, cast

from langchain_core.messages import AnyMessage
from langgraph.graph.message import add_messages
from typing_extensions import TypedDict

SampleKind = Literal["fresh", "refine", "aggregate", "debate"]

FailureStage = Literal["generate", "reward"]
"""Where a sample failed: its generation (no usable text) or its scoring (text, no reward)."""

Prompt = str | list[dict[str, Any]]
"""A prompt: a plain user string or a list of chat messages (``{"role", "content"}``)."""


class Usage(TypedDict):
    input_tokens: int
    output_tokens: int
    total_tokens: int
    reasoning_tokens: NotRequired[int]
    """Tokens the model spent thinking (part of ``output_tokens``): the provider's count,
    else estimated from the trace's length. Absent when the model did not reason."""
    estimated: NotRequired[bool]
    """True when a figure is an estimate: one request returned several samples (``n`` > 1)
    and the request's usage was spread over them (the sum is exact), or
    ``reasoning_tokens`` was counted from the trace's length."""


class Sample(TypedDict):
    """One generation, as recorded in ``samples`` (the public record format)."""

    id: str
    agent: str
    text: str
    reward: float | None
    """Raw reward-model score; ``None`` when generation or scoring failed (see ``error``)
    or when the turn is not an answer (debate feedback and reflections)."""
    parent: str | None
    """Id of the sample this one refines / aggregates / answers; ``None`` for a fresh answer."""
    kind: SampleKind
    layer: int
    usage: Usage
    latency_s: float
    error: str | None
    """Why this sample has no text or no reward; ``None`` when all went well."""
    stage: FailureStage | None
    """Which step ``error`` comes from: ``"generate"`` (no usable text) or ``"reward"``
    (text but no score); ``None`` when all went well."""
    scored: bool
    """Whether the sample is an answer the reward model scores (``False`` for turns that
    are not answers, e.g. a debate critic's feedback)."""
    reasoning: NotRequired[str]
    """The model's thinking trace before its answer (``text`` is the answer alone); absent
    when the model gave none."""
    references: NotRequired[list[str]]
    """Ids of every sample shown to the agent (MoA aggregation, debate turns)."""
    round: NotRequired[int]
    """Debate round (debate only)."""
    role: NotRequired[str]
    """Debate role: ``answer``, ``feedback`` or ``reflection`` (debate only)."""
    to: NotRequired[str]
    """Debate feedback / reflection: the agent whose answer it is about (debate only)."""
    correct: NotRequired[bool | None]
    """Debate answers: judged against the gold answer (or the reward threshold)."""
    task: NotRequired[str]
    """Debate answers: the task type whose format hint the answer prompt carried."""
    chain: NotRequired[int]
    """Sequential refine: the chain this step belongs to."""
    stack: NotRequired[int]
    """MoA: the stack this answer belongs to."""
    cost: NotRequired[float]
    """Its ``usage`` at its agent's ``price_per_million``; absent when the agent has none."""


MessageList = NewType("MessageList", list[AnyMessage])
"""``list[AnyMessage]`` under another name: the same JSON schema as ``MessagesState``'s
``messages``, but a channel that starts empty, not ``[]``, so a run given a ``prompt``
has no ``messages`` in its output."""

Messages = Annotated[MessageList, add_messages]
"""A conversation, merged as in ``MessagesState`` (appended; same id replaces)."""


class SamplingInput(TypedDict, total=False):
    prompt: Prompt
    """The prompt; without one, the run answers ``messages``."""
    messages: Messages
    """A conversation ending with a user turn (LangChain messages or ``{"role", "content"}``
    dicts), answered when there is no ``prompt``; the best answer is appended to it."""
    reference: str | list[str] | None
    """Gold answer or reference translation(s), for rewards that use one."""
    id: str | None


class SamplingOutput(TypedDict, total=False):
    samples: list[Sample]
    best: Sample | None
    tree: dict[str, Any] | None
    final: Sample | None
    """MoA with a final aggregator: the aggregator's answer (the best-rewarded of the stacks')."""
    messages: Messages
    """Given ``messages``: them with the best answer appended as an ``AIMessage``."""
    stopped_by: str | None
    """The limit that ended the search early (``max_tokens_per_prompt`` or
    ``max_cost_per_prompt``); ``None`` when the method ran its plan within the budget."""


def add_samples(left: list[Sample] | None, right: list[Sample] | None) -> list[Sample]:
    """Reducer: samples are only ever appended, in the order they were generated."""
    return (left or []) + (right or [])


class SamplingState(TypedDict, total=False):
    """Working state shared by the method graphs (each uses the fields it needs)."""

    prompt: Required[Prompt]
    reference: str | list[str] | None
    id: str | None
    samples: Annotated[list[Sample], add_samples]
    best: Sample | None
    tree: dict[str, Any] | None
    final: Sample | None
    inbox: Annotated[list[Sample], operator.add]
    """Generations of the current step, waiting to be scored (cleared by the reward step)."""
    plays: list[dict[str, Any]]
    """Plays chosen by the controller for the current step (TOA, AB-MCTS)."""
    search: str | None
    """AB-MCTS: the library's algorithm state and this prompt's numpy RNG state, pickled
    and base64-encoded (LangGraph's serializer cannot store the algorithm's objects)."""
    round: int
    """Current round / layer / step counter for iterative methods."""
    stopped_by: str | None
    """The limit that ended the search early (see :class:`SamplingOutput`)."""
    messages: Messages
    from_messages: bool
    """This run's ``prompt`` was read from ``messages`` (and its answer goes back there).
    Written by every run, so on a checkpointer thread it also marks that one ran before."""


def failure_stage(sample: Mapping[str, Any]) -> FailureStage | None:
    """Where ``sample`` failed, ``None`` if it did not. Records written before ``stage``
    existed marked reward failures with a ``"reward:"`` error prefix; those are read too."""
    stage = sample.get("stage")
    if stage in ("generate", "reward"):
        return cast(FailureStage, stage)
    err = sample.get("error")
    if not err:
        return None
    return "reward" if "stage" not in sample and str(err).startswith("reward:") else "generate"


def is_scored(sample: Mapping[str, Any]) -> bool:
    """Whether a sample can win: it has a reward and no error."""
    return sample.get("reward") is not None and not sample.get("error")


def ranked(samples: Sequence[Sample]) -> list[Sample]:
    """The one "best sample" rule, as an order: scored samples (:func:`is_scored`) by reward,
    highest first, ties to the earliest; then the others in their order."""
    scored = [s for s in samples if is_scored(s)]
    others = [s for s in samples if not is_scored(s)]
    return sorted(scored, key=lambda s: -float(s["reward"])) + others  # type: ignore[arg-type]


def best_sample(samples: Sequence[Sample]) -> Sample | None:
    """The highest-reward sample; errored or unscored samples never win; ties go to the earliest."""
    order = ranked(samples)
    return order[0] if order and is_scored(order[0]) else None
