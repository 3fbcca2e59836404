"""Verifiable-answer reward for GSM8K / MATH, on real lines of the shared data sets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from toa_graph.rewards.base import RewardError, RewardModel
from toa_graph.rewards.math import (
    MathReward,
    answers_match,
    extract_answer,
    extract_boxed,
    gold_answer,
    parse_number,
)

DATA = Path(__file__).resolve().parents[1] / "toa_graph" / "data"
"""The GSM8K and MATH-500 samples the package ships (real test-set lines)."""


def _lines(name: str, n: int) -> list[dict]:
    """The first ``n`` rows of a shipped sample as instruction / gold answer / gold solution."""
    out = []
    with (DATA / name).open(encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            out.append(
                {
                    "id": row["id"],
                    "instruction": row.get("question") or row["problem"],
                    "gold_answer": row["answer"],
                    "gold_response": row["solution"],
                }
            )
            if len(out) >= n:
                break
    return out


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("so she pays $18 every day.\n#### 18", "18"),
        ("Thus the result is \\boxed{\\dfrac{17}{50}}.", "\\dfrac{17}{50}"),
        ("first \\boxed{1} then \\boxed{\\frac{\\sqrt{3}}{2}}", "\\frac{\\sqrt{3}}{2}"),
        ("The answer is 1,128.", "1,128"),
        ("Final answer: $42", "$42"),
        ("We get 3 apples and 5 pears, 8 fruits in total", "8"),
        ("no digits here", None),
        ("", None),
        ("\\boxed 7", "7"),
    ],
)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


def test_extract_boxed_unbalanced():
    assert extract_boxed("\\boxed{\\frac{1}{2}") is None


@pytest.mark.parametrize(
    ("pred", "gold", "ok"),
    [
        ("1,128", "1128", True),
        ("$18.00", "18", True),
        ("18.0", "18", True),
        ("50%", "50", True),
        ("\\$5", "5", True),
        ("17/50", "\\dfrac{17}{50}", True),
        ("0.34", "\\frac{17}{50}", True),
        ("\\tfrac{17}{50}", "\\dfrac{17}{50}", True),
        ("\\frac12", "\\frac{1}{2}", True),
        ("-\\frac{1}{2}", "-0.5", True),
        ("x = 5", "5", True),
        ("10\\text{ cm}", "10", True),
        ("\\left( 3, \\frac{\\pi}{2} \\right)", "\\left( 3, \\frac{\\pi}{2} \\right)", True),
        ("(3,\\frac{\\pi}{2})", "\\left( 3, \\frac{\\pi}{2} \\right)", True),
        ("\\text{(C)}", "\\text{(C)}", True),
        ("17", "18", False),
        ("0.33", "\\frac{1}{3}", False),
        (None, "1", False),
        ("\\frac{1}{0}", "1", False),
    ],
)
def test_answers_match(pred, gold, ok):
    assert answers_match(pred, gold) is ok


def test_parse_number():
    assert parse_number("1,000,000") == 1_000_000
    assert parse_number("\\dfrac{3}{4}") == parse_number("0.75") == parse_number("3/4")
    assert parse_number("\\sqrt{2}") is None


def test_gold_answer_formats():
    assert gold_answer("work...\n#### 1,128") == "1,128"
    assert gold_answer("hence $\\boxed{\\dfrac{17}{50}}$.") == "\\dfrac{17}{50}"
    assert gold_answer(" 84 ") == "84"


async def test_gsm8k_real_lines():
    rows = _lines("gsm8k.sample.jsonl", 5)
    reward = MathReward()
    assert isinstance(reward, RewardModel)
    for row in rows:
        gold = row["gold_answer"]
        good = [
            f"Step by step... The answer is {gold}.",
            f"reasoning\n#### {gold}",
            f"Therefore the total is ${int(gold):,}" if gold.isdigit() else f"{gold}",
        ]
        bad = [f"The answer is {int(float(gold)) + 1}.", "I don't know."]
        # gold as the bare answer, and as the full solution with its "#### n" line
        for ref in (gold, row["gold_response"]):
            scores = await reward.ascore(row["instruction"], good + bad, [ref])
            assert scores == [1.0, 1.0, 1.0, 0.0, 0.0], (row["id"], ref[-30:])
        # the reference solution itself scores 1.0 against its gold answer
        assert await reward.ascore(row["instruction"], [row["gold_response"]], [gold]) == [1.0]


async def test_math500_real_lines():
    rows = _lines("math.sample.jsonl", 40)
    reward = MathReward()
    seen_frac = False
    for row in rows:
        gold = row["gold_answer"]
        boxed = f"Let's think. ... so we get $\\boxed{{{gold}}}$"
        scores = await reward.ascore(
            row["instruction"], [row["gold_response"], boxed, "\\boxed{-987654}"], [gold]
        )
        assert scores == [1.0, 1.0, 0.0], row["id"]
        if "frac" in gold:
            seen_frac = True
            num = parse_number(gold)
            if num is not None:  # the same value written as a/b and as a decimal
                alt = f"{num.numerator}/{num.denominator}"
                assert await reward.ascore(row["instruction"], [f"\\boxed{{{alt}}}"], [gold]) == [
                    1.0
                ]
    assert seen_frac


async def test_no_gold_raises():
    reward = MathReward()
    with pytest.raises(RewardError, match="gold"):
        await reward.ascore("2+2?", ["4"])
    with pytest.raises(RewardError):
        await reward.ascore("2+2?", ["4"], ["  "])


def test_from_config():
    from toa_graph.config import MathRewardConfig

    assert isinstance(MathReward.from_config(MathRewardConfig(kind="math")), MathReward)
