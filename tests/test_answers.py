"""The one answers module: extraction and equivalence per task type."""

from __future__ import annotations

import doctest

import pytest

from toa_graph import answers
from toa_graph.answers import (
    answers_match,
    detect_task,
    extract_final_answer,
    is_correct,
)


def test_doctests() -> None:
    result = doctest.testmod(answers)
    assert result.attempted > 0 and result.failed == 0


@pytest.mark.parametrize(
    ("text", "task", "expected"),
    [
        ("She pays $18 a day.\n#### 18", "numeric", "18"),
        ("Final answer: 18 dollars", "numeric", "18"),
        ("The answer is $1,128.", "numeric", "$1,128"),
        ("3 + 4 = 7 so 7 apples", "numeric", "7"),
        ("no number at all", "numeric", None),
        ("Final answer: (b)", "choice", "B"),
        ("The answer is C. Because ...", "choice", "C"),
        ("\\boxed{J}", "choice", "J"),
        ("D", "choice", "D"),
        ("Between (A) and (C) I take (C) as it fits", "choice", "C"),
        ("I cannot tell", "choice", None),
        ("thus $\\boxed{\\dfrac{17}{50}}$", "math", "\\dfrac{17}{50}"),
        ("Reasoning...\nParis", "free", "Paris"),
        ("Final answer: The Eiffel Tower.", "free", "The Eiffel Tower"),
        ("", "math", None),
        ("   ", "free", None),
    ],
)
def test_extract_final_answer(text, task, expected) -> None:
    assert extract_final_answer(text, task) == expected


def test_echoed_template_is_not_an_answer() -> None:
    text = 'End with a line "Final answer: ..."\nI think it is 12.\nFinal answer: 12'
    assert extract_final_answer(text, "numeric") == "12"
    assert extract_final_answer('Answer with "Final answer: ..."', "free") is not None


@pytest.mark.parametrize(
    ("pred", "gold", "task", "ok"),
    [
        ("$1,128.00", "1128", "numeric", True),
        ("1128", "1129", "numeric", False),
        ("x", "5", "numeric", False),
        ("(b)", "B", "choice", True),
        ("B", "(C)", "choice", False),
        ("\\text{(C)}", "C", "choice", True),
        ("\\tfrac{1}{2}", "0.5", "math", True),
        ("(3,\\frac{\\pi}{2})", "\\left( 3, \\frac{\\pi}{2} \\right)", "math", True),
        ("the Eiffel tower!", "Eiffel Tower", "free", True),
        ("Louvre", "Eiffel Tower", "free", False),
        (None, "1", "math", False),
        ("1", "  ", "math", False),
    ],
)
def test_answers_match(pred, gold, task, ok) -> None:
    assert answers_match(pred, gold, task) is ok


@pytest.mark.parametrize(
    ("gold", "task"),
    [("B", "choice"), ("(J)", "choice"), ("#### 1,128", "numeric"), ("\\sqrt{2}", "math")],
)
def test_detect_task(gold, task) -> None:
    assert detect_task(gold) == task


def test_is_correct_with_references_and_several_golds() -> None:
    assert is_correct("so \\boxed{42}", "work ... #### 42")
    assert is_correct("Final answer: 7", ["", "6", "7"])
    assert not is_correct("Final answer: 8", ["6", "7"])
    assert is_correct("The answer is (D).", "D")  # choice guessed from the gold
    assert not is_correct("The answer is (A).", "D")
    assert not is_correct("", "D")
    assert not is_correct("Final answer: 5", [])


def test_unknown_task_type_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown answer task type"):
        is_correct("Final answer: 1", "1", task="numbers")  # type: ignore[arg-type]
