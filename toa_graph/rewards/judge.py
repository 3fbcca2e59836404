"""LLM-as-judge reward through any OpenAI-compatible chat endpoint.

What it measures: the judge model's opinion of each response, asked as a 1-10 rating of
how helpful, correct and clear the answer is (one request per response, the responses
judged independently). The score returned is in [1, 10]:

- where the server returns ``logprobs`` for the rating token (vLLM does), the score is the
  probability-weighted mean over the rating tokens 1..10 among the top log-probabilities
  (a smooth expected rating rather than one sampled digit, which matters for small
  judges). The two-token "10" is handled when it is the rating produced; otherwise the
  digit "1" is counted as 1;
- otherwise the first rating found in the reply text ("7", "Rating: 7/10", "**7**").

A reply holding no rating raises :class:`RewardError`: no number is ever invented. The
judge is only as good as its model; the embedded 135M judge is a weak, noisy signal.

On vLLM the reply is constrained to one of "1".."10" (structured outputs, ``choice``) and
prefilled with "Rating (1-10):" (``continue_final_message``), so that the first token is
always a rating (unconstrained, the 135M embedded judge answered with prose in ~6% of
calls); servers that reject either (or ``logprobs``) are detected on the first 400 answer
and asked again without it. Each such fallback is logged once (a warning) and counted:
:meth:`JudgeReward.counters` reports it with the ratings read from text, for the run
summary. Transient failures (5xx, 429, connection errors) are retried under one
:class:`~toa_graph.retry.RetryPolicy` (``max_retries + 1`` attempts; the OpenAI client's
own retries are off).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import re
from collections.abc import Sequence
from typing import Any

from toa_graph.config import AgentConfig, JudgeRewardConfig
from toa_graph.reasoning import split_message
from toa_graph.retry import RetryPolicy
from toa_graph.rewards.base import RewardError, reference_list
from toa_graph.state import Prompt
from toa_graph.text import content_text

__all__ = [
    "JUDGE_SYSTEM",
    "JUDGE_TEMPLATE",
    "JudgeReward",
    "expected_rating",
    "parse_rating",
    "prompt_text",
]

JUDGE_SYSTEM = "You are a strict, fair judge of answer quality."
JUDGE_TEMPLATE = (
    "Question:\n{question}\n\n{reference}Answer to rate:\n{answer}\n\n"
    "Rate how helpful, correct and clear the answer is, on a scale from 1 (useless or wrong) "
    "to 10 (excellent). Reply with only the number."
)
logger = logging.getLogger(__name__)

PREFILL = "Rating (1-10):"
MIN_RATING, MAX_RATING = 1, 10
_CHOICES = [str(i) for i in range(MIN_RATING, MAX_RATING + 1)]

_OUT_OF = re.compile(r"(?<![\d.])(\d{1,2})(?:\.\d+)?\s*(?:/|out\s+of)\s*10\b", re.IGNORECASE)
_NUMBER = re.compile(r"(?<![\d.])(\d{1,2})(?:\.\d+)?(?![\d])")


def prompt_text(prompt: Prompt) -> str:
    """A prompt as plain text: a string as is; chat messages as ``role: content`` lines."""
    if isinstance(prompt, str):
        return prompt
    parts = []
    for m in prompt:
        parts.append(f"{m.get('role', 'user')}: {content_text(m.get('content'))}")
    return "\n".join(parts)


def parse_rating(text: str) -> int | None:
    """The first rating 1-10 in a judge's reply, or ``None`` when there is none.

    >>> parse_rating("Rating: 7/10"), parse_rating(" **8**"), parse_rating("10"), parse_rating("no")
    (7, 8, 10, None)
    """
    for rx in (_OUT_OF, _NUMBER):
        for m in rx.finditer(text):
            value = int(m.group(1))
            if MIN_RATING <= value <= MAX_RATING:
                return value
    return None


def _token_value(token: str) -> int | None:
    t = token.strip()
    if t.isdigit() and MIN_RATING <= int(t) <= MAX_RATING and not t.startswith("0"):
        return int(t)
    return None


def _tops(entry: Any) -> list[tuple[str, float]]:
    return [
        (str(_get(t, "token")), float(_get(t, "logprob")))
        for t in (_get(entry, "top_logprobs") or [])
    ]


def _get(obj: Any, name: str) -> Any:
    return obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)


def expected_rating(content: Sequence[Any]) -> float | None:
    """Probability-weighted rating from chat-completions ``logprobs.content``, or ``None``.

    ``content``: the per-token entries (``token``, ``logprob``, ``top_logprobs``). The
    rating token is the first generated token holding a digit.
    """
    for i, entry in enumerate(content):
        token = str(_get(entry, "token") or "")
        if not any(c.isdigit() for c in token):
            continue
        if _token_value(token) is None:
            return None
        mass: dict[int, float] = {}
        tops = _tops(entry) or [(token, float(_get(entry, "logprob") or 0.0))]
        for tok, lp in tops:
            v = _token_value(tok)
            if v is not None and math.isfinite(lp):
                mass[v] = mass.get(v, 0.0) + math.exp(lp)
        # "10" as two tokens "1" + "0": split the mass of "1" by P("0" | "1").
        if token.strip() == "1" and i + 1 < len(content):
            nxt = content[i + 1]
            p_zero = sum(math.exp(lp) for tok, lp in _tops(nxt) if tok.strip() == "0")
            if str(_get(nxt, "token") or "").strip() == "0" or p_zero > 0:
                p1 = mass.pop(1, 0.0)
                mass[10] = mass.get(10, 0.0) + p1 * p_zero
                mass[1] = p1 * (1.0 - p_zero)
        total = sum(mass.values())
        if total <= 1e-9:
            return None
        return sum(v * p for v, p in mass.items()) / total
    return None


class JudgeReward:
    """A 1-10 rating by a chat model behind an OpenAI-compatible endpoint (see module doc)."""

    def __init__(
        self,
        *,
        model: str,
        base_url: str,
        api_key: str = "EMPTY",
        max_tokens: int = 16,
        temperature: float = 0.0,
        timeout_s: float = 120.0,
        max_retries: int = 2,
        use_logprobs: bool = True,
        top_logprobs: int = 20,
        prefill: bool = True,
        constrain: bool = True,
        concurrency: int = 8,
    ) -> None:
        self.model = model
        self.base_url = base_url
        self._api_key = api_key
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.use_logprobs = use_logprobs
        self.top_logprobs = top_logprobs
        self.prefill = prefill
        self.constrain = constrain
        self.concurrency = concurrency
        self.retry = RetryPolicy.from_retries(max_retries)
        """The one retry layer of a rating request."""
        self._counts = dict.fromkeys(
            ("judge_requests", "judge_retries", "judge_fallbacks", "judge_text_ratings"), 0
        )
        self._client: Any = None
        self._client_loop: asyncio.AbstractEventLoop | None = None
        self._sem: asyncio.Semaphore | None = None

    @classmethod
    def from_config(
        cls, cfg: JudgeRewardConfig, *, agents: Sequence[AgentConfig] = ()
    ) -> JudgeReward:
        import os

        api_key = "EMPTY"
        if cfg.api_key_env:
            api_key = os.environ.get(cfg.api_key_env, "")
            if not api_key:
                raise RewardError(
                    f"judge reward: env var {cfg.api_key_env} (api_key_env) is not set"
                )
        return cls(
            model=cfg.model,
            base_url=cfg.base_url,
            api_key=api_key,
            max_tokens=cfg.max_tokens,
            temperature=cfg.temperature,
            timeout_s=cfg.timeout_s,
            max_retries=cfg.max_retries,
        )

    @classmethod
    def from_agent(cls, agent: AgentConfig, **kwargs: Any) -> JudgeReward:
        """Use an agent's endpoint and served model as the judge (first replica)."""
        return cls(model=agent.model, base_url=agent.urls[0], api_key=agent.api_key(), **kwargs)

    def _get_client(self) -> Any:
        loop = asyncio.get_running_loop()
        if self._client is None or self._client_loop is not loop:
            from openai import AsyncOpenAI

            self._client = AsyncOpenAI(
                base_url=self.base_url,
                api_key=self._api_key,
                timeout=self.timeout_s,
                max_retries=0,  # self.retry is the one retry layer
            )
            self._client_loop = loop
            self._sem = asyncio.Semaphore(self.concurrency)
        return self._client

    def messages(
        self, prompt: Prompt, response: str, references: Sequence[str] | None
    ) -> list[dict[str, str]]:
        ref = ""
        if references:
            ref = "".join(f"Reference answer:\n{r}\n\n" for r in references)
        msgs = [
            {"role": "system", "content": JUDGE_SYSTEM},
            {
                "role": "user",
                "content": JUDGE_TEMPLATE.format(
                    question=prompt_text(prompt), reference=ref, answer=response
                ),
            },
        ]
        return msgs

    def counters(self) -> dict[str, int]:
        """For run summaries: ``judge_requests`` (HTTP requests sent), ``judge_retries``,
        ``judge_fallbacks`` (features dropped after an HTTP 400: the choice constraint,
        the prefill, logprob ratings) and ``judge_text_ratings`` (ratings read from the
        reply text instead of logprobs)."""
        return dict(self._counts)

    def _features(self) -> tuple[bool, bool, bool]:
        return self.constrain, self.prefill, self.use_logprobs

    def _kwargs(
        self, msgs: list[dict[str, str]], features: tuple[bool, bool, bool]
    ) -> dict[str, Any]:
        constrain, prefill, use_logprobs = features
        kwargs: dict[str, Any] = {
            "model": self.model,
            "messages": [*msgs, {"role": "assistant", "content": PREFILL}] if prefill else msgs,
            # With the prefill the rating is the first token or two.
            "max_tokens": min(self.max_tokens, 4) if prefill else self.max_tokens,
            "temperature": self.temperature,
        }
        if use_logprobs:
            kwargs.update(logprobs=True, top_logprobs=self.top_logprobs)
        extra: dict[str, Any] = {}
        if constrain:
            extra["structured_outputs"] = {"choice": _CHOICES}
        if prefill:
            extra.update(add_generation_prompt=False, continue_final_message=True)
        if extra:
            kwargs["extra_body"] = extra
        return kwargs

    def _fall_back(self, sent: tuple[bool, bool, bool], exc: BaseException) -> bool:
        """After an HTTP 400 to a request sent with ``sent`` features: drop the first of
        them still on (the vLLM-only constraint, then the prefill, then logprobs), logging
        and counting it once. False when the request used none (the 400 is real)."""
        names = ("the 1-10 choice constraint", "the rating prefill", "logprob ratings")
        attrs = ("constrain", "prefill", "use_logprobs")
        for used, name, attr in zip(sent, names, attrs, strict=True):
            if not used:
                continue
            if getattr(self, attr):  # concurrent requests may all see the 400: switch once
                setattr(self, attr, False)
                self._counts["judge_fallbacks"] += 1
                then = " (ratings are parsed from the reply text)" if attr == "use_logprobs" else ""
                logger.warning(
                    "judge %s at %s rejected %s (HTTP 400: %s); asking without it from now "
                    "on%s", self.model, self.base_url, name, str(exc)[:200], then,
                )  # fmt: skip
            return True
        return False

    async def _create(self, client: Any, kwargs: dict[str, Any]) -> Any:
        self._counts["judge_requests"] += 1
        return await client.chat.completions.create(**kwargs)

    async def _request(self, msgs: list[dict[str, str]]) -> Any:
        from openai import BadRequestError

        client = self._get_client()

        def counted_retry(exc: BaseException) -> None:
            self._counts["judge_retries"] += 1

        while True:
            sent = self._features()
            once = functools.partial(self._create, client, self._kwargs(msgs, sent))
            try:
                return await self.retry.call(
                    once, what=f"judge {self.model}", on_retry=counted_retry
                )
            except BadRequestError as exc:
                # Feature detection: ask again without what the server rejected.
                if not self._fall_back(sent, exc):
                    raise

    async def _score_one(
        self, prompt: Prompt, response: str, references: Sequence[str] | None
    ) -> float:
        self._get_client()
        assert self._sem is not None
        async with self._sem:
            try:
                resp = await self._request(self.messages(prompt, response, references))
            except Exception as exc:
                raise RewardError(
                    f"judge {self.model} at {self.base_url}: request failed: {exc!r}"
                ) from exc
        if not resp.choices:
            raise RewardError(f"judge {self.model}: empty reply (no choices)")
        choice = resp.choices[0]
        split = split_message(choice.message)  # a judge that reasons: read its answer
        text = split.answer
        content = getattr(choice.logprobs, "content", None) if choice.logprobs is not None else None
        if content and split.reasoning is None:  # with a trace, logprobs start inside it
            value = expected_rating(content)
            if value is not None:
                return value
        rating = parse_rating(text)
        if rating is None:
            raise RewardError(f"judge {self.model}: no 1-10 rating in reply {text[:200]!r}")
        self._counts["judge_text_ratings"] += 1
        return float(rating)

    async def ascore(
        self,
        prompt: Prompt,
        responses: Sequence[str],
        references: Sequence[str] | None = None,
    ) -> list[float]:
        refs = reference_list(references)
        return list(await asyncio.gather(*(self._score_one(prompt, r, refs) for r in responses)))

    def __repr__(self) -> str:
        return f"JudgeReward(model={self.model!r}, base_url={self.base_url!r})"
