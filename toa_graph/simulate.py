"""A simulated benchmark: agents with hidden skills and a noisy reward model, in process.

Used to compare methods and search rules at equal compute without GPUs or servers, and
deterministic by seed. The world (ours, not from any paper):

* Task ``t`` (a prompt containing ``sim-task-<t>``) and agent ``a`` have a hidden skill
  ``skill(a, t) = a.skill + N(0, affinity_sd)``: which agent is best varies by task.
* A fresh answer has true quality ``skill(a, t) + N(0, a.sample_sd)``.
* An answer written with earlier answers shown (refine, MoA references, debate) starts
  from the best quality shown ``q`` and moves towards the agent's ceiling
  ``skill(a, t) + a.refine_lift``: ``q + a.refine_rate * (ceiling - q) + N(0, refine_sd)``
  (a strong answer refined by a weak agent can get worse).
* The reward model sees ``quality + N(0, reward_sd)``, a fixed draw per answer.
* Tokens: the question costs ``question_tokens``; each answer ``a.tokens`` (+-20%); an
  answer shown in a prompt costs its own tokens again.
* Prices (``a.price``, per million input / output tokens, made up): the stronger agents
  cost more, as hosted models do (:func:`sim_prices`).

Every answer carries its true quality in a tag, ``[[sim q=0.612345 tok=301 id=...]]``,
so :func:`true_quality` can grade the best answer of any method. Randomness comes from
``random.Random(<seed, names, counter>)`` (string seeds are hashed with SHA-512, stable
across processes). A request's nonce hashes the ids of the answers it shows and how often
this agent got the identical request before, so repeated samples differ and a run is
reproducible from fresh agents (:func:`sim_agents`).
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import ConfigDict, PrivateAttr

from toa_graph.cost import Prices

__all__ = [
    "DEFAULT_AGENTS",
    "SimAgent",
    "SimAgentSpec",
    "SimReward",
    "SimWorld",
    "sim_agents",
    "sim_prices",
    "sim_prompts",
    "true_quality",
]

_TAG = re.compile(r"\[\[sim q=(-?[0-9.]+) tok=([0-9]+) id=([^\]]+)\]\]")
_TASK = re.compile(r"sim-task-([0-9]+)")


@dataclass(frozen=True)
class SimAgentSpec:
    """One simulated agent's hidden traits."""

    name: str
    skill: float  # mean true quality of a fresh answer
    sample_sd: float  # spread between its fresh answers to one task
    refine_rate: float  # how far one refinement moves towards its ceiling (0..1)
    refine_lift: float  # its ceiling above its own fresh skill
    tokens: int  # typical answer length
    price: tuple[float, float] = (1.0, 4.0)  # per million input / output tokens


DEFAULT_AGENTS: tuple[SimAgentSpec, ...] = (
    SimAgentSpec("sim-a", skill=0.60, sample_sd=0.10, refine_rate=0.45, refine_lift=0.15, tokens=320, price=(3.0, 12.0)),
    SimAgentSpec("sim-b", skill=0.57, sample_sd=0.12, refine_rate=0.60, refine_lift=0.20, tokens=280, price=(1.0, 4.0)),
    SimAgentSpec("sim-c", skill=0.52, sample_sd=0.15, refine_rate=0.30, refine_lift=0.05, tokens=420, price=(0.5, 2.0)),
    SimAgentSpec("sim-d", skill=0.48, sample_sd=0.10, refine_rate=0.70, refine_lift=0.25, tokens=250, price=(0.2, 0.8)),
    SimAgentSpec("sim-e", skill=0.42, sample_sd=0.20, refine_rate=0.20, refine_lift=0.00, tokens=360, price=(0.1, 0.4)),
)  # fmt: skip


@dataclass(frozen=True)
class SimWorld:
    """The hidden truth shared by the simulated agents and reward model."""

    agents: tuple[SimAgentSpec, ...] = DEFAULT_AGENTS
    seed: int = 0
    affinity_sd: float = 0.08
    refine_sd: float = 0.05
    reward_sd: float = 0.05
    question_tokens: int = 150

    def spec(self, agent: str) -> SimAgentSpec:
        for s in self.agents:
            if s.name == agent:
                return s
        raise KeyError(f"no simulated agent {agent!r}; have {[s.name for s in self.agents]}")

    def _rng(self, *key: object) -> random.Random:
        return random.Random("|".join(map(str, (self.seed, *key))))

    def skill(self, agent: str, task: int) -> float:
        return self.spec(agent).skill + self._rng("skill", agent, task).gauss(0.0, self.affinity_sd)

    def fresh(self, agent: str, task: int, nonce: object) -> float:
        sd = self.spec(agent).sample_sd
        return self.skill(agent, task) + self._rng("fresh", agent, task, nonce).gauss(0.0, sd)

    def refine(self, agent: str, task: int, shown: float, nonce: object) -> float:
        spec = self.spec(agent)
        ceiling = self.skill(agent, task) + spec.refine_lift
        noise = self._rng("refine", agent, task, nonce).gauss(0.0, self.refine_sd)
        return shown + spec.refine_rate * (ceiling - shown) + noise

    def answer_tokens(self, agent: str, task: int, nonce: object) -> int:
        base = self.spec(agent).tokens
        return max(1, round(base * self._rng("tok", agent, task, nonce).uniform(0.8, 1.2)))

    def reward(self, text: str) -> float:
        """What the reward model says: true quality + a fixed noise draw per answer."""
        tag = _TAG.search(text)
        if tag is None:
            return 0.0  # not a simulated answer: worth nothing
        q, ident = float(tag.group(1)), tag.group(3)
        return q + self._rng("reward", ident).gauss(0.0, self.reward_sd)


def true_quality(text: str) -> float | None:
    """The hidden quality of a simulated answer (None for any other text)."""
    tag = _TAG.search(text)
    return float(tag.group(1)) if tag else None


def sim_prompts(n: int, *, start: int = 0) -> list[dict[str, Any]]:
    """``n`` prompt rows (``id``, ``prompt``) for the simulated tasks ``start..start+n-1``."""
    return [
        {"id": f"sim-{t}", "prompt": f"sim-task-{t}: answer the simulated question {t}."}
        for t in range(start, start + n)
    ]


class SimAgent(BaseChatModel):
    """A chat model that answers from :class:`SimWorld` (optionally after ``latency_s``)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    name: str = "sim-a"
    world: SimWorld = SimWorld()
    latency_s: float = 0.0
    _seen: dict[tuple[int, int], int] = PrivateAttr(default_factory=dict)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    @property
    def _llm_type(self) -> str:
        return "toa-graph-simulated"

    def __getstate__(self) -> dict[Any, Any]:
        """Picklable (Ray workers): the lock stays behind, a fresh one is made on load."""
        state = dict(super().__getstate__())
        private = dict(state.get("__pydantic_private__") or {})
        private.pop("_lock", None)
        return {**state, "__pydantic_private__": private}

    def __setstate__(self, state: dict[Any, Any]) -> None:
        super().__setstate__(state)
        self._lock = threading.Lock()

    def respond(self, prompt_text: str) -> tuple[str, dict[str, int]]:
        """The answer text and token usage for a request whose messages read ``prompt_text``."""
        m = _TASK.search(prompt_text)
        task = int(m.group(1)) if m else 0
        shown = [(float(q), int(tok)) for q, tok, _ in _TAG.findall(prompt_text)]
        key = (task, hash(prompt_text))
        with self._lock:
            n = self._seen.get(key, 0)
            self._seen[key] = n + 1
        # Which answers were shown (their ids) plus the repeat count: a stable nonce, hashed
        # so that ids stay short however deep answers build on answers (MoA, debate).
        seen = "/".join(i for _, _, i in _TAG.findall(prompt_text)) + f"#{n}"
        nonce = hashlib.blake2b(seen.encode(), digest_size=8).hexdigest()
        if shown:
            q = self.world.refine(self.name, task, max(s[0] for s in shown), nonce)
        else:
            q = self.world.fresh(self.name, task, nonce)
        out = self.world.answer_tokens(self.name, task, nonce)
        ident = f"{self.name}:{task}:{nonce}"
        text = f"[[sim q={q:.6f} tok={out} id={ident}]] answer by {self.name} to task {task}"
        inp = self.world.question_tokens + sum(tok for _, tok in shown)
        return text, {"input_tokens": inp, "output_tokens": out, "total_tokens": inp + out}

    def _result(self, messages: list[BaseMessage]) -> ChatResult:
        text, usage = self.respond("\n".join(str(m.content) for m in messages))
        msg = AIMessage(text, usage_metadata=usage)
        return ChatResult(generations=[ChatGeneration(message=msg)])

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return self._result(messages)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        return self._result(messages)


class SimReward:
    """The simulated reward model: ``(prompt, responses) -> rewards`` (a plain callable)."""

    def __init__(self, world: SimWorld) -> None:
        self.world = world
        self.name = "sim-reward"

    def __call__(self, prompt: Any, responses: Sequence[str]) -> list[float]:
        return [self.world.reward(r) for r in responses]


def sim_prices(world: SimWorld) -> dict[str, Prices]:
    """Each simulated agent's made-up ``price_per_million`` (for an AgentPool's ``prices``)."""
    return {s.name: Prices(input=s.price[0], output=s.price[1]) for s in world.agents}


def sim_agents(world: SimWorld, *, latency_s: float = 0.0) -> dict[str, SimAgent]:
    """Fresh simulated agents for ``world`` (fresh repeat counters: a reproducible run)."""
    return {s.name: SimAgent(name=s.name, world=world, latency_s=latency_s) for s in world.agents}
