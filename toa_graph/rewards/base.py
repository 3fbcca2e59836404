"""The reward-model protocol and the adaptor that turns any callable into one.

A reward model scores the responses to one prompt. It never makes a score up: when it
cannot score, it raises, and the caller records the error on the sample (which is then
never chosen as best). The reference code's "0.0 on exception" does not exist here.

The scoring contract (one place: :func:`toa_graph.sampling.score_samples`, through
:func:`reference_list` and :func:`check_scores`): references are normalised once, the
count of scores is checked once, and a non-finite score fails its own sample only. A
reward model does its own scoring and nothing else; it may return NaN for a response it
could not score.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import inspect
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from toa_graph.errors import RunError
from toa_graph.state import Prompt

if TYPE_CHECKING:
    from toa_graph.config import AgentConfig

logger = logging.getLogger(__name__)


class RewardError(RunError):
    """A reward model could not score a batch (the message says why)."""


@runtime_checkable
class RewardModel(Protocol):
    """Scores the responses to one prompt; higher is better. One float per response."""

    async def ascore(
        self,
        prompt: Prompt,
        responses: Sequence[str],
        references: Sequence[str] | None = None,
    ) -> list[float]: ...


RewardCallable = Callable[..., Sequence[float] | Awaitable[Sequence[float]]]
RewardLike = RewardModel | RewardCallable


def _accepts_references(fn: Callable[..., Any]) -> bool:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return False
    params = list(sig.parameters.values())
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return True
    if any(p.name == "references" for p in params) or any(p.kind is p.VAR_KEYWORD for p in params):
        return True
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) >= 3


class CallableReward:
    """Adapts ``fn(prompt, responses[, references]) -> list[float]`` (sync or async).

    Sync callables run in a worker thread so they never block the event loop.

    >>> import asyncio
    >>> r = CallableReward(lambda prompt, responses: [float(len(t)) for t in responses])
    >>> asyncio.run(r.ascore("hi", ["a", "abc"]))
    [1.0, 3.0]
    """

    def __init__(self, fn: RewardCallable, *, name: str | None = None) -> None:
        if not callable(fn):
            raise TypeError(f"reward must be a RewardModel or a callable, got {type(fn).__name__}")
        self.fn = fn
        self.name: str = name or str(getattr(fn, "__name__", type(fn).__name__))
        self._with_refs = _accepts_references(fn)
        self._is_async = inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
            getattr(fn, "__call__", None)  # noqa: B004 (async __call__ of a callable object)
        )

    async def ascore(
        self,
        prompt: Prompt,
        responses: Sequence[str],
        references: Sequence[str] | None = None,
    ) -> list[float]:
        args: tuple[Any, ...] = (prompt, list(responses))
        if self._with_refs:
            args = (*args, list(references) if references is not None else None)
        if self._is_async:
            result = await self.fn(*args)  # type: ignore[misc]
        else:
            result = await asyncio.to_thread(self.fn, *args)
            if inspect.isawaitable(result):
                result = await result
        return result  # checked by the caller (score_samples: check_scores)

    def __repr__(self) -> str:
        return f"CallableReward({self.name})"


def reference_list(references: Sequence[str] | str | None) -> list[str]:
    """A prompt's references as a list of non-blank strings (one string is one reference)."""
    if references is None:
        return []
    if isinstance(references, str):
        references = [references]
    return [r for r in (str(x) for x in references) if r.strip()]


def reward_counters(reward: object) -> dict[str, int] | None:
    """A reward's event counters for a run summary (``counters()`` where the reward or the
    wrapper holding it has one, e.g. the judge's fallbacks), else ``None``."""
    counters = getattr(reward, "counters", None)
    if not callable(counters):
        return None
    return {str(k): int(v) for k, v in dict(counters()).items()}


def check_scores(result: Any, n: int, name: str = "reward") -> list[float]:
    """A reward model's answer as ``n`` floats, or :class:`RewardError` (not a sequence of
    numbers, or the wrong count: no score can be matched to its response). Non-finite
    scores are kept: the caller fails those responses one by one (see the module doc).

    >>> check_scores([1, float("nan")], 2)
    [1.0, nan]
    """
    try:
        scores = [float(x) for x in result]
    except TypeError as exc:
        raise RewardError(
            f"{name} returned {type(result).__name__}, expected a list of floats"
        ) from exc
    except ValueError as exc:
        raise RewardError(f"{name} returned a score that is not a number: {exc}") from exc
    if len(scores) != n:
        raise RewardError(f"{name} returned {len(scores)} scores for {n} responses")
    return scores


def as_reward_model(reward: RewardLike | Any, *, agents: Any = ()) -> RewardModel:
    """A :class:`RewardModel` from a RewardModel, any sync/async callable, or a config's
    ``reward:`` section (``cfg.reward``: built on first use, with the :class:`AgentConfig`
    among ``agents`` for the kinds that judge with an agent)."""
    from toa_graph.config import REWARD_KINDS, AgentConfig

    if isinstance(reward, tuple(REWARD_KINDS.values())):
        configs = [a for a in agents or () if isinstance(a, AgentConfig)]
        return LazyReward(reward, agents=configs)
    if isinstance(reward, RewardModel) and inspect.iscoroutinefunction(reward.ascore):
        return reward
    return CallableReward(reward)  # type: ignore[arg-type]


SOURCE_ATTR = "_toa_reward_config"
"""Where :func:`build_reward` leaves the config a reward was built from, so a run's data
digest is the same for the built reward as for its config (e.g. a Ray run's)."""


def build_reward(cfg: Any, *, agents: Sequence[AgentConfig] = ()) -> RewardModel:
    """The reward model a config's ``reward:`` section describes (the kind's config class
    names its implementation: :data:`toa_graph.config.REWARD_KINDS`)."""
    model = _build_reward(cfg, agents)
    # an object with __slots__ keeps no config: it is then described by its type
    with contextlib.suppress(AttributeError, TypeError):
        setattr(model, SOURCE_ATTR, cfg)
    return model


def _build_reward(cfg: Any, agents: Sequence[AgentConfig]) -> RewardModel:
    from toa_graph.config import REWARD_KINDS

    kind = cfg.kind
    if kind not in REWARD_KINDS:
        raise RewardError(f"unknown reward kind {kind!r}; known: {sorted(REWARD_KINDS)}")
    implementation = REWARD_KINDS[kind].implementation
    if implementation is None:  # python: the config names its own callable
        module_name, _, attr = cfg.target.partition(":")
        try:
            obj: Any = importlib.import_module(module_name)
            for part in attr.split("."):
                obj = getattr(obj, part)
        except (ImportError, AttributeError) as exc:
            raise RewardError(f"reward.target {cfg.target!r} cannot be imported: {exc}") from exc
        if isinstance(obj, type):
            obj = obj(**cfg.kwargs)
        elif cfg.kwargs:
            import functools

            obj = functools.partial(obj, **cfg.kwargs)
        return as_reward_model(obj)
    module_name, _, class_name = implementation.partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    model: RewardModel = cls.from_config(cfg, agents=agents)
    return model


class LazyReward:
    """Builds the configured reward model on first use (in a worker thread, since loading
    weights blocks), so graphs can be constructed and served without loading anything."""

    def __init__(self, cfg: Any, *, agents: Sequence[AgentConfig] = ()) -> None:
        self.cfg = cfg
        self.agents = tuple(agents)
        self._model: RewardModel | None = None
        self._lock: asyncio.Lock | None = None

    async def load(self) -> RewardModel:
        if self._model is None:
            if self._lock is None:
                self._lock = asyncio.Lock()
            async with self._lock:
                if self._model is None:
                    self._model = await asyncio.to_thread(
                        build_reward, self.cfg, agents=self.agents
                    )
        return self._model

    async def ascore(
        self,
        prompt: Any,
        responses: Sequence[str],
        references: Sequence[str] | None = None,
    ) -> list[float]:
        model = await self.load()
        return await model.ascore(prompt, responses, references)

    def counters(self) -> dict[str, int]:
        """The loaded reward's counters (``{}`` before it is loaded or when it has none)."""
        return (reward_counters(self._model) or {}) if self._model is not None else {}

    def __repr__(self) -> str:
        return f"LazyReward(kind={self.cfg.kind!r})"
