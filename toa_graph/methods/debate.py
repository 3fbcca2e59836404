"""Debate & reflect (the D&R seed): agents debate, a teacher critiques, the student reflects.

    START --> moderator --Send--> debater (one per agent, concurrently) --> moderator
                        --> critic  --> moderator
                        --> student --> moderator
              moderator --> reward --> END

Turns, every one a sample with ``kind="debate"``, ``round``, ``role`` and ``layer = round``:

- Round 0 (opening): every debater answers the question, asked to end with a line
  "Final answer: ..." (``role="debater"``, ``parent=None``).
- Round ``r = 1 .. context.rounds``:
  1. every debater answers again seeing its own latest answer and the other debaters'
     latest answers (``role="debater"``, ``parent`` = its own latest answer,
     ``references`` = the others' answers shown);
  2. the critic (teacher) reviews the debaters' latest answers (``role="critic"``,
     ``parent`` = the student's answer, ``references`` = every answer reviewed);
  3. the student reflects on that feedback (``role="student"``, ``parent`` = its
     answer under review, ``references`` = [the critic's turn]); the reflection becomes
     the student's latest answer.

Early stop, checked after every answering step: all debaters' latest final answers agree
(normalised, at least two debaters), or, when the input carries a ``reference``, all of
them match it. ``critic`` (default: the first agent) and ``student`` (default: the last
agent) are factory arguments; the critic may also be a debater.

Budget (an upper bound, never exceeded): with ``d = min(n_agents, budget)`` debaters (the
first ``d`` agents), the opening costs ``d`` generations and each round ``d + 2`` (``d``
without critique when the student is not among the debaters), so a full debate costs
``d + rounds * (d + 2)``. A step runs only if it fits in what is left of the budget (the
critique only with its reflection); a failed critique is not reflected on. A step that
does not fit ends the debate.

The debate's flow depends on the final answers, not on rewards, so every answer is scored
once at the end in one reward call. Critic turns are feedback, not answers: they are not
scored (``reward=None``, ``error=None``) and never chosen as ``best``.

:func:`debate_tdpo_pairs` turns a recorded debate into tree-structured DPO pairs.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal, cast

from langgraph.graph import END, StateGraph
from langgraph.runtime import Runtime
from langgraph.types import Command, Send
from typing_extensions import TypedDict

from toa_graph.agents import AgentPool, AgentsLike, as_agent_pool
from toa_graph.context import SamplingContext
from toa_graph.prompts import (
    CRITIC_TEMPLATE,
    DEBATE_ANSWER_BLOCK,
    DEBATE_CONTEXT_TEMPLATE,
    DEBATE_OPEN_TEMPLATE,
    DEBATE_TEMPLATE,
    REFLECT_TEMPLATE,
)
from toa_graph.rewards.base import RewardLike, as_reward_model
from toa_graph.sampling import (
    context_of,
    generate_sample,
    has_text,
    in_generation_order,
    method_builder,
    question_text,
    references_of,
    sample_id,
    score_inbox,
    user_turn_messages,
    validate_prompt,
)
from toa_graph.state import (
    Prompt,
    Sample,
    SamplingState,
)

__all__ = [
    "answers_match",
    "create_debate_graph",
    "debate_tdpo_pairs",
    "final_answer",
]

Role = Literal["debater", "critic", "student"]


class TurnTask(TypedDict):
    """One debate turn: who speaks, what they are shown, where it hangs in the tree."""

    agent: str
    role: Role
    round: int
    sample_id: str
    prompt: Prompt
    text: str
    """The user turn the agent receives (question first)."""
    parent: str | None
    references: list[str]


# ---------------------------------------------------------------- final answers


_FINAL_RE = re.compile(r"final answer\s*(?:is)?\s*[:：]\s*(.+)", re.IGNORECASE)
_GSM8K_RE = re.compile(r"####\s*(.+)")


def _last_boxed(text: str) -> str | None:
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    i, depth = start + len("\\boxed{"), 1
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i:j]
    return None


def _normalise(answer: str) -> str:
    s = answer.strip()
    boxed = _last_boxed(s)
    if boxed is not None:
        s = boxed
    s = re.sub(r"\\text\{([^{}]*)\}", r"\1", s)
    s = s.replace("\\$", "").replace("$", "").replace("**", "").replace("\\%", "%")
    s = s.strip().rstrip(".").strip()
    s = re.sub(r"(?<=\d),(?=\d{3}\b)", "", s)
    s = re.sub(r"\s+", " ", s).lower()
    m = re.fullmatch(r"\(?([a-z])\)?", s)  # multiple choice: "(B)" / "B)" -> "b"
    if m:
        return m.group(1)
    try:
        number = float(s.rstrip("%"))
    except ValueError:
        return s
    return f"{number:g}" + ("%" if s.endswith("%") else "")


def final_answer(text: str) -> str | None:
    """The normalised final answer of a turn: its last "Final answer: ..." line, else its
    last ``\\boxed{...}``, else ``None``.

    >>> final_answer("2 + 2 = 4.\\nFinal answer: **4.0**")
    '4'
    >>> final_answer("so the result is $\\\\boxed{1,000}$")
    '1000'
    """
    # "...": the instruction echoed back ('End with a line "Final answer: ..."'), no answer
    found = [f for f in _FINAL_RE.findall(text or "") if not f.strip().startswith("...")]
    if found:
        return _normalise(found[-1]) or None
    boxed = _last_boxed(text or "")
    return _normalise(boxed) if boxed is not None else None


def _gold_answer(gold: str) -> str:
    m = _GSM8K_RE.search(gold)
    if m:
        return _normalise(m.group(1))
    return final_answer(gold) or _normalise(gold)


def answers_match(text: str, gold: str | Sequence[str]) -> bool:
    """Whether a turn's final answer equals the gold answer (or one of several)."""
    ans = final_answer(text)
    if ans is None:
        return False
    golds = [gold] if isinstance(gold, str) else list(gold)
    return any(ans == _gold_answer(g) for g in golds if g and g.strip())


def _should_stop(latest: Sequence[Sample | None], gold: list[str] | None) -> bool:
    texts = [s["text"] for s in latest if s is not None]
    if not texts or len(texts) < len(latest):
        return False
    if gold and all(answers_match(t, gold) for t in texts):
        return True
    finals = [final_answer(t) for t in texts]
    return len(finals) >= 2 and finals[0] is not None and all(f == finals[0] for f in finals)


# ---------------------------------------------------------------- replaying a debate


def _answer_blocks(answers: Sequence[Sample]) -> str:
    return "\n\n".join(
        DEBATE_ANSWER_BLOCK.format(index=i + 1, text=s["text"]) for i, s in enumerate(answers)
    )


class _Transcript:
    """The debate so far, replayed from its turns (in generation order)."""

    def __init__(self, turns: Sequence[Sample]) -> None:
        self.turns = in_generation_order(turns)
        self.debaters = [s["agent"] for s in self.turns if s.get("round") == 0]
        self.by_id = {s["id"]: s for s in self.turns}
        self.latest: dict[str, Sample | None] = dict.fromkeys(self.debaters)
        for s in self.turns:
            if s.get("role") in ("debater", "student") and has_text(s):
                self.latest[s["agent"]] = s

    def latest_answers(self) -> list[Sample | None]:
        return [self.latest[d] for d in self.debaters]


def _round_contexts(turns: Sequence[Sample]) -> dict[int, list[Sample]]:
    """Round -> the debaters' latest usable answers just before that round (debater order)."""
    ordered = in_generation_order(turns)
    debaters = [s["agent"] for s in ordered if s.get("round") == 0]
    latest: dict[str, Sample] = {}
    contexts: dict[int, list[Sample]] = {}
    for s in ordered:
        r = s.get("round", 0)
        if s.get("role") == "debater" and r not in contexts:
            contexts[r] = [latest[d] for d in debaters if d in latest]
        if s.get("role") in ("debater", "student") and has_text(s):
            latest[s["agent"]] = s
    return contexts


# ---------------------------------------------------------------- the graph


def create_debate_graph(
    agents: AgentsLike | AgentPool,
    reward: RewardLike,
    *,
    critic: str | None = None,
    student: str | None = None,
) -> StateGraph[Any, Any, Any, Any]:
    """Build the (uncompiled) debate-and-reflect graph.

    Args:
        agents: the debaters, in order (with a budget below their number, the first ones).
        reward: a RewardModel or any sync/async ``(prompt, responses[, references])`` callable.
        critic: the teacher agent giving feedback each round (default: the first agent).
        student: the agent that reflects on the feedback (default: the last agent).

    Per-run knobs: ``budget`` (upper bound), ``rounds``, ``temperature``, ``max_tokens``.
    """
    pool = as_agent_pool(agents)
    reward_model = as_reward_model(reward)
    critic_name = critic or pool.names[0]
    student_name = student or pool.names[-1]
    for what, name in (("critic", critic_name), ("student", student_name)):
        if name not in pool:
            raise ValueError(f"{what} {name!r} is not one of the agents {pool.names}")

    def moderator(
        state: SamplingState, runtime: Runtime[SamplingContext]
    ) -> Command[Literal["debater", "critic", "student", "reward"]]:
        ctx = context_of(runtime)
        prompt = validate_prompt(state["prompt"])
        question = question_text(prompt)
        log = _Transcript(state.get("inbox") or [])
        spent = len(log.turns)
        left = ctx.budget - spent

        def task(
            agent: str,
            role: Role,
            rnd: int,
            offset: int,
            text: str,
            parent: str | None,
            refs: list[str],
        ) -> TurnTask:
            return TurnTask(
                agent=agent, role=role, round=rnd, sample_id=sample_id(spent + offset),
                prompt=prompt, text=text, parent=parent, references=refs,
            )  # fmt: skip

        if not log.turns:  # opening round
            opening = DEBATE_OPEN_TEMPLATE.format(question=question)
            names = pool.names[: ctx.budget]
            sends = [
                Send("debater", task(a, "debater", 0, i, opening, None, []))
                for i, a in enumerate(names)
            ]
            return Command(goto=sends)

        last = log.turns[-1]
        rnd = last.get("round", 0)
        latest = log.latest_answers()
        if last.get("role") == "critic" and has_text(last):
            reviewed_answer = log.by_id[str(last["parent"])]
            text = REFLECT_TEMPLATE.format(
                question=question, own=reviewed_answer["text"], feedback=last["text"],
                index=last["references"].index(reviewed_answer["id"]) + 1,
            )  # fmt: skip
            reflect = task(
                student_name, "student", rnd, 0, text, reviewed_answer["id"], [last["id"]]
            )
            return Command(goto=Send("student", reflect))

        gold = references_of(state.get("reference"))
        if last.get("role") != "critic" and _should_stop(latest, gold):
            return Command(goto="reward")
        student_answer = log.latest.get(student_name)
        if last.get("role") == "debater" and rnd >= 1 and student_answer is not None and left >= 2:
            reviewed = [s for s in latest if s is not None]
            text = CRITIC_TEMPLATE.format(question=question, answers=_answer_blocks(reviewed))
            refs = [s["id"] for s in reviewed]
            critique = task(critic_name, "critic", rnd, 0, text, student_answer["id"], refs)
            return Command(goto=Send("critic", critique))
        # A round is over (opening, reflection, or no critique possible): next round?
        if rnd >= ctx.rounds or left < len(log.debaters):
            return Command(goto="reward")
        sends = []
        for i, name in enumerate(log.debaters):
            own = log.latest[name]
            others = [s for s in latest if s is not None and s["agent"] != name]
            text = DEBATE_TEMPLATE.format(
                question=question,
                own=own["text"] if own else "(no answer yet)",
                others=_answer_blocks(others) if others else "(none)",
            )
            parent = own["id"] if own else None
            sends.append(
                Send(
                    "debater",
                    task(name, "debater", rnd + 1, i, text, parent, [s["id"] for s in others]),
                )
            )
        return Command(goto=sends)

    async def _turn(task: TurnTask, runtime: Runtime[SamplingContext]) -> dict[str, Any]:
        name = task["agent"]
        msgs = user_turn_messages(task["prompt"], task["text"], pool.system_prompt(name))
        sample = await generate_sample(
            pool, name, msgs, context_of(runtime),
            sample_id=task["sample_id"], kind="debate", parent=task["parent"], layer=task["round"],
            references=task["references"], round=task["round"], role=task["role"],
            scored=task["role"] != "critic",  # the critic's feedback is not an answer
        )  # fmt: skip
        return {"inbox": [sample]}

    async def debater(task: TurnTask, runtime: Runtime[SamplingContext]) -> dict[str, Any]:
        return await _turn(task, runtime)

    async def critic_node(task: TurnTask, runtime: Runtime[SamplingContext]) -> dict[str, Any]:
        return await _turn(task, runtime)

    async def student_node(task: TurnTask, runtime: Runtime[SamplingContext]) -> dict[str, Any]:
        return await _turn(task, runtime)

    async def reward_node(state: SamplingState) -> dict[str, Any]:
        return await score_inbox(reward_model, state)

    builder = method_builder("moderator")
    builder.add_node("moderator", moderator)
    builder.add_node("debater", cast(Any, debater))  # Send targets: take a TurnTask
    builder.add_node("critic", cast(Any, critic_node))
    builder.add_node("student", cast(Any, student_node))
    builder.add_node("reward", reward_node)
    builder.add_edge("debater", "moderator")
    builder.add_edge("critic", "moderator")
    builder.add_edge("student", "moderator")
    builder.add_edge("reward", END)
    return builder


# ---------------------------------------------------------------- T-DPO


def debate_tdpo_pairs(
    record_or_samples: Mapping[str, Any] | Sequence[Sample],
    prompt: Prompt | None = None,
    gold: str | Sequence[str] | None = None,
    *,
    max_pairs_per_round: int | None = None,
    with_meta: bool = False,
) -> list[dict[str, Any]]:
    """Tree-structured DPO pairs from a recorded debate.

    For every round, the debaters' answers of that round are labelled correct or incorrect
    against ``gold`` (their normalised final answers), and every (correct, incorrect) pair
    becomes one row. The prompt is the round's shared debate context: for round 0 the
    opening question, for round ``r`` the question plus every debater's latest answer
    before round ``r`` (the student's being its reflection), as TRL's conversational
    format: ``{"prompt": [...turns], "chosen": [assistant turn], "rejected": [assistant turn]}``.

    Args:
        record_or_samples: a synthesis record (``samples``, ``prompt``, ``reference``) or the
            debate's samples.
        prompt, gold: override (or, with bare samples, supply) the record's prompt and gold
            answer; no gold answer means no pairs.
        max_pairs_per_round: keep the first N pairs of each round (all by default).
        with_meta: add ``round``, ``chosen_id``, ``rejected_id`` to each row.
    """
    if isinstance(record_or_samples, Mapping):
        samples = list(record_or_samples.get("samples") or [])
        prompt = prompt if prompt is not None else record_or_samples.get("prompt")
        gold = gold if gold is not None else record_or_samples.get("reference")
    else:
        samples = list(record_or_samples)
    if prompt is None:
        raise ValueError(
            "debate_tdpo_pairs needs the prompt (from the record or the prompt= argument)"
        )
    golds = [gold] if isinstance(gold, str) else [g for g in gold or [] if isinstance(g, str)]
    golds = [g for g in golds if g.strip()]
    if not golds or not samples:
        return []
    question = question_text(prompt)
    contexts = _round_contexts(samples)
    rows: list[dict[str, Any]] = []
    for rnd in sorted(contexts):
        answers = [
            s
            for s in in_generation_order(samples)
            if s.get("role") == "debater" and s.get("round") == rnd and has_text(s)
        ]
        correct = [s for s in answers if answers_match(s["text"], golds)]
        wrong = [s for s in answers if not answers_match(s["text"], golds)]
        if rnd == 0 or not contexts[rnd]:
            text = DEBATE_OPEN_TEMPLATE.format(question=question)
        else:
            text = DEBATE_CONTEXT_TEMPLATE.format(
                question=question, answers=_answer_blocks(contexts[rnd])
            )
        messages = user_turn_messages(prompt, text)
        pairs = list(itertools.product(correct, wrong))[:max_pairs_per_round]
        for chosen, rejected in pairs:
            row: dict[str, Any] = {
                "prompt": messages,
                "chosen": [{"role": "assistant", "content": chosen["text"]}],
                "rejected": [{"role": "assistant", "content": rejected["text"]}],
            }
            if with_meta:
                row.update(round=rnd, chosen_id=chosen["id"], rejected_id=rejected["id"])
            rows.append(row)
    return rows
