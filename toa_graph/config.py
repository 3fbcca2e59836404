"""Configuration: agents, reward models and method defaults, loaded from YAML.

A config file (``model_configs/*.yaml``) names the agents (ordered: the order is the
search's tie-break order) and the reward model. Unknown or missing fields fail with the
file, the field path and the line at fault.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from toa_graph.errors import UserError

__all__ = [
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
    "load_config",
]


class ConfigError(UserError):
    """A config file is malformed; the message names the file, field and line."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AgentConfig(_Strict):
    """One chat model behind an OpenAI-compatible endpoint."""

    name: str = Field(min_length=1, description="Agent name used in samples, prompts and logs.")
    model: str = Field(min_length=1, description="Served model name sent in requests.")
    base_url: str | None = Field(
        default=None, description="Endpoint, e.g. http://127.0.0.1:8001/v1."
    )
    base_urls: list[str] | None = Field(default=None, description="Several replicas of one model.")
    api_key_env: str | None = Field(
        default=None, description="Name of the env var holding the API key (never the key)."
    )
    temperature: float = 0.7
    top_p: float = 1.0
    max_tokens: int = Field(default=2048, ge=1)
    stop: list[str] = Field(
        default_factory=list, description="Stop strings: a list, never a string."
    )
    timeout_s: float = Field(default=120.0, gt=0)
    max_retries: int = Field(default=4, ge=0)
    system_prompt: str | None = Field(default=None, description="Optional system message.")
    supports_n: bool = Field(default=True, description="Endpoint accepts n>1 in one request.")
    extra_body: dict[str, Any] = Field(default_factory=dict, description="Extra request fields.")

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
        if not self.base_url and not self.base_urls:
            raise ValueError("give base_url (or base_urls for replicas)")
        if self.base_url and self.base_urls:
            raise ValueError("give base_url or base_urls, not both")
        return self

    @property
    def urls(self) -> list[str]:
        return list(self.base_urls) if self.base_urls else [self.base_url]  # type: ignore[list-item]

    def api_key(self) -> str:
        """The API key from the named env var; OpenAI clients need a non-empty placeholder."""
        if self.api_key_env:
            value = os.environ.get(self.api_key_env)
            if not value:
                raise ConfigError(
                    f"agent {self.name!r}: env var {self.api_key_env} (api_key_env) is not set"
                )
            return value
        return "EMPTY"


# ---------------------------------------------------------------- reward model configs


class HFRewardConfig(_Strict):
    """A transformers sequence-classification reward model (Skywork-Reward, ArmoRM, ...)."""

    kind: Literal["hf"]
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


class VLLMRewardConfig(_Strict):
    """A reward model served by vLLM's pooling runner (``/classify`` or ``/pooling``)."""

    kind: Literal["vllm"]
    model: str
    base_url: str
    endpoint: Literal["classify", "pooling"] = "classify"
    api_key_env: str | None = None
    timeout_s: float = Field(default=120.0, gt=0)
    max_retries: int = Field(default=4, ge=0)


class JudgeRewardConfig(_Strict):
    """LLM-as-judge through any OpenAI-compatible endpoint (score parsed from the reply)."""

    kind: Literal["judge"]
    model: str
    base_url: str
    api_key_env: str | None = None
    max_tokens: int = 16
    temperature: float = 0.0
    timeout_s: float = Field(default=120.0, gt=0)
    max_retries: int = Field(default=4, ge=0)


class CometRewardConfig(_Strict):
    """COMET / COMET-KIWI for translation (``unbabel-comet`` extra)."""

    kind: Literal["comet"]
    model: str = "Unbabel/wmt22-cometkiwi-da"
    device: str = "cuda:0"
    batch_size: int = Field(default=16, ge=1)


class MathRewardConfig(_Strict):
    """Verifiable final answer for GSM8K / MATH: 1.0 if it matches the gold answer, else 0.0."""

    kind: Literal["math"]


class ReferenceRewardConfig(_Strict):
    """Similarity to the reference carried by the prompt (chrF or embedding cosine)."""

    kind: Literal["reference"]
    metric: Literal["chrf", "embedding"] = "chrf"


class PythonRewardConfig(_Strict):
    """Any callable ``(prompt, responses[, references]) -> list[float]``, by import path."""

    kind: Literal["python"]
    target: str = Field(pattern=r"^[\w.]+:[\w.]+$", description="package.module:function")
    kwargs: dict[str, Any] = Field(default_factory=dict)


class EmbeddedRewardConfig(_Strict):
    """The CPU default: math check / reference similarity / LLM judge, whichever applies."""

    kind: Literal["embedded"]
    judge_agent: str | None = None
    """Agent (by name) used as judge when the prompt carries no reference; default: first."""


RewardConfig = Annotated[
    HFRewardConfig
    | VLLMRewardConfig
    | JudgeRewardConfig
    | CometRewardConfig
    | MathRewardConfig
    | ReferenceRewardConfig
    | PythonRewardConfig
    | EmbeddedRewardConfig,
    Field(discriminator="kind"),
]


class MethodConfig(_Strict):
    """Default method and per-run knobs (names as in :class:`SamplingContext`)."""

    name: Literal["random", "prs", "ensemble", "seq_refine", "moa", "debate", "toa"] = "toa"
    context: dict[str, Any] = Field(default_factory=dict)


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
        return self

    def agent(self, name: str) -> AgentConfig:
        for a in self.agents:
            if a.name == name:
                return a
        raise KeyError(f"no agent named {name!r}; agents: {[a.name for a in self.agents]}")


# ---------------------------------------------------------------- loading


def _line_index(text: str) -> dict[tuple[Any, ...], int]:
    """Map each YAML node path (keys and list indices) to its 1-based line."""
    index: dict[tuple[Any, ...], int] = {}
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return index

    def walk(node: Any, path: tuple[Any, ...]) -> None:
        index[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                key = k.value
                index[(*path, key)] = k.start_mark.line + 1
                walk(v, (*path, key))
                index[(*path, key)] = k.start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode):
            for i, v in enumerate(node.value):
                walk(v, (*path, i))

    if root is not None:
        walk(root, ())
    return index


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


_KIND_TAGS = {"hf", "vllm", "judge", "comet", "math", "reference", "python", "embedded"}


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
    p = Path(path)
    data, text = _read_yaml(p)
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping with 'agents' and 'reward' at the top")
    lines = _line_index(text)
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
                _format_errors(str(rpath), exc, _line_index(rtext), prefix=("reward",))
            ) from exc
    try:
        cfg = ProjectConfig.model_validate({**data, "source": str(p)})
    except ValidationError as exc:
        raise ConfigError(_format_errors(str(p), exc, lines)) from exc
    return cfg


def _reward_adapter() -> Any:
    from pydantic import TypeAdapter

    return TypeAdapter(RewardConfig)


RewardAdapter = _reward_adapter()


def configs_dir() -> Path:
    """The shipped ``model_configs/`` directory (repo checkout or installed package)."""
    here = Path(__file__).resolve().parent
    for cand in (here.parent / "model_configs", here / "model_configs"):
        if cand.is_dir():
            return cand
    return here.parent / "model_configs"
