"""Final answers: extraction from a response and equivalence with a gold answer.

The one place where the project decides whether an answer is right: the math reward,
debate's correctness checks and ``toa-graph evaluate`` all call it. Pure string logic,
no model, no I/O.

Task types (:data:`TaskType`):

- ``numeric`` (GSM8K): the answer is a number; ``$1,128.00``, ``1128``, ``50%`` and
  ``18 dollars`` compare equal as numbers.
- ``choice`` (MMLU-Pro style): a letter A-J; ``(B)``, ``B)``, ``\\boxed{B}``,
  ``The answer is b`` are all ``B``.
- ``math`` (MATH): numbers compare numerically (fractions, decimals, ``\\frac``), any
  other answer as a normalised LaTeX string (``\\dfrac``/``\\tfrac``, ``\\left``,
  spaces, ``\\text{}`` units, a leading ``x =``).
- ``free``: short free-form answers compared case-, punctuation- and article-blind.

Extraction, in order: the last ``\\boxed{...}``; the last ``#### ...``; the last
"Final answer: ..." / "The answer is ..." / "Answer: ..." (an echoed template
``Final answer: ...`` does not count); then a task fallback (numeric, math: the last
number in the text; choice: a lone letter or the last ``(X)``; free: the last line).

>>> is_correct("2 + 2 = 4.\\nFinal answer: **4.0**", "#### 4", task="numeric")
True
>>> extract_final_answer("I pick (C) because ...", task="choice")
'C'
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence
from fractions import Fraction
from typing import Literal, get_args

__all__ = [
    "TASK_TYPES",
    "TaskType",
    "answers_match",
    "detect_task",
    "extract_answer",
    "extract_boxed",
    "extract_final_answer",
    "gold_answer",
    "is_correct",
    "normalize_answer",
    "parse_number",
]

TaskType = Literal["numeric", "choice", "math", "free"]
TASK_TYPES: tuple[str, ...] = get_args(TaskType)

_NUM_RE = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")
_ANSWER_IS = re.compile(
    r"(?:final answer|the answer|answer)\s*(?:is|:|=|：)\s*:?\s*(.+)", re.IGNORECASE
)
_LETTER_RE = re.compile(r"(?<![A-Za-z])\(?([A-Ja-j])\)?(?![A-Za-z])")


def extract_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` (or ``\\fbox{...}``), braces balanced."""
    starts = [m.end() for m in re.finditer(r"\\(?:boxed|fbox)\s*\{", text)]
    if not starts:
        bare = re.findall(r"\\boxed\s+([^\s$]+)", text)  # \boxed 5
        return bare[-1] if bare else None
    i = starts[-1]
    depth = 1
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i:j].strip()
    return None  # unbalanced


def _marked_answer(text: str) -> str | None:
    """The answer after the last explicit marker (boxed, ####, "answer is/:"), if any."""
    boxed = extract_boxed(text)
    if boxed is not None:
        return boxed
    hashes = re.findall(r"####\s*([^\n]+)", text)
    if hashes:
        return str(hashes[-1]).strip()
    # "...": the template echoed back ('End with a line "Final answer: ..."'), no answer
    found = [f for f in _ANSWER_IS.findall(text) if not f.strip().startswith("...")]
    if found:
        ans = found[-1].strip()
        ans = re.split(r"(?<=[^\d])\.\s|\.$|\n", ans)[0].strip()  # first sentence
        ans = ans.replace("**", "").strip()
        if ans:
            return ans
    return None


def extract_answer(text: str) -> str | None:
    """The final answer of a math/numeric response, as written (not normalised), or None.

    >>> extract_answer("so she pays $18 every day.\\n#### 18")
    '18'
    """
    if not text:
        return None
    marked = _marked_answer(text)
    if marked is not None:
        return marked
    nums = _NUM_RE.findall(text)
    return nums[-1] if nums else None


def _choice_letter(ans: str) -> str | None:
    s = re.sub(r"\\text\{([^{}]*)\}", r"\1", ans).replace("*", "").strip()
    m = re.fullmatch(r"\(?([A-Ja-j])\)?[.:)]?(?:\s.*)?", s, re.DOTALL)
    if m:
        return m.group(1).upper()
    m = _LETTER_RE.search(s) if len(s) <= 3 else None
    return m.group(1).upper() if m else None


def extract_final_answer(text: str, task: TaskType = "math") -> str | None:
    """The final answer of a response for a task type, or None when it gives none.

    numeric and math return the answer as written (compare with :func:`answers_match`);
    choice returns the upper-case letter; free returns the stripped answer text.

    >>> extract_final_answer("Final answer: 18 dollars", task="numeric")
    '18'
    """
    if not text or not text.strip():
        return None
    marked = _marked_answer(text)
    if task == "choice":
        if marked is not None:
            return _choice_letter(marked)
        lone = _choice_letter(text.strip())
        if lone is not None and len(text.strip()) <= 3:
            return lone
        parens = re.findall(r"\(([A-J])\)", text)
        return parens[-1] if parens else None
    if task == "free":
        if marked is not None:
            return marked
        lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
        return lines[-1] if lines else None
    ans = extract_answer(text)
    if task == "numeric" and ans is not None and parse_number(ans) is None:
        nums = _NUM_RE.findall(ans)  # "18 dollars", "x = 5 apples"
        return nums[-1] if nums else ans
    return ans


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
    """Canonical string form of a math answer (for non-numeric comparison)."""
    s = ans.strip().replace("**", "")
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


def _normalize_free(ans: str) -> str:
    s = ans.lower().replace("**", "")
    s = "".join(c for c in s if c not in string.punctuation)
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def answers_match(pred: str | None, gold: str, task: TaskType = "math") -> bool:
    """Whether a predicted final answer equals the gold one under a task type's rules."""
    if pred is None or not gold.strip():
        return False
    if task == "choice":
        a, b = _choice_letter(pred), _choice_letter(gold)
        return a is not None and a == b
    if task == "free":
        return _normalize_free(pred) == _normalize_free(gold)
    x, y = parse_number(pred), parse_number(gold)
    if x is not None and y is not None:
        if x == y:
            return True
        return abs(float(x) - float(y)) <= 1e-6 * max(1.0, abs(float(y)))
    if task == "numeric":
        return False
    return normalize_answer(pred) == normalize_answer(gold)


def detect_task(gold: str) -> TaskType:
    """A task type guessed from a gold answer: a lone letter -> choice, a number ->
    numeric, anything else -> math.

    >>> detect_task("(B)"), detect_task("#### 1,128"), detect_task("\\\\frac{1}{2}")
    ('choice', 'numeric', 'numeric')
    """
    g = gold_answer(gold)
    if re.fullmatch(r"\(?[A-J]\)?", g.strip()):
        return "choice"
    if parse_number(g) is not None:
        return "numeric"
    return "math"


def is_correct(text: str, gold: str | Sequence[str], task: TaskType | None = None) -> bool:
    """Whether a response's final answer equals a gold answer (or one of several).

    Golds may be bare answers or full references (``... #### 42``, ``\\boxed{...}``);
    ``task=None`` guesses the type from each gold (:func:`detect_task`).
    """
    if task is not None and task not in TASK_TYPES:
        raise ValueError(f"unknown answer task type {task!r}; known: {list(TASK_TYPES)}")
    golds = [gold] if isinstance(gold, str) else list(gold)
    for g in golds:
        if not g or not g.strip():
            continue
        t = task or detect_task(g)
        if answers_match(extract_final_answer(text, t), gold_answer(g), t):
            return True
    return False
