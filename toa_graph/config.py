"""Configuration: agents, reward models and method defaults, loaded from YAML.

A config file (``model_configs/*.yaml``) names the agents (ordered: the order is the
search's tie-break order) and the reward model. Unknown or missing fields fail with the
file, the field path and the line at fault.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, get_args

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from toa_graph.config_paths import configs_dir, shipped_path
from toa_graph.cost import Prices, check_limits
from toa_graph.errors import UserError
from toa_graph.provider_table import PROVIDERS
from toa_graph.reasoning import reasoning_clash, settings_of
from toa_graph.registry import (
    METHOD_SPECS,
    check_agent_options,
    method_context,
    method_options,
)
from toa_graph.yaml_lines import line_index

__all__ = [
    "REWARD_KINDS",
    "AgentConfig",
    "CometRewardConfig",
    "ConfigError",
    "EmbeddedRewardConfig",
    "HFRewardConfig",
    "JudgeRewardConfig",
    "MathRewardConfig",
    "MethodConfig",
    "ProjectConfig",
    "PythonRewardConfig",
    "ReferenceRewardConfig",
    "RewardConfig",
    "VLLMRewardConfig",
    "configs_dir",
    "load_config",
]


class ConfigError(UserError):
    """A config file is malformed; the message names the file, field and line."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AgentConfig(_Strict):
    """One chat model: an OpenAI-compatible endpoint (the default ``provider``) or any
    provider LangChain's ``init_chat_model`` knows (``anthropic``, ``google_genai``,
    ``ollama``, ...; each needs its pip extra, e.g. ``pip install "toa-graph[anthropic]"``).

    Sampling fields left unset (``None``) are not sent: the provider's default applies
    (some reasoning models reject ``temperature`` / ``top_p``)."""

    name: str = Field(min_length=1, description="Agent name used in samples, prompts and logs.")
    model: str = Field(min_length=1, description="Served model name sent in requests.")
    provider: str = Field(
        default="openai",
        description="openai (any OpenAI-compatible endpoint: vLLM, SGLang, OpenAI, ...) or a "
        "LangChain provider: anthropic, google_genai, ollama, mistralai, groq, ...",
    )
    base_url: str | None = Field(
        default=None,
        description="Endpoint, e.g. http://127.0.0.1:8001/v1 (optional for providers other "
        "than openai: their default endpoint).",
    )
    base_urls: list[str] | None = Field(default=None, description="Several replicas of one model.")
    api_key_env: str | None = Field(
        default=None, description="Name of the env var holding the API key (never the key)."
    )
    temperature: float | None = Field(default=None, description="None: not sent.")
    top_p: float | None = Field(default=None, description="None: not sent.")
    max_tokens: int | None = Field(default=None, ge=1, description="None: not sent.")
    stop: list[str] = Field(
        default_factory=list, description="Stop strings: a list, never a string."
    )
    timeout_s: float = Field(default=120.0, gt=0)
    max_retries: int = Field(default=4, ge=0)
    requests_per_second: float | None = Field(
        default=None,
        gt=0,
        description="Request rate cap for this agent, shared by every run using one pool "
        "(a Ray worker of N gets 1/N of it). None: no cap.",
    )
    max_concurrency: int | None = Field(
        default=None,
        ge=1,
        description="Requests in flight at once to this agent, across every run using one "
        "pool (a Ray worker of N gets 1/N of it, at least 1). None: no cap.",
    )
    system_prompt: str | None = Field(default=None, description="Optional system message.")
    supports_n: bool = Field(
        default=True,
        description="Endpoint accepts n>1 in one request (default: true for openai, false "
        "for other providers).",
    )
    extra_body: dict[str, Any] = Field(
        default_factory=dict, description="Extra request fields (openai provider only)."
    )
    client_options: dict[str, Any] = Field(
        default_factory=dict,
        description="Extra constructor arguments of the provider's chat model (providers "
        "other than openai), e.g. {num_ctx: 8192} for ollama.",
    )
    reasoning_effort: Literal["none", "minimal", "low", "medium", "high", "xhigh"] | None = None
    """Reasoning models: how hard to think (``reasoning_effort`` of OpenAI-compatible APIs,
    Gemini's ``thinking_level``, ollama's ``reasoning``). None: not sent."""
    thinking_budget: int | None = Field(default=None, ge=0)
    """Most tokens to think (vLLM ``thinking_token_budget``, Anthropic ``budget_tokens``,
    Gemini ``thinking_budget``); ``max_tokens`` covers thinking plus answer."""
    enable_thinking: bool | None = None
    """Hybrid models: think or not (vLLM / SGLang ``chat_template_kwargs.enable_thinking``,
    Anthropic ``thinking``, Gemini, ollama)."""
    price_per_million: Prices | None = None
    """Money per million tokens ``{input, output[, reasoning]}`` (:mod:`toa_graph.cost`)."""

    @model_validator(mode="before")
    @classmethod
    def _provider_defaults(cls, data: Any) -> Any:
        if isinstance(data, dict) and "supports_n" not in data:
            provider = data.get("provider", "openai")
            data = {**data, "supports_n": provider == "openai"}
        return data

    @field_validator("provider")
    @classmethod
    def _known_provider(cls, v: str) -> str:
        if v != "openai" and v not in PROVIDERS:
            raise ValueError(
                f"unknown provider {v!r}; use openai (OpenAI-compatible) or one of: "
                + ", ".join(sorted(PROVIDERS))
            )
        return v

    @field_validator("stop", mode="before")
    @classmethod
    def _stop_is_list(cls, v: Any) -> Any:
        if isinstance(v, str):
            raise ValueError(
                "stop must be a list of strings, e.g. stop: ['<|eot_id|>'], not a string"
            )
        return v

    @model_validator(mode="after")
    def _one_url(self) -> AgentConfig:
        if self.base_url and self.base_urls:
            raise ValueError("give base_url or base_urls, not both")
        if self.provider == "openai":
            if not self.base_url and not self.base_urls:
                raise ValueError("give base_url (or base_urls for replicas)")
            if self.client_options:
                raise ValueError("client_options is for other providers; use extra_body")
        elif self.extra_body:
            raise ValueError(
                f"extra_body is for OpenAI-compatible endpoints; with provider "
                f"{self.provider!r} use client_options"
            )
        return self

    @model_validator(mode="after")
    def _reasoning_once(self) -> AgentConfig:
        given = "extra_body" if self.provider == "openai" else "client_options"
        reasoning_clash(self.provider, settings_of(self), given, getattr(self, given))
        return self

    @property
    def urls(self) -> list[str]:
        """The replica URLs; ``[""]`` (the provider's default endpoint) when none is given."""
        if self.base_urls:
            return list(self.base_urls)
        return [self.base_url or ""]

    def api_key(self) -> str:
        """The API key from the named env var; OpenAI clients need a non-empty placeholder
        (other providers get ``""`` here and read their own env var, e.g.
        ``ANTHROPIC_API_KEY``)."""
        if self.api_key_env:
            value = os.environ.get(self.api_key_env)
            if not value:
                raise ConfigError(
                    f"agent {self.name!r}: env var {self.api_key_env} (api_key_env) is not set"
                )
            return value
        return "EMPTY" if self.provider == "openai" else ""


# ---------------------------------------------------------------- reward model configs


class _RewardConfig(_Strict):
    implementation: ClassVar[str | None] = None
    """``module:Class`` with a ``from_config(cfg, agents=...)`` classmethod (imported lazily);
    ``None`` for ``python``, which names its own callable."""
    remote: ClassVar[bool] = False
    """Scores through a network service (so each Ray worker may call it directly)."""


class HFRewardConfig(_RewardConfig):
    """A transformers sequence-classification reward model (Skywork-Reward, ArmoRM, ...)."""

    kind: Literal["hf"]
    implementation: ClassVar[str | None] = "toa_graph.rewards.hf:HFReward"
    model: str
    device: str = "cuda:0"
    """``cuda:N``, ``cpu`` or ``auto`` (CUDA when available)."""
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"
    max_length: int = Field(default=4096, ge=16)
    trust_remote_code: bool = False
    """Only ArmoRM-style custom heads need it; off unless set here explicitly."""
    batch_tokens: int = Field(default=32768, ge=256)
    max_batch_size: int = Field(default=64, ge=1)
    max_wait_ms: float = Field(default=5.0, ge=0)
    attn_implementation: str | None = None
    """transformers attention backend; default ``sdpa`` on GPU."""
    packing: bool | None = None
    """Padding-free batches (varlen flash attention, linear-head models only); default: on
    where CUDA and ``torch.nn.attention.varlen`` are available."""
    fused: bool = False
    """Score with the fused Llama/Mistral/Qwen2 forward (one QKV and one gate-up GEMM per
    layer, compiled element-wise kernels on CUDA, last layer on the scored tokens only);
    implies padding-free packing. Off by default: not yet measured on a GPU."""


class VLLMRewardConfig(_RewardConfig):
    """A reward model served by vLLM's pooling runner (``/classify`` or ``/pooling``)."""

    kind: Literal["vllm"]
    implementation: ClassVar[str | None] = "toa_graph.rewards.vllm_pool:VLLMPoolingReward"
    remote: ClassVar[bool] = True
    model: str
    base_url: str
    endpoint: Literal["classify", "pooling"] = "classify"
    api_key_env: str | None = None
    timeout_s: float = Field(default=120.0, gt=0)
    max_retries: int = Field(default=4, ge=0)


class JudgeRewardConfig(_RewardConfig):
    """LLM-as-judge through any OpenAI-compatible endpoint (score parsed from the reply)."""

    kind: Literal["judge"]
    implementation: ClassVar[str | None] = "toa_graph.rewards.judge:JudgeReward"
    remote: ClassVar[bool] = True
    model: str
    base_url: str
    api_key_env: str | None = None
    max_tokens: int = 16
    temperature: float = 0.0
    timeout_s: float = Field(default=120.0, gt=0)
    max_retries: int = Field(default=4, ge=0)


class CometRewardConfig(_RewardConfig):
    """COMET / COMET-KIWI for translation (``unbabel-comet`` extra)."""

    kind: Literal["comet"]
    implementation: ClassVar[str | None] = "toa_graph.rewards.comet:CometReward"
    model: str = "Unbabel/wmt22-cometkiwi-da"
    device: str = "cuda:0"
    batch_size: int = Field(default=16, ge=1)


class MathRewardConfig(_RewardConfig):
    """Verifiable final answer for GSM8K / MATH: 1.0 if it matches the gold answer, else 0.0."""

    kind: Literal["math"]
    implementation: ClassVar[str | None] = "toa_graph.rewards.math:MathReward"


class ReferenceRewardConfig(_RewardConfig):
    """Similarity to the reference carried by the prompt (chrF or embedding cosine)."""

    kind: Literal["reference"]
    implementation: ClassVar[str | None] = "toa_graph.rewards.reference:ReferenceReward"
    metric: Literal["chrf", "embedding"] = "chrf"


class PythonRewardConfig(_RewardConfig):
    """Any callable ``(prompt, responses[, references]) -> list[float]``, by import path."""

    kind: Literal["python"]
    target: str = Field(pattern=r"^[\w.]+:[\w.]+$", description="package.module:function")
    kwargs: dict[str, Any] = Field(default_factory=dict)


class EmbeddedRewardConfig(_RewardConfig):
    """The CPU default: math check / reference similarity / LLM judge, whichever applies."""

    kind: Literal["embedded"]
    implementation: ClassVar[str | None] = "toa_graph.rewards.embedded:EmbeddedReward"
    judge_agent: str | None = None
    """Agent (by name) used as judge when the prompt carries no reference; default: first."""


class RemoteRewardConfig(_RewardConfig):
    """A running ``toa-graph serve-reward`` (one loaded model shared by runs and workers)."""

    kind: Literal["remote"]
    implementation: ClassVar[str | None] = "toa_graph.rewards.remote:RemoteReward"
    remote: ClassVar[bool] = True
    url: str
    """The server's base URL, e.g. ``http://127.0.0.1:8700``."""
    api_key_env: str | None = None
    """Env var holding the server's bearer token."""
    timeout_s: float = Field(default=120.0, gt=0)
    max_retries: int = Field(default=4, ge=0)


# The one list of reward kinds: the config union below. The kind tags, implementations and
# remote kinds are all derived from it (REWARD_KINDS).
RewardConfig = Annotated[
    HFRewardConfig
    | VLLMRewardConfig
    | JudgeRewardConfig
    | CometRewardConfig
    | MathRewardConfig
    | ReferenceRewardConfig
    | PythonRewardConfig
    | EmbeddedRewardConfig
    | RemoteRewardConfig,
    Field(discriminator="kind"),
]

REWARD_KINDS: dict[str, type[_RewardConfig]] = {
    get_args(cls.model_fields["kind"].annotation)[0]: cls
    for cls in get_args(get_args(RewardConfig)[0])
}
"""Reward kind -> config class (whose ``implementation`` and ``remote`` say the rest)."""


def remote_reward_kinds() -> frozenset[str]:
    """Kinds that score through a network service."""
    return frozenset(k for k, cls in REWARD_KINDS.items() if cls.remote)


class MethodConfig(_Strict):
    """Default method, its per-run knobs and its options, checked against the registry
    (:mod:`toa_graph.registry`): a knob or option the method does not have is an error."""

    name: str = "toa"
    """A registered method (built in, or added by a plugin before the config loads)."""
    context: dict[str, Any] = Field(default_factory=dict)
    """Knobs of the method's context class, e.g. ``budget``, ``alpha`` (TOA), ``rounds``."""
    options: dict[str, Any] = Field(default_factory=dict)
    """Factory options, e.g. MoA's ``aggregator``."""

    @field_validator("name")
    @classmethod
    def _registered(cls, v: str) -> str:
        if v not in METHOD_SPECS:
            raise ValueError(
                f"unknown method {v!r}; methods: {', '.join(repr(m) for m in METHOD_SPECS)}"
            )
        return v

    @field_validator("context")
    @classmethod
    def _knobs_of_the_method(cls, v: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        if "name" in info.data:  # a bad name is reported on its own
            method_context(info.data["name"], v)
        return v

    @field_validator("options")
    @classmethod
    def _options_of_the_method(cls, v: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        if "name" in info.data:
            method_options(info.data["name"], v)
        return v


class ProjectConfig(_Strict):
    agents: list[AgentConfig] = Field(min_length=1)
    reward: RewardConfig
    method: MethodConfig = Field(default_factory=MethodConfig)
    source: str | None = Field(default=None, exclude=True)

    @model_validator(mode="after")
    def _unique_names(self) -> ProjectConfig:
        names = [a.name for a in self.agents]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"agent names must be unique; repeated: {dupes}")
        agent = self.method.context.get("agent")  # Self-MoA's proposer, random's agent, ...
        if agent is not None and agent not in names:
            raise ValueError(f"method.context.agent: {agent!r} is not one of the agents {names}")
        check_agent_options(self.method.name, self.method.options, names, "method.options")
        check_limits({a.name: (a.price_per_million, a.max_tokens) for a in self.agents},
                     self.method.context)  # fmt: skip
        return self

    def agent(self, name: str) -> AgentConfig:
        for a in self.agents:
            if a.name == name:
                return a
        raise KeyError(f"no agent named {name!r}; agents: {[a.name for a in self.agents]}")


# ---------------------------------------------------------------- loading


def _format_errors(
    path: str,
    exc: ValidationError,
    lines: dict[tuple[Any, ...], int],
    prefix: tuple[Any, ...] = (),
) -> str:
    out = [f"{path}: invalid config"]
    for err in exc.errors():
        loc = prefix + tuple(p for p in err["loc"] if not (isinstance(p, str) and p in _KIND_TAGS))
        field = ".".join(f"[{p}]" if isinstance(p, int) else str(p) for p in loc).replace(".[", "[")
        line = None
        for n in range(len(loc), -1, -1):
            if loc[:n] in lines:
                line = lines[loc[:n]]
                break
        where = f"{path}:{line}" if line else path
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown field (check the spelling; see model_configs/README.md)"
        out.append(f"  {where}: {field or '<top>'}: {msg}")
    return "\n".join(out)


_KIND_TAGS = set(REWARD_KINDS)


def _read_yaml(path: Path) -> tuple[Any, str]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: config file not found") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc})") from exc
    try:
        return yaml.safe_load(text), text
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise ConfigError(f"{where}: YAML syntax error: {getattr(exc, 'problem', exc)}") from exc


def load_config(path: str | os.PathLike[str]) -> ProjectConfig:
    """Load and validate a config file. ``reward:`` may name another YAML file (relative path)
    whose ``reward:`` section is used, so reward models are shared between configs."""
    p = shipped_path(Path(path))
    data, text = _read_yaml(p)
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping with 'agents' and 'reward' at the top")
    lines = line_index(text)
    reward = data.get("reward")
    if isinstance(reward, str):
        rpath = (p.parent / reward).resolve()
        rdata, rtext = _read_yaml(rpath)
        if not isinstance(rdata, dict) or "reward" not in rdata:
            raise ConfigError(f"{rpath}: expected a 'reward:' section (included from {p})")
        try:
            data = {**data, "reward": RewardAdapter.validate_python(rdata["reward"])}
        except ValidationError as exc:
            raise ConfigError(
                _format_errors(str(rpath), exc, line_index(rtext), prefix=("reward",))
            ) from exc
    try:
        cfg = ProjectConfig.model_validate({**data, "source": str(p)})
    except ValidationError as exc:
        raise ConfigError(_format_errors(str(p), exc, lines)) from exc
    return cfg


RewardAdapter: TypeAdapter[Any] = TypeAdapter(RewardConfig)
