"""Verifiable final answers for GSM8K (``#### 42`` gold) and MATH (``\\boxed{...}`` gold).

The reward is 1.0 when the response's final answer equals a gold answer, else 0.0. The
gold comes from ``references`` (the prompt's reference data: a bare answer such as
``1128`` or ``\\dfrac{17}{50}``, a GSM8K solution ending in ``#### 1128``, or a MATH
solution with ``\\boxed{...}``). Without a gold answer the reward raises
:class:`~toa_graph.rewards.base.RewardError`: it never guesses.

Final-answer extraction, in order: the last ``\\boxed{...}`` / ``\\fbox{...}``; the last
``#### ...``; the last "answer is ..." / "Answer: ..."; the last number in the text.
Comparison: numerically where both sides parse as numbers (commas, ``$``, ``%``, units in
``\\text{}``, ``\\frac{a}{b}`` / ``a/b`` / decimals, trailing ``.0``), else as normalised
LaTeX strings (spaces, ``\\left``/``\\right``, ``\\dfrac``/``\\tfrac``, ``\\!``, a leading
``x =``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from fractions import Fraction
from typing import Any

from toa_graph.rewards.base import RewardError, reference_list
from toa_graph.state import Prompt

__all__ = [
    "MathReward",
    "answers_match",
    "extract_answer",
    "extract_boxed",
    "gold_answer",
    "normalize_answer",
    "parse_number",
]

_NUM = r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+"
_NUM_RE = re.compile(_NUM)
_ANSWER_IS = re.compile(
    r"(?:final answer|the answer|answer)\s*(?:is|:|=)\s*:?\s*(.+)", re.IGNORECASE
)


def extract_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` (or ``\\fbox{...}``), braces balanced."""
    starts = [m.end() for m in re.finditer(r"\\(?:boxed|fbox)\s*\{", text)]
    if not starts:
        bare = re.findall(r"\\boxed\s+([^\s$]+)", text)  # \boxed 5
        return bare[-1] if bare else None
    i = starts[-1]
    depth = 1
    j = i
    while j < len(text):
        c = text[j]
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return text[i:j].strip()
        j += 1
    return None  # unbalanced


def extract_answer(text: str) -> str | None:
    """The final answer of a response (see module doc), or None if there is none."""
    if not text:
        return None
    boxed = extract_boxed(text)
    if boxed is not None:
        return boxed
    hashes = re.findall(r"####\s*([^\n]+)", text)
    if hashes:
        return hashes[-1].strip()
    found = _ANSWER_IS.findall(text)
    if found:
        ans = found[-1].strip()
        ans = re.split(r"(?<=[^\d])\.\s|\.$|\n", ans)[0].strip()  # first sentence
        if ans:
            return ans
    nums = _NUM_RE.findall(text)
    return nums[-1] if nums else None


def gold_answer(reference: str) -> str:
    """The gold answer from a reference: after ``####``, inside ``\\boxed{}``, or as is."""
    ref = reference.strip()
    if "####" in ref:
        return ref.rsplit("####", 1)[1].strip()
    boxed = extract_boxed(ref)
    if boxed is not None:
        return boxed
    return ref


def _strip_text_units(s: str) -> str:
    # \text{ cm}, \mbox{...}: keep the content only when it is the whole answer
    inner = re.fullmatch(r"\\(?:text|textbf|mbox|mathrm)\{(.*)\}", s)
    if inner:
        return inner.group(1)
    return re.sub(r"\\(?:text|mbox|mathrm)\{[^{}]*\}", "", s)


def normalize_answer(ans: str) -> str:
    """Canonical string form of an answer (for non-numeric comparison)."""
    s = ans.strip()
    s = s.replace("\\!", "").replace("\\,", "").replace("\\;", "").replace("\\ ", "")
    s = s.replace("\\left", "").replace("\\right", "")
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    s = s.replace("^\\circ", "").replace("^{\\circ}", "").replace("\\circ", "")
    s = s.replace("\\%", "").replace("%", "").replace("\\$", "").replace("$", "")
    s = _strip_text_units(s)
    s = s.replace("\\displaystyle", "")
    s = re.sub(r"^[a-zA-Z]\s*=\s*", "", s)  # x = 5
    s = s.rstrip(".").strip()
    s = re.sub(r"(\d),(\d{3})(?!\d)", r"\1\2", s)
    s = re.sub(r"(\d),(\d{3})(?!\d)", r"\1\2", s)
    s = re.sub(r"\\frac(\d)(\d)", r"\\frac{\1}{\2}", s)  # \frac12
    s = re.sub(r"\\frac\{([^{}]*)\}(\d)", r"\\frac{\1}{\2}", s)
    s = re.sub(r"\\sqrt(\d+)", r"\\sqrt{\1}", s)
    s = s.replace(" ", "")
    if re.fullmatch(r"-?\d+\.0+", s):
        s = s.split(".")[0]
    return s


def parse_number(ans: str) -> Fraction | None:
    """An answer as an exact number, if it is one (``1,000``, ``$5``, ``3/4``, ``\\frac{3}{4}``,
    ``-0.5``, ``50%``); None otherwise."""
    s = normalize_answer(ans)
    m = re.fullmatch(r"(-?)\\frac\{(-?\d+(?:\.\d+)?)\}\{(-?\d+(?:\.\d+)?)\}", s)
    try:
        if m:
            num, den = Fraction(m.group(2)), Fraction(m.group(3))
            if den == 0:
                return None
            val = num / den
            return -val if m.group(1) else val
        m = re.fullmatch(r"(-?\d+(?:\.\d+)?)/(-?\d+(?:\.\d+)?)", s)
        if m:
            den = Fraction(m.group(2))
            return None if den == 0 else Fraction(m.group(1)) / den
        if re.fullmatch(r"-?\d+(?:\.\d+)?|-?\.\d+", s):
            return Fraction(s)
    except (ValueError, ZeroDivisionError):
        return None
    return None


def answers_match(pred: str | None, gold: str) -> bool:
    """Whether a predicted final answer equals the gold one (numerically or as normalised text)."""
    if pred is None:
        return False
    a, b = parse_number(pred), parse_number(gold)
    if a is not None and b is not None:
        if a == b:
            return True
        return abs(float(a) - float(b)) <= 1e-6 * max(1.0, abs(float(b)))
    return normalize_answer(pred) == normalize_answer(gold)


class MathReward:
    """1.0 if the response's final answer matches a gold answer from ``references``, else 0.0.

    >>> import asyncio
    >>> r = MathReward()
    >>> asyncio.run(r.ascore("2+2?", ["It is \\\\boxed{4}.", "5"], ["#### 4"]))
    [1.0, 0.0]
    """

    name = "math"

    async def ascore(
        self,
        prompt: Prompt,
        responses: Sequence[str],
        references: Sequence[str] | None = None,
    ) -> list[float]:
        return self.score(responses, references)

    def score(self, responses: Sequence[str], references: Sequence[str] | None) -> list[float]:
        golds = [gold_answer(r) for r in reference_list(references)]
        if not golds:
            raise RewardError(
                "math reward needs a gold answer: pass the prompt's reference (e.g. GSM8K "
                "'#### 42' or the MATH answer)"
            )
        out = []
        for resp in responses:
            pred = extract_answer(resp or "")
            out.append(1.0 if any(answers_match(pred, g) for g in golds) else 0.0)
        return out

    @classmethod
    def from_config(cls, cfg: Any = None, *, agents: Any = ()) -> MathReward:
        return cls()

    def __repr__(self) -> str:
        return "MathReward()"
