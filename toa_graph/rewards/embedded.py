"""The embedded default reward: whichever real CPU signal applies to the prompt.

Per call (one prompt, its responses, the prompt's references if any):

1. **math** - the reference looks like a final math answer (a number, fraction or short
   LaTeX expression) and :mod:`toa_graph.rewards.math` is available: 1.0 when the
   response's final answer equals the gold answer, else 0.0. (Without that module this
   case falls through to 2.)
2. **reference** - a reference is given: the mean of chrF/100 (character n-gram overlap,
   sacrebleu) and the cosine similarity of MiniLM sentence embeddings, each against the
   best-matching reference. Measures closeness to the reference, not quality.
3. **judge** - no reference: an LLM-as-judge rating (1-10, logprob-weighted where the
   server gives logprobs) by the first embedded agent (or ``judge_agent``), mapped to
   [0, 1] as (rating - 1) / 9. With the embedded 135M model this is a weak, noisy signal.

Every score is in [0, 1] (cosine could in principle dip below 0). Nothing here is a
trained preference reward model: for data you intend to train on, configure one
(``kind: hf`` / ``vllm``). When a signal cannot be computed the call raises
:class:`RewardError`; no score is invented.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
from collections.abc import Sequence
from typing import Any

from toa_graph.config import AgentConfig, EmbeddedRewardConfig, MathRewardConfig
from toa_graph.rewards.base import RewardError, RewardModel, reference_list
from toa_graph.rewards.judge import MAX_RATING, MIN_RATING, JudgeReward
from toa_graph.rewards.reference import ReferenceReward
from toa_graph.state import Prompt

__all__ = ["EmbeddedReward", "looks_like_math_answer"]

_NUM = r"[-+]?\$?\s*(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?\s*%?"
_MATH_PATTERNS = [
    re.compile(rf"^{_NUM}$"),  # 42, -3.5, 1,000, $12, 15%
    re.compile(rf"^{_NUM}\s*/\s*{_NUM}$"),  # 3/4
    re.compile(r"^\\boxed\{.*\}$"),
    re.compile(r"\\(?:frac|dfrac|tfrac|sqrt|pi|infty|cdot|times|le|ge|ne|pm)\b"),
    re.compile(r"^[\w\s^*+\-/().,{}\\]+$"),  # short formula-like: x^2+1, (1, 2), 2\sqrt{3}
]


def looks_like_math_answer(reference: str) -> bool:
    """A gold answer that is a number, fraction, interval or short LaTeX expression.

    >>> [looks_like_math_answer(s) for s in ["42", "-3.5", "\\\\frac{1}{2}", "Das Haus ist rot."]]
    [True, True, True, False]
    """
    s = reference.strip().strip("$").strip()
    if not s or len(s) > 40 or "\n" in s:
        return False
    if any(p.search(s) for p in _MATH_PATTERNS[:4]):
        return True
    # Formula-like text: must contain a digit or an operator, and few plain words.
    words = re.findall(r"[A-Za-z]{3,}", s)
    return (
        bool(_MATH_PATTERNS[4].match(s)) and bool(re.search(r"[\d^=+*/\\]", s)) and len(words) <= 1
    )


def _load_math_reward() -> RewardModel | None:
    """``toa_graph.rewards.math``'s reward, when that module exists (another component)."""
    if importlib.util.find_spec("toa_graph.rewards.math") is None:
        return None
    mod = importlib.import_module("toa_graph.rewards.math")
    cls: Any = getattr(mod, "MathReward", None)
    if cls is None:
        return None
    if hasattr(cls, "from_config"):
        return cls.from_config(MathRewardConfig(kind="math"))
    return cls()


class EmbeddedReward:
    """Dispatches to a math check, reference similarity or an LLM judge (see module doc)."""

    def __init__(
        self,
        *,
        judge: JudgeReward | None = None,
        chrf: ReferenceReward | None = None,
        embedding: ReferenceReward | None = None,
        math: RewardModel | None = None,
        load_math: bool = True,
    ) -> None:
        self.judge = judge
        self.chrf = chrf or ReferenceReward("chrf")
        self.embedding = embedding or ReferenceReward("embedding")
        self._math = math
        self._math_loaded = math is not None or not load_math
        self.last_kind: str | None = None
        """Which signal scored the most recent call: math, reference or judge."""

    @classmethod
    def from_config(
        cls, cfg: EmbeddedRewardConfig, *, agents: Sequence[AgentConfig] = ()
    ) -> EmbeddedReward:
        judge = None
        if agents:
            agent = agents[0]
            if cfg.judge_agent is not None:
                named = [a for a in agents if a.name == cfg.judge_agent]
                if not named:
                    raise RewardError(
                        f"embedded reward: judge_agent {cfg.judge_agent!r} is not one of "
                        f"{[a.name for a in agents]}"
                    )
                agent = named[0]
            judge = JudgeReward.from_agent(agent)
        return cls(judge=judge)

    @property
    def math(self) -> RewardModel | None:
        if not self._math_loaded:
            self._math = _load_math_reward()
            self._math_loaded = True
        return self._math

    def kind_for(self, references: Sequence[str] | None) -> str:
        refs = reference_list(references)
        if not refs:
            return "judge"
        if self.math is not None and all(looks_like_math_answer(str(r)) for r in refs):
            return "math"
        return "reference"

    async def ascore(
        self,
        prompt: Prompt,
        responses: Sequence[str],
        references: Sequence[str] | None = None,
    ) -> list[float]:
        refs = reference_list(references)
        kind = self.kind_for(refs)
        self.last_kind = kind
        if not responses:
            return []
        if kind == "math":
            assert self.math is not None
            scores = await self.math.ascore(prompt, responses, refs)
        elif kind == "reference":
            c = await self.chrf.ascore(prompt, responses, refs)
            e = await self.embedding.ascore(prompt, responses, refs)
            scores = [(a + b) / 2.0 for a, b in zip(c, e, strict=True)]
        else:
            if self.judge is None:
                raise RewardError(
                    "embedded reward: the prompt has no reference and no judge agent is configured"
                )
            ratings = await self.judge.ascore(prompt, responses)
            scores = [(r - MIN_RATING) / (MAX_RATING - MIN_RATING) for r in ratings]
        return list(scores)

    def counters(self) -> dict[str, int]:
        """The judge's counters (requests, retries, fallbacks, text ratings)."""
        return self.judge.counters() if self.judge is not None else {}

    def __repr__(self) -> str:
        return f"EmbeddedReward(judge={self.judge!r})"
