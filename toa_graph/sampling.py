"""Shared plumbing of every method: build messages, call an agent, record a sample, score.

Exists once, so each method module reads as its algorithm and nothing else.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any, Final, cast

from langchain_core.messages import AIMessage, BaseMessage
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.types import Overwrite

from toa_graph.agents import AgentPool, Generation, describe_error
from toa_graph.context import SamplingContext
from toa_graph.context_reader import ContextReader
from toa_graph.cost import has_limits, usage_cost
from toa_graph.errors import UserError
from toa_graph.prompts import AGGREGATE_SYSTEM, REFERENCE_BLOCK, REFINE_TEMPLATE
from toa_graph.reasoning import with_reasoning
from toa_graph.rewards.base import RewardModel, check_scores, reference_list
from toa_graph.state import (
    Prompt,
    Sample,
    SampleKind,
    SamplingInput,
    SamplingOutput,
    SamplingState,
    best_sample,
    failure_stage,
)
from toa_graph.text import content_text, ends_with_user_turn, messages_prompt, prompt_messages

logger = logging.getLogger(__name__)

Message = dict[str, Any]


# ---------------------------------------------------------------- prompts -> messages


def validate_prompt(prompt: Any) -> Prompt:
    """Check a prompt (string or chat messages); raise UserError (a ValueError) naming what is wrong."""
    if isinstance(prompt, str):
        if not prompt.strip():
            raise UserError("prompt is empty")
        return prompt
    if isinstance(prompt, list):
        if not prompt:
            raise UserError("prompt has no messages")
        for i, m in enumerate(prompt):
            if not isinstance(m, dict) or "role" not in m or "content" not in m:
                raise UserError(f"prompt message {i} must be a dict with 'role' and 'content'")
            if m["role"] not in ("system", "user", "assistant"):
                raise UserError(f"prompt message {i}: unknown role {m['role']!r}")
        if prompt[-1]["role"] != "user":
            raise UserError("the last prompt message must be a user message")
        return prompt
    raise UserError(f"prompt must be a string or a list of messages, got {type(prompt).__name__}")


def question_text(prompt: Prompt) -> str:
    """The question being answered: the string, or the last user message's text."""
    if isinstance(prompt, str):
        return prompt
    return content_text(prompt[-1]["content"])


def _with_system(messages: list[Message], system: str | None) -> list[Message]:
    if not system:
        return messages
    if messages and messages[0]["role"] == "system":
        return [
            {"role": "system", "content": f"{system}\n\n{messages[0]['content']}"},
            *messages[1:],
        ]
    return [{"role": "system", "content": system}, *messages]


def answer_messages(prompt: Prompt, system: str | None = None) -> list[Message]:
    """Messages for a fresh answer: the conversation as given."""
    return _with_system(prompt_messages(prompt), system)


def user_turn_messages(prompt: Prompt, user_text: str, system: str | None = None) -> list[Message]:
    """The conversation with its last user turn replaced by ``user_text`` (refine, debate)."""
    history = [] if isinstance(prompt, str) else [dict(m) for m in prompt[:-1]]
    return _with_system([*history, {"role": "user", "content": user_text}], system)


def refine_messages(prompt: Prompt, answer: str, system: str | None = None) -> list[Message]:
    """Messages asking an agent to improve ``answer`` (question first, for prefix caching)."""
    text = REFINE_TEMPLATE.format(question=question_text(prompt), answer=answer)
    return user_turn_messages(prompt, text, system)


def aggregate_messages(
    prompt: Prompt, references: Sequence[str], system: str | None = None
) -> list[Message]:
    """Messages for an aggregating answer (MoA): the conversation as given, with the earlier
    answers as "## Response i" blocks at the end of the system message (after the agent's
    and the conversation's own system prompts, as the MoA reference code does)."""
    blocks = "\n\n".join(
        REFERENCE_BLOCK.format(index=i + 1, text=t) for i, t in enumerate(references)
    )
    aggregate = AGGREGATE_SYSTEM.format(references=blocks)
    msgs = answer_messages(prompt, system)
    if msgs[0]["role"] == "system":
        return [{"role": "system", "content": f"{msgs[0]['content']}\n\n{aggregate}"}, *msgs[1:]]
    return [{"role": "system", "content": aggregate}, *msgs]


def shown_text(sample: Mapping[str, Any], with_trace: bool = False) -> str:
    """What of ``sample`` another agent's prompt (or the reward) sees: the final answer;
    ``with_trace`` (``show_reasoning`` / ``score_reasoning``): its thinking trace too."""
    text = str(sample.get("text") or "")
    return with_reasoning(text, sample.get("reasoning")) if with_trace else text


# ---------------------------------------------------------------- samples


def make_sample(
    gen: Generation,
    *,
    sample_id: str,
    agent: str,
    kind: SampleKind,
    parent: str | None,
    layer: int,
    scored: bool = True,
    **extra: Any,
) -> Sample:
    sample: Sample = {
        "id": sample_id,
        "agent": agent,
        "text": gen.text,
        "reward": None,
        "parent": parent,
        "kind": kind,
        "layer": layer,
        "usage": gen.usage,
        "latency_s": round(gen.latency_s, 6),
        "error": gen.error,
        "stage": "generate" if gen.error else None,
        "scored": scored,
    }
    if gen.reasoning:
        sample["reasoning"] = gen.reasoning
    sample.update(extra)  # type: ignore[typeddict-item]
    return sample


async def generate_samples(
    pool: AgentPool,
    agent: str,
    messages: Sequence[Message],
    ctx: SamplingContext,
    *,
    sample_ids: Sequence[str],
    kind: SampleKind,
    parent: str | None,
    layer: int,
    **extra: Any,
) -> list[Sample]:
    """Call ``agent`` once per sample id (one request with ``n`` where supported)."""
    gens = await pool.generate(
        agent,
        messages,
        temperature=ctx.temperature,
        max_tokens=ctx.max_tokens,
        n=len(sample_ids),
    )
    samples = [
        make_sample(g, sample_id=sid, agent=agent, kind=kind, parent=parent, layer=layer, **extra)
        for g, sid in zip(gens, sample_ids, strict=True)
    ]
    if (prices := pool.prices(agent)) is not None:
        for s in samples:  # the ledger: each sample's usage at its agent's prices
            s["cost"] = float(usage_cost(s["usage"], prices))
    return samples


async def generate_sample(
    pool: AgentPool,
    agent: str,
    messages: Sequence[Message],
    ctx: SamplingContext,
    *,
    sample_id: str,
    kind: SampleKind,
    parent: str | None,
    layer: int,
    **extra: Any,
) -> Sample:
    (sample,) = await generate_samples(
        pool,
        agent,
        messages,
        ctx,
        sample_ids=[sample_id],
        kind=kind,
        parent=parent,
        layer=layer,
        **extra,
    )
    return sample


# ---------------------------------------------------------------- scoring


async def score_samples(
    reward: RewardModel,
    prompt: Prompt,
    reference: str | list[str] | None,
    samples: Sequence[Sample],
    *,
    score_reasoning: bool = False,
) -> list[Sample]:
    """Score every sample that has text, in one reward call; returns new sample dicts.
    The reward sees each final answer (with ``score_reasoning``, its trace too).

    The call is made once: retrying is the reward client's job (its
    :class:`~toa_graph.retry.RetryPolicy`), so retries never stack. A failed call (an
    exception, the wrong number of scores) leaves each sample with ``reward=None`` and the
    error; a NaN or infinite score is an error on its sample. No score is ever made up.
    """
    out: list[dict[str, Any]] = [dict(s) for s in samples]
    todo = [i for i, s in enumerate(out) if not s.get("error")]
    if not todo:
        return out  # type: ignore[return-value]
    responses = [shown_text(out[i], score_reasoning) for i in todo]
    refs = reference_list(reference) or None
    try:
        result = await reward.ascore(prompt, responses, refs)
        scores = check_scores(result, len(responses), getattr(reward, "name", None) or "reward")
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        error = describe_error(exc)
        logger.warning("reward failed: %s", error)
        for i in todo:
            _reward_failed(out[i], error)
        return out  # type: ignore[return-value]
    for i, s in zip(todo, scores, strict=True):
        if math.isfinite(s):
            out[i]["reward"] = s
        else:  # NaN / inf is not a score: the sample stays unscored
            _reward_failed(out[i], f"non-finite score ({s})")
    return out  # type: ignore[return-value]


def _reward_failed(sample: dict[str, Any], error: str) -> None:
    sample["error"] = f"reward: {error}"
    sample["stage"] = "reward"


def total_usage(samples: Sequence[Sample]) -> dict[str, int]:
    """Token totals; ``reasoning_tokens`` (part of ``output_tokens``) when any model reasoned."""
    totals = {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0, "reasoning_tokens": 0}
    for s in samples:
        for k in totals:
            totals[k] += int(s["usage"].get(k, 0))  # type: ignore[call-overload]
    if not totals["reasoning_tokens"]:
        del totals["reasoning_tokens"]
    return totals


# ---------------------------------------------------------------- helpers shared by the method graphs


FINISH: Final = "finish"
"""Last node of every method graph: where a method goes once its run is done (not ``END``)."""


def method_builder(
    first: str, context: ContextReader | None = None
) -> StateGraph[SamplingState, Any, SamplingInput, SamplingOutput]:
    """A builder with the shared contract whose runs begin with :func:`start_run`, then
    ``first``, and end at :data:`FINISH` (where a run given ``messages`` answers there);
    ``context`` is the graph's :class:`ContextReader` (its schema is the context schema)."""
    reader = context or ContextReader()
    builder: StateGraph[SamplingState, Any, SamplingInput, SamplingOutput]
    builder = StateGraph(
        SamplingState,
        context_schema=reader.schema,
        input_schema=SamplingInput,
        output_schema=SamplingOutput,
    )
    builder.add_node("start", _checked_start(reader))
    builder.add_node(FINISH, _finish_run(reader.method))
    builder.add_edge(START, "start")
    builder.add_edge("start", first)
    builder.add_edge(FINISH, END)
    return builder


async def score_inbox(
    reward: RewardModel, state: SamplingState, ctx: SamplingContext | None = None
) -> dict[str, Any]:
    """The reward step of every method: score this step's generations (the ``inbox``) in
    generation order with one reward call, append them to ``samples`` and update ``best``
    over the whole run. Samples that are not answers (``scored=False``) stay unscored."""
    turns = in_generation_order(state.get("inbox") or [])
    answers = [s for s in turns if s.get("scored", True)]
    scored = await score_samples(
        reward,
        state["prompt"],
        state.get("reference"),
        answers,
        score_reasoning=bool(ctx and ctx.score_reasoning),
    )
    by_id = {s["id"]: s for s in scored}
    new = [by_id.get(s["id"], s) for s in turns]
    # ``best`` is already the best of the earlier samples (ties to the earliest), so the
    # run's best is the best of it and this step's samples: no pass over the whole run.
    best = state.get("best")
    return {
        "inbox": Overwrite([]),
        "samples": new,
        "best": best_sample([best, *new] if best is not None else new),
    }


def _checked_start(reader: ContextReader) -> Any:
    """:func:`start_run`, then the method's input pre-check (the one the server runs before
    it answers a request), when the method has one."""
    check = reader.check
    if check is None:
        return start_run

    def start(state: SamplingState, runtime: Any) -> dict[str, Any]:
        update = start_run(state)
        run_input = {"prompt": update.get("prompt", state.get("prompt"))}
        run_input["reference"] = state.get("reference")
        check(run_input, reader(runtime), reader.agents)
        return update

    return start


def start_run(state: SamplingState) -> dict[str, Any]:
    """First node of every method graph: take the prompt (or the ``messages`` conversation),
    check it, and clear what an earlier run on the same checkpointer thread left behind, so
    each invocation is one fresh run.

    The run answers ``messages`` when it has no ``prompt``, or when an earlier run on the
    thread left its ``prompt`` behind and ``messages`` end with a user turn not answered
    yet (the next chat turn, also after a prompt run or a failed turn). A parent app's
    ``prompt`` wins over its ``messages`` (a subgraph starts each run afresh)."""
    prompt = state.get("prompt")
    earlier = "from_messages" in state  # only ever absent before a thread's first run
    from_messages = prompt is None or (earlier and ends_with_user_turn(state.get("messages")))
    if from_messages:
        prompt = messages_prompt(state.get("messages"))
    validate_prompt(prompt)
    update: dict[str, Any] = {
        "samples": Overwrite([]),
        "inbox": Overwrite([]),
        "best": None,
        "tree": None,
        "plays": [],
        "search": None,
        "round": 0,
        "from_messages": from_messages,
    }
    if state.get("stopped_by") is not None:  # an earlier run's on this thread
        update["stopped_by"] = None
    if from_messages:
        update["prompt"] = prompt
        given = state.get("messages")
        if not (isinstance(given, list) and all(_has_id(m) for m in given)):
            # a channel's first value is kept as given (dicts, pairs): store them as
            # messages with ids, as MessagesState would
            update["messages"] = Overwrite(add_messages([], cast(Any, given)))
    return update


def _has_id(message: Any) -> bool:
    return isinstance(message, BaseMessage) and message.id is not None


def _finish_run(method: str | None) -> Any:
    def finish(state: SamplingState) -> dict[str, Any]:
        """Last node of every method graph: a run given ``messages`` appends its best
        answer to them as an ``AIMessage`` (nothing when no answer was scored)."""
        if not state.get("from_messages"):
            return {}
        best = state.get("best")
        if best is None:
            logger.warning("%s: no scored answer to append to the messages", method or "method")
            return {}
        meta = {
            "method": method,
            "sample_id": best["id"],
            "agent": best["agent"],
            "reward": best["reward"],
        }
        trace = {"reasoning_content": best["reasoning"]} if best.get("reasoning") else {}
        answer = AIMessage(content=best["text"], additional_kwargs=trace, response_metadata=meta)
        return {"messages": [answer]}

    return finish


def another_wave(state: SamplingState, update: Mapping[str, Any], ctx: SamplingContext) -> bool:
    """Whether a method that answers in waves under a token / money limit (random,
    ensemble) sends another: a limit is set, budget is left and no limit stopped it yet
    (``update``: this reward step's, whose ``samples`` are not in ``state`` yet)."""
    done = len(state.get("samples") or []) + len(update["samples"])
    return has_limits(ctx) and done < ctx.budget and not state.get("stopped_by")


def stopped(knob: str | None) -> dict[str, Any]:
    """The state update saying which limit ended the run (none when ``knob`` is ``None``,
    so runs without limits carry no ``stopped_by``)."""
    return {"stopped_by": knob} if knob else {}


def sample_id(index: int) -> str:
    """Sample ids are ``s<N>``, N counting generations of one prompt from 0 in generation order."""
    return f"s{index}"


def sample_index(sid: str) -> int:
    return int(sid[1:])


def in_generation_order(samples: Sequence[Sample]) -> list[Sample]:
    """Concurrent nodes finish in any order; ids say the order in which they were issued."""
    return sorted(samples, key=lambda s: sample_index(s["id"]))


def has_text(sample: Sample) -> bool:
    """Whether a sample holds an answer that can be shown to another agent."""
    return bool(sample.get("text", "").strip()) and failure_stage(sample) != "generate"


def even_split(total: int, parts: int) -> list[int]:
    """``total`` split over ``parts`` as evenly as possible, the first parts getting the extra.

    >>> even_split(10, 4)
    [3, 3, 2, 2]
    """
    if parts < 1:
        raise ValueError("parts must be >= 1")
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def single_agent(pool: AgentPool, ctx: SamplingContext) -> str:
    """The agent of a single-agent method: ``context.agent``, default the first agent."""
    name = ctx.agent or pool.names[0]
    if name not in pool:
        raise UserError(f"context.agent {name!r} is not one of the agents {pool.names}")
    return name
