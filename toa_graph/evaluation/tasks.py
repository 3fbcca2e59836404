"""Evaluation tasks: turn data rows into items (prompt + gold / reference) and score one
model output. Pure logic over plain data; the answers rules are :mod:`toa_graph.answers`.

Tasks:

- ``gsm8k`` / ``math``: accuracy of the final answer (numeric / LaTeX-aware).
- ``choice``: accuracy of a letter answer A-J (MMLU-Pro style; ``options`` are lettered
  into the prompt when the row has them).
- ``winrate``: the output against a reference answer, scored by a reward model or a judge
  (raw and length-controlled win rate, as AlpacaEval 2 reports them).
- ``chrf``: chrF of a translation against its reference (sacrebleu).
- ``comet-kiwi``: reference-free COMET-KIWI of a translation (where ``unbabel-comet`` is
  installed).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any, Literal, get_args

from toa_graph.answers import TaskType, extract_final_answer, gold_answer, is_correct
from toa_graph.distill_errors import EvalError

__all__ = [
    "ACCURACY_TASKS",
    "BUILTIN_DATA",
    "EVAL_TASKS",
    "EvalItem",
    "EvalTask",
    "builtin_rows",
    "chrf",
    "make_items",
    "score_accuracy",
]

EvalTask = Literal["gsm8k", "math", "choice", "winrate", "chrf", "comet-kiwi"]
EVAL_TASKS: tuple[str, ...] = get_args(EvalTask)

ACCURACY_TASKS: dict[str, TaskType] = {"gsm8k": "numeric", "math": "math", "choice": "choice"}
"""Accuracy tasks and the answer type each checks with."""

_INSTRUCTIONS: dict[str, str] = {
    "gsm8k": 'Solve the problem step by step, then end with a line "Final answer: <number>".',
    "math": "Solve the problem step by step and put the final answer in \\boxed{}.",
    "choice": (
        'Think step by step, then end with a line "Final answer: X" where X is the letter '
        "of the correct option."
    ),
}

BUILTIN_DATA: dict[str, tuple[str, dict[str, str]]] = {
    "gsm8k": ("gsm8k.sample.jsonl", {"prompt": "question", "gold": "answer"}),
    "math": ("math.sample.jsonl", {"prompt": "problem", "gold": "answer"}),
}
"""Data names that resolve to the samples shipped in ``toa_graph/data`` (MIT)."""

# Field names tried, in order, when the field map does not name one.
_DEFAULT_FIELDS: dict[str, tuple[str, ...]] = {
    "id": ("id", "question_id", "idx"),
    "prompt": ("prompt", "question", "problem", "instruction", "input", "source", "src"),
    "gold": ("gold", "answer", "gold_answer", "label"),
    "reference": ("reference", "output", "ref", "target", "tgt", "gold_response"),
    "options": ("options", "choices"),
    "source": ("source", "src", "instruction", "prompt"),
}
_NEEDS: dict[str, tuple[str, ...]] = {
    "gsm8k": ("prompt", "gold"),
    "math": ("prompt", "gold"),
    "choice": ("prompt", "gold"),
    "winrate": ("prompt", "reference"),
    "chrf": ("prompt", "reference"),
    "comet-kiwi": ("prompt",),
}


@dataclass(frozen=True)
class EvalItem:
    """One evaluation item: what the model is asked, and what its answer is checked with."""

    id: str
    prompt: str
    """The full user message sent to the model (task instruction included)."""
    gold: str | None = None
    reference: str | None = None
    source: str | None = None
    """The source text of a translation (COMET-KIWI), else the question."""


def builtin_rows(name: str) -> list[dict[str, Any]]:
    """Rows of a shipped sample (``gsm8k`` or ``math``)."""
    fname = BUILTIN_DATA[name][0]
    text = resources.files("toa_graph").joinpath("data", fname).read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _field(row: Mapping[str, Any], key: str, field_map: Mapping[str, str]) -> Any:
    if key in field_map:
        return row.get(field_map[key])
    for name in _DEFAULT_FIELDS[key]:
        if row.get(name) is not None:
            return row[name]
    return None


def _choice_prompt(question: str, options: Any) -> str:
    if not options:
        return question
    if not isinstance(options, list) or len(options) > 10:
        raise ValueError("options must be a list of at most 10 answers (A-J)")
    lines = [f"{chr(ord('A') + i)}. {opt}" for i, opt in enumerate(options)]
    return question + "\n\nOptions:\n" + "\n".join(lines)


def _gold_letter(gold: Any) -> str:
    if isinstance(gold, int) and 0 <= gold < 10:  # an option index
        return chr(ord("A") + gold)
    return str(gold)


def make_items(
    rows: Iterable[Mapping[str, Any]],
    task: EvalTask,
    field_map: Mapping[str, str] | None = None,
    source: str = "data",
) -> list[EvalItem]:
    """Items for a task; a row that lacks a needed field raises :class:`EvalError` naming
    the row (1-based) and the field (give ``--field-map KEY=FIELD`` to point elsewhere)."""
    fmap = dict(field_map or {})
    unknown = sorted(set(fmap) - set(_DEFAULT_FIELDS))
    if unknown:
        raise EvalError(f"unknown field-map key(s) {unknown}; known: {sorted(_DEFAULT_FIELDS)}")
    items: list[EvalItem] = []
    for n, row in enumerate(rows, start=1):
        values = {k: _field(row, k, fmap) for k in _DEFAULT_FIELDS}
        for key in _NEEDS[task]:
            v = values[key]
            if v is None or (isinstance(v, str) and not v.strip()):
                want = fmap.get(key, "/".join(_DEFAULT_FIELDS[key]))
                raise EvalError(f"{source}: row {n} has no {key} (field {want!r})")
        question = str(values["prompt"])
        try:
            text = _choice_prompt(question, values["options"]) if task == "choice" else question
        except ValueError as e:
            raise EvalError(f"{source}: row {n}: {e}") from None
        if task in _INSTRUCTIONS:
            text = f"{text}\n\n{_INSTRUCTIONS[task]}"
        gold = values["gold"]
        items.append(
            EvalItem(
                id=str(values["id"]) if values["id"] is not None else str(n),
                prompt=text,
                gold=None
                if gold is None
                else _gold_letter(gold)
                if task == "choice"
                else str(gold),
                reference=None if values["reference"] is None else str(values["reference"]),
                source=question if values["source"] is None else str(values["source"]),
            )
        )
    if not items:
        raise EvalError(f"{source}: no items to evaluate")
    return items


def score_accuracy(task: EvalTask, output: str, gold: str) -> tuple[str | None, bool]:
    """The extracted final answer and whether it is right.

    >>> score_accuracy("gsm8k", "3 + 4 = 7\\nFinal answer: 7", "#### 7")
    ('7', True)
    """
    kind = ACCURACY_TASKS[task]
    return extract_final_answer(output, kind), is_correct(output, gold_answer(gold), kind)


def chrf(output: str, reference: str) -> float:
    """Sentence chrF (0-100) of a translation against its reference."""
    from sacrebleu.metrics import CHRF

    return float(CHRF().sentence_score(output, [reference]).score)
