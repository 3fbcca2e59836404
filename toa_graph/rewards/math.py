"""Verifiable final answers for GSM8K (``#### 42`` gold) and MATH (``\\boxed{...}`` gold).

The reward is 1.0 when the response's final answer equals a gold answer, else 0.0. The
gold comes from ``references`` (the prompt's reference data: a bare answer such as
``1128`` or ``\\dfrac{17}{50}``, a GSM8K solution ending in ``#### 1128``, or a MATH
solution with ``\\boxed{...}``). Without a gold answer the reward raises
:class:`~toa_graph.rewards.base.RewardError`: it never guesses.

The rules live in :mod:`toa_graph.answers` (re-exported here). Final-answer extraction, in
order: the last ``\\boxed{...}`` / ``\\fbox{...}``; the last
``#### ...``; the last "answer is ..." / "Answer: ..."; the last number in the text.
Comparison: numerically where both sides parse as numbers (commas, ``$``, ``%``, units in
``\\text{}``, ``\\frac{a}{b}`` / ``a/b`` / decimals, trailing ``.0``), else as normalised
LaTeX strings (spaces, ``\\left``/``\\right``, ``\\dfrac``/``\\tfrac``, ``\\!``, a leading
``x =``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from toa_graph.answers import (
    answers_match,
    extract_answer,
    extract_boxed,
    gold_answer,
    normalize_answer,
    parse_number,
)
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
