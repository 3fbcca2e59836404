"""Debate & Reflect's rounds as pure data: the prompts of every turn, the round budget, and
the training rows (D&R SFT, T-DPO) built from a recorded debate. No LangGraph, no I/O.

The graph (``toa_graph.methods.debate``) and the exports both build a round's shared prompt
with :func:`round_prompt_text` from the recorded samples, so a T-DPO row's prompt is the
text the debaters of that round were really sent.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from toa_graph.prompts import (
    DEBATE_ANSWER_TEMPLATE,
    DEBATE_FEEDBACK_TEMPLATE,
    DEBATE_FORMAT_HINTS,
    DEBATE_OPEN_REFLECTION_TEMPLATE,
    DEBATE_REFLECTION_TEMPLATE,
    DEBATE_ROUND_BLOCK,
    DEBATE_ROUND_TEMPLATE,
)
from toa_graph.text import content_text

__all__ = [
    "answer_prompt_text",
    "dr_sft_examples",
    "feedback_prompt_text",
    "infer_task",
    "reflection_prompt_text",
    "round_cost",
    "round_prompt_text",
    "tdpo_examples",
]

Record = Mapping[str, Any]
TokenCounter = Callable[[str], int]

_NUMBER = re.compile(r"[-+]?\$?\d[\d,]*(\.\d+)?%?")


def infer_task(gold: str | None) -> str:
    """The task type a gold answer implies: ``choice`` (one letter), ``numeric``, ``math``
    (anything else); ``free`` without a gold answer.

    >>> [infer_task(g) for g in ("B", "1,000", "\\\\frac{1}{2}", None)]
    ['choice', 'numeric', 'math', 'free']
    """
    if gold is None or not gold.strip():
        return "free"
    g = gold.strip().strip("()")
    if re.fullmatch(r"[A-Ja-j]", g):
        return "choice"
    if _NUMBER.fullmatch(g.split("####")[-1].strip()):
        return "numeric"
    return "math"


def round_cost(n_agents: int) -> int:
    """Most generations one round can take: every answer, then the worst round end
    (``c`` correct agents give ``c x w`` feedback and the ``w`` incorrect ones reflect).

    >>> round_cost(4)
    10
    """
    return n_agents + max(c * (n_agents - c) + (n_agents - c) for c in range(n_agents + 1))


# ---------------------------------------------------------------- prompts


def answer_prompt_text(question: str, task: str) -> str:
    """Round 0's prompt (and the D&R SFT prompt): the answer template with the format hint."""
    return DEBATE_ANSWER_TEMPLATE.format(hint=DEBATE_FORMAT_HINTS[task], question=question)


def feedback_prompt_text(question: str, own: str, other: str) -> str:
    return DEBATE_FEEDBACK_TEMPLATE.format(question=question, own=own, other=other)


def reflection_prompt_text(question: str, own: str, gold: str | None) -> str:
    """An incorrect agent's reflection prompt, given the correct final answer (D&R wraps it
    in ``$``); without one (the reward-threshold extension, nobody correct) it reflects alone."""
    if gold is None:
        return DEBATE_OPEN_REFLECTION_TEMPLATE.format(question=question, own=own)
    return DEBATE_REFLECTION_TEMPLATE.format(question=question, gold=f"${gold}$", own=own)


def _blocks(shown: Sequence[Mapping[str, Any]]) -> list[str]:
    """The "Answer i" blocks: each answer, its self-reflection and its numbered feedback."""
    groups: list[tuple[str, str, list[str]]] = []
    for s in shown:
        if s.get("role") == "answer":
            groups.append((s["text"], "None", []))
        elif groups and s.get("role") == "reflection":
            groups[-1] = (groups[-1][0], s["text"], groups[-1][2])
        elif groups and s.get("role") == "feedback":
            groups[-1][2].append(s["text"])
    return [
        DEBATE_ROUND_BLOCK.format(
            index=i + 1,
            answer=answer,
            reflection=reflection,
            feedback="".join(f"{j + 1}. {f}\n\n" for j, f in enumerate(fb)) or "None",
        )
        for i, (answer, reflection, fb) in enumerate(groups)
    ]


def round_prompt_text(question: str, task: str, shown: Sequence[Mapping[str, Any]]) -> str:
    """The prompt shared by every agent of a debate round: ``shown`` is the last round's
    turns in the order shown (each answer followed by its reflection and feedback)."""
    return _round_text(question, task, _blocks(shown))


def _round_text(question: str, task: str, blocks: Sequence[str]) -> str:
    return DEBATE_ROUND_TEMPLATE.format(
        hint=DEBATE_FORMAT_HINTS[task], question=question, answers="".join(blocks) or "None"
    )


# ---------------------------------------------------------------- training rows


def _answers(record: Record) -> list[Mapping[str, Any]]:
    return [
        s
        for s in record.get("samples") or []
        if s.get("role") == "answer" and not s.get("error") and str(s.get("text", "")).strip()
    ]


def _question_and_history(prompt: Any) -> tuple[str, list[dict[str, Any]]]:
    if isinstance(prompt, str):
        return prompt, []
    content = content_text(prompt[-1]["content"])
    return content, [{"role": m["role"], "content": m["content"]} for m in prompt[:-1]]


def dr_sft_examples(record: Record) -> list[dict[str, Any]]:
    """D&R SFT (``mag2sft.py``): every correct answer of any round, each as TRL chat
    ``messages`` whose prompt is the plain answer template for the question."""
    question, history = _question_and_history(record["prompt"])
    rows = []
    for s in _answers(record):
        if s.get("correct") is True:
            user = answer_prompt_text(question, str(s.get("task", "free")))
            rows.append(
                {
                    "messages": [
                        *history,
                        {"role": "user", "content": user},
                        {"role": "assistant", "content": s["text"]},
                    ]
                }
            )
    return rows


def tdpo_examples(
    record: Record,
    *,
    max_prompt_tokens: int | None = None,
    count_tokens: TokenCounter | None = None,
    with_meta: bool = False,
) -> list[dict[str, Any]]:
    """T-DPO (``mag2preference.py``): per round, every correct x incorrect answer pair; the
    prompt is what that round's debaters were sent (round 0: the answer template; later:
    the shared debate prompt, rebuilt from the recorded turns it showed).

    With ``max_prompt_tokens``, a debate prompt over the limit is split as D&R does: the
    last-round answers are packed into several prompts that each fit, every chunk giving
    one row per pair (an answer block too long on its own is truncated).
    """
    count = count_tokens or approx_tokens
    question, history = _question_and_history(record["prompt"])
    by_id = {s["id"]: s for s in record.get("samples") or []}
    rounds: dict[int, list[Mapping[str, Any]]] = {}
    for s in _answers(record):
        rounds.setdefault(int(s.get("round", 0)), []).append(s)
    rows: list[dict[str, Any]] = []
    for rnd, answers in sorted(rounds.items()):
        good = [s for s in answers if s.get("correct") is True]
        bad = [s for s in answers if s.get("correct") is False]
        if not good or not bad:
            continue
        task = str(answers[0].get("task", "free"))
        if rnd == 0:
            texts = [answer_prompt_text(question, task)]
        else:
            shown = [by_id[i] for i in answers[0].get("references", []) if i in by_id]
            texts = _chunked(question, task, _blocks(shown), max_prompt_tokens, count)
        for text, (chosen, rejected) in itertools.product(texts, itertools.product(good, bad)):
            row: dict[str, Any] = {
                "prompt": [*history, {"role": "user", "content": text}],
                "chosen": [{"role": "assistant", "content": chosen["text"]}],
                "rejected": [{"role": "assistant", "content": rejected["text"]}],
            }
            if with_meta:
                row.update(round=rnd, chosen_id=chosen["id"], rejected_id=rejected["id"])
            rows.append(row)
    return rows


def approx_tokens(text: str) -> int:
    """A tokenizer-free estimate: about four characters per token."""
    return math.ceil(len(text) / 4)


def _chunked(
    question: str, task: str, blocks: list[str], limit: int | None, count: TokenCounter
) -> list[str]:
    whole = _round_text(question, task, blocks)
    if limit is None or count(whole) <= limit:
        return [whole]
    room = max(1, limit - count(_round_text(question, task, [])))
    chunks: list[list[str]] = [[]]
    for block in blocks:
        block = _truncate(block, room, count)
        if chunks[-1] and count("".join([*chunks[-1], block])) > room:
            chunks.append([])
        chunks[-1].append(block)
    return [_round_text(question, task, _renumbered(c)) for c in chunks]


def _renumbered(blocks: list[str]) -> list[str]:
    return [re.sub(r"^Answer \d+:", f"Answer {i + 1}:", b) for i, b in enumerate(blocks)]


def _truncate(text: str, limit: int, count: TokenCounter) -> str:
    if count(text) <= limit:
        return text
    lo, hi = 0, len(text)
    while lo < hi:  # the longest prefix that fits
        mid = (lo + hi + 1) // 2
        if count(text[:mid] + "\n\n") <= limit:
            lo = mid
        else:
            hi = mid - 1
    return text[:lo] + "\n\n"
