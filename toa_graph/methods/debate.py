"""Debate & Reflect (reference: zhouxiaofengshelf/D-R ``debate_teachers_student_w_critique.py``,
``templates.py``; exports after ``mag2sft.py`` and ``mag2preference.py``).

    START --> moderator --Send--> answer (one per agent, concurrently) ----> judge --> moderator
                        --Send--> feedback / reflect (the round end) -----> judge --> moderator
              moderator --> finish

For prompts with a gold answer (the input's ``reference``):

- Round 0: every agent answers with the answer template (step-by-step reasoning, then
  "Final answer: x"; a format hint for the task type: numeric, letter choice, $...$
  expression; a 500-word limit). ``role="answer"``, ``parent=None``.
- Round end, after EVERY round including round 0: each answer is judged against the gold
  (``correct``). Every correct agent writes feedback to every incorrect agent, pair by pair
  (``role="feedback"``, ``agent`` = from, ``to`` = the incorrect agent, ``parent`` = the
  incorrect answer); every incorrect agent writes a self-reflection given the correct final
  answer (``role="reflection"``, ``to`` = itself, ``parent`` = its answer). No new answers.
- Rounds 1..``context.rounds`` (D&R: 3): ALL agents get ONE shared prompt: the question and
  every last-round answer, shuffled (seeded by ``(seed, round)``) and unnamed, each followed
  by its self-reflection and the feedback it received. ``references`` lists those turns in
  the order shown; ``parent`` = the agent's own last answer.
- Stop when every agent is correct (never on mere agreement), or after the last round.

Every turn is a sample with ``kind="debate"``, ``round`` (= ``layer``) and ``role``;
answers also carry ``correct`` and ``task``. Feedback and reflections are not answers: never
scored, never ``best``. Answers are scored after each round (one reward call per round).

Budget: a cap on all generations (answers + feedback + reflections). A round starts only when
its worst case (:func:`~toa_graph.methods.debate_rounds.round_cost`: n answers plus the
largest possible round end) fits in what is left; a budget below one round's worst case is
an error. A failed answer counts as incorrect and gets no feedback or reflection.

Under a token or money limit a step (a round's answers, or its round end) starts only
when all its turns fit at their worst case; else the debate ends there (``stopped_by``).

Without a gold answer the paper's method does not apply. Our extension: an answer is correct
when its reward is >= ``context.correct_threshold``, and incorrect agents reflect given the
final answer of the best-rewarded correct answer (or alone when none is correct).
"""

from __future__ import annotations

import functools
import random
from collections.abc import Mapping, Sequence
from typing import Any, Literal, cast

from langgraph.graph import StateGraph
from langgraph.runtime import Runtime
from langgraph.types import Command, Send
from typing_extensions import TypedDict

from toa_graph.agents import AgentPool, AgentsLike, as_agent_pool
from toa_graph.answers import (
    TASK_TYPES,
    TaskType,
    detect_task,
    extract_final_answer,
    gold_answer,
)
from toa_graph.answers import answers_match as _answers_match
from toa_graph.context import SamplingContext
from toa_graph.cost import has_limits, step_fits
from toa_graph.errors import PromptSkipped
from toa_graph.method_spec import InputRejected
from toa_graph.methods.debate_rounds import (
    TokenCounter,
    answer_prompt_text,
    feedback_prompt_text,
    infer_task,
    reflection_prompt_text,
    round_cost,
    round_prompt_text,
    tdpo_examples,
)
from toa_graph.rewards.base import RewardLike, as_reward_model, reference_list
from toa_graph.sampling import (
    FINISH,
    ContextReader,
    generate_sample,
    has_text,
    method_builder,
    question_text,
    sample_id,
    score_inbox,
    user_turn_messages,
    validate_prompt,
)
from toa_graph.state import Prompt, Sample, SamplingState, best_sample

__all__ = [
    "answers_match",
    "create_debate_graph",
    "debate_tdpo_pairs",
    "final_answer",
]

Role = Literal["answer", "feedback", "reflection"]

NOT_ANSWERS = frozenset({"feedback", "reflection"})
"""Roles whose turns are not answers: never scored (``scored=False``), never ``best``."""


class TurnTask(TypedDict):
    """One debate turn: who speaks, what they are sent, where it hangs in the tree."""

    agent: str
    role: Role
    round: int
    sample_id: str
    prompt: Prompt
    text: str
    """The user turn the agent receives."""
    parent: str | None
    references: list[str]
    to: str | None
    task: str


# ---------------------------------------------------------------- final answers

_MARKER = "Final answer:"


def final_answer(text: str, task: TaskType = "math") -> str | None:
    """A debate turn's final answer, as D&R parses it (``utils.parse_answer``): the text
    between the first "Final answer:" marker and the next one, read by :mod:`toa_graph.answers` for the task
    type; ``None`` when the turn has no marker (D&R counts such a turn as unanswered).

    >>> final_answer("2 + 2 = 4.\\nFinal answer: **4**", "numeric")
    '4'
    >>> final_answer("so the result is 1,000") is None
    True
    """
    parts = (text or "").split(_MARKER)
    if len(parts) < 2 or parts[1].strip().startswith("..."):  # the template echoed back
        return None
    return extract_final_answer(f"{_MARKER}{parts[1].strip()}", task)


def answers_match(text: str, gold: str | Sequence[str], task: TaskType | None = None) -> bool:
    """Whether a turn's final answer (see :func:`final_answer`) equals the gold answer, or
    one of several, under the task type's rules (``None``: guessed from each gold)."""
    golds = [gold] if isinstance(gold, str) else list(gold)
    for g in golds:
        if not g or not g.strip():
            continue
        t = task or detect_task(g)
        if _answers_match(final_answer(text, t), gold_answer(g), t):
            return True
    return False


def _is_correct(text: str, golds: Sequence[str], task: str) -> bool:
    """THE correctness check of the debate: one place, through the answers module."""
    return answers_match(text, golds, cast(TaskType, task) if task in TASK_TYPES else None)


# ---------------------------------------------------------------- the rounds


def _answers(samples: Sequence[Sample], rnd: int | None = None) -> list[Sample]:
    return [
        s for s in samples if s.get("role") == "answer" and (rnd is None or s.get("round") == rnd)
    ]


def _round_end_tasks(
    answers: list[Sample], question: str, gold: str | None, make: Any
) -> list[TurnTask]:
    """D&R's round end, in agent order: a correct agent gives feedback to every incorrect
    one; an incorrect one reflects (answers that failed get neither)."""
    right = [s for s in answers if s.get("correct")]
    wrong = [s for s in answers if not s.get("correct") and has_text(s)]
    tasks = []
    for s in answers:
        if s in right:
            for w in wrong:
                text = feedback_prompt_text(question, s["text"], w["text"])
                tasks.append(make(s["agent"], "feedback", text, w["id"], [s["id"], w["id"]], w))
        elif s in wrong:
            text = reflection_prompt_text(question, s["text"], gold)
            tasks.append(make(s["agent"], "reflection", text, s["id"], [s["id"]], s))
    return tasks


def _shown(samples: Sequence[Sample], rnd: int, seed: int) -> list[Sample]:
    """Round ``rnd``'s turns as the next round shows them: its answers shuffled, each
    followed by its reflection and the feedback it received (in generation order)."""
    answers = [s for s in _answers(samples, rnd) if has_text(s)]
    random.Random(f"debate:{seed}:{rnd + 1}").shuffle(answers)
    shown: list[Sample] = []
    for a in answers:
        notes = [s for s in samples if s.get("role") in NOT_ANSWERS and s["parent"] == a["id"]]
        reflections = [s for s in notes if s["role"] == "reflection" and has_text(s)]
        feedback = [s for s in notes if s["role"] == "feedback" and has_text(s)]
        shown += [a, *reflections, *feedback]
    return shown


# ---------------------------------------------------------------- the graph


NO_GOLD_ANSWER = (
    "debate needs a gold answer (the input's 'reference') to judge answers; for "
    "open prompts set context.correct_threshold (correct = reward >= threshold)"
)
"""Why a debate run cannot start (see :func:`can_judge`)."""


def can_judge(reference: str | list[str] | None, correct_threshold: float | None) -> bool:
    """Whether a run can tell correct answers from wrong ones: it has a gold answer, or a
    reward threshold."""
    return bool(reference_list(reference)) or correct_threshold is not None


class NotJudgeable(InputRejected, PromptSkipped):
    """A debate prompt with no gold answer and no ``correct_threshold``: the server's 400,
    the CLI's one line, and in ``synthesize`` a prompt recorded as skipped (not retried)."""


def check_debate_input(run_input: Mapping[str, Any], ctx: Any, agents: Sequence[str]) -> None:
    """The debate's input pre-check (its registry entry's ``check_input_path``), run by the
    server before it answers a request and by the graph as the run starts: answers must
    be judgeable (a gold answer or ``correct_threshold``) and the budget must hold one
    round of ``agents``."""
    if not can_judge(run_input.get("reference"), ctx.correct_threshold):
        raise NotJudgeable(NO_GOLD_ANSWER, param="context.correct_threshold")
    cost = round_cost(len(agents))
    if ctx.budget < cost:
        raise InputRejected(
            f"context.budget={ctx.budget} is too small for one debate round of "
            f"{len(agents)} agents: it needs {cost} generations (answers plus the largest "
            "possible round of feedback and reflections)",
            param="budget",
        )


def create_debate_graph(
    agents: AgentsLike | AgentPool,
    reward: RewardLike,
    *,
    defaults: Mapping[str, Any] | None = None,
) -> StateGraph[Any, Any, Any, Any]:
    """Build the (uncompiled) Debate & Reflect graph.

    Args:
        agents: the debaters, in order.
        reward: a RewardModel or any sync/async ``(prompt, responses[, references])`` callable;
            it scores every answer, and judges correctness for prompts without a gold answer.

    Per-run knobs: ``budget`` (a cap), ``rounds``, ``task``, ``correct_threshold``, ``seed``,
    ``temperature``, ``max_tokens``.
    """
    pool = as_agent_pool(agents)
    reward_model = as_reward_model(reward, agents=agents)
    read_context = ContextReader("debate", defaults, agents=pool.names)  # + its pre-check

    def moderator(
        state: SamplingState, runtime: Runtime[SamplingContext]
    ) -> Command[Literal["answer", "feedback", "reflect", "finish"]]:
        ctx = read_context(runtime)
        prompt = validate_prompt(state["prompt"])
        golds = reference_list(state.get("reference")) or None
        cost = round_cost(len(pool))  # the budget holds one round: checked as the run starts
        question, task = question_text(prompt), ctx.task or infer_task(golds[0] if golds else None)
        samples = state.get("samples") or []

        def make(
            rnd: int, agent: str, role: Role, text: str, parent: str | None, refs: list[str],
            about: Any,
        ) -> TurnTask:  # fmt: skip
            return TurnTask(
                agent=agent, role=role, round=rnd, sample_id="", prompt=prompt, text=text,
                parent=parent, references=refs, to=about["agent"] if about else None, task=task,
            )  # fmt: skip

        def send(tasks: list[TurnTask]) -> Command[Any]:
            node = {"answer": "answer", "feedback": "feedback", "reflection": "reflect"}
            if has_limits(ctx):  # a step starts whole or not at all
                k, stop = step_fits(pool, ctx, samples, [_play(t) for t in tasks])
                if k < len(tasks):
                    return Command(update={"stopped_by": stop}, goto=FINISH)
            for i, t in enumerate(tasks):
                t["sample_id"] = sample_id(len(samples) + i)
            return Command(goto=[Send(node[t["role"]], t) for t in tasks])

        answers = _answers(samples)
        if not answers:  # round 0
            text = answer_prompt_text(question, task)
            return send([make(0, a, "answer", text, None, [], None) for a in pool.names])
        rnd = max(int(s.get("round", 0)) for s in answers)
        last = _answers(samples, rnd)
        if all(s.get("correct") for s in last):
            return Command(goto=FINISH)
        ended = any(s.get("role") in NOT_ANSWERS and s.get("round") == rnd for s in samples)
        if not ended:
            gold = _reflection_gold(last, golds)
            tasks = _round_end_tasks(last, question, gold, functools.partial(make, rnd))
            if tasks:
                return send(tasks)
        if rnd >= ctx.rounds or ctx.budget - len(samples) < cost:
            return Command(goto=FINISH)
        # the next round: ONE prompt for all, each agent's parent its own last answer
        shown = _shown(samples, rnd, ctx.seed)
        text, refs = round_prompt_text(question, task, shown), [s["id"] for s in shown]
        own = {s["agent"]: s["id"] for s in last if has_text(s)}
        return send([make(rnd + 1, a, "answer", text, own.get(a), refs, None) for a in pool.names])

    def _play(task: TurnTask) -> tuple[str, list[dict[str, Any]]]:
        name = task["agent"]
        return name, user_turn_messages(task["prompt"], task["text"], pool.system_prompt(name))

    async def _turn(task: TurnTask, runtime: Runtime[SamplingContext]) -> dict[str, Any]:
        name, msgs = _play(task)
        extra: dict[str, Any] = {"round": task["round"], "role": task["role"]}
        if task["role"] == "answer":
            extra["task"] = task["task"]
        else:
            extra["to"] = task["to"]
        sample = await generate_sample(
            pool, name, msgs, read_context(runtime),
            sample_id=task["sample_id"], kind="debate", parent=task["parent"], layer=task["round"],
            references=task["references"], scored=task["role"] not in NOT_ANSWERS, **extra,
        )  # fmt: skip
        return {"inbox": [sample]}

    async def answer(task: TurnTask, runtime: Runtime[SamplingContext]) -> dict[str, Any]:
        return await _turn(task, runtime)

    async def feedback(task: TurnTask, runtime: Runtime[SamplingContext]) -> dict[str, Any]:
        return await _turn(task, runtime)

    async def reflect(task: TurnTask, runtime: Runtime[SamplingContext]) -> dict[str, Any]:
        return await _turn(task, runtime)

    async def judge(state: SamplingState, runtime: Runtime[SamplingContext]) -> dict[str, Any]:
        """Score the new answers and mark each correct or not (gold, else reward threshold)."""
        ctx = read_context(runtime)
        update = await score_inbox(reward_model, state, ctx)
        golds = reference_list(state.get("reference")) or None
        new = []
        for s in update["samples"]:
            if s.get("role") == "answer":
                s = {**s, "correct": _judged(s, golds, ctx)}
            new.append(s)
        update["samples"] = new
        update["best"] = best_sample([*(state.get("samples") or []), *new])
        return update

    builder = method_builder("moderator", read_context)
    builder.add_node("moderator", moderator)
    builder.add_node("answer", cast(Any, answer))  # Send targets: take a TurnTask
    builder.add_node("feedback", cast(Any, feedback))
    builder.add_node("reflect", cast(Any, reflect))
    builder.add_node("judge", judge)
    for node in ("answer", "feedback", "reflect"):
        builder.add_edge(node, "judge")
    builder.add_edge("judge", "moderator")
    return builder


def _judged(answer: Sample, golds: list[str] | None, ctx: SamplingContext) -> bool:
    if not has_text(answer):
        return False
    if golds:
        return _is_correct(answer["text"], golds, str(answer.get("task", "free")))
    r = answer.get("reward")
    return r is not None and ctx.correct_threshold is not None and r >= ctx.correct_threshold


def _reflection_gold(answers: list[Sample], golds: list[str] | None) -> str | None:
    """The correct final answer an incorrect agent is given: the gold; without one, the
    final answer of the best-rewarded correct answer (None when no answer is correct)."""
    if golds:
        return gold_answer(golds[0])
    right = best_sample([s for s in answers if s.get("correct")])
    return final_answer(right["text"], cast(TaskType, right.get("task", "math"))) if right else None


# ---------------------------------------------------------------- exports


def debate_tdpo_pairs(
    record: Mapping[str, Any],
    *,
    max_prompt_tokens: int | None = None,
    count_tokens: TokenCounter | None = None,
    with_meta: bool = False,
) -> list[dict[str, Any]]:
    """T-DPO rows of one debate record (see :func:`~toa_graph.methods.debate_rounds.tdpo_examples`)."""
    return tdpo_examples(
        record, max_prompt_tokens=max_prompt_tokens, count_tokens=count_tokens, with_meta=with_meta
    )
