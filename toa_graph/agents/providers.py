"""Chat models of providers other than OpenAI-compatible endpoints, built through
LangChain's ``init_chat_model`` (the ``langchain`` package plus the provider's package,
installed by the provider's pip extra).

Only the fields a config sets are passed: a sampling field left unset keeps the
provider's default. The client's own retries are off where the class has them (the pool
retries), and a few providers spell the common fields differently (ollama's
``num_predict``), which :data:`_RENAMES` maps.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from toa_graph.errors import UserError
from toa_graph.provider_table import PROVIDERS
from toa_graph.reasoning import reasoning_request, set_path, settings_of

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel

    from toa_graph.config import AgentConfig

__all__ = [
    "PROVIDERS",
    "ProviderMissingError",
    "build_provider_chat_model",
    "check_provider",
    "install_hint",
]

_RENAMES: dict[str, dict[str, str | None]] = {
    # ChatOllama: no timeout / retries / key fields; the timeout goes to its httpx client
    "ollama": {"max_tokens": "num_predict", "max_retries": None, "api_key": None},
    "azure_openai": {"base_url": "azure_endpoint"},
}
"""Per provider: our field name -> the chat model's (``None``: not passed)."""


class ProviderMissingError(UserError):
    """A provider's LangChain package (or ``langchain`` itself) is not installed."""


def install_hint(provider: str) -> str:
    """The pip command that installs what ``provider`` needs."""
    module, extra = PROVIDERS[provider]
    if extra:
        return f'pip install "toa-graph[{extra}]"'
    return f"pip install langchain {module.replace('_', '-')}"


def _require(module: str, provider: str, name: str) -> None:
    try:
        importlib.import_module(module)
    except ImportError as exc:
        package = module.split(".")[0].replace("_", "-")
        raise ProviderMissingError(
            f"agent {name!r}: provider {provider!r} needs the package {package!r}, which is "
            f"not installed ({exc}); install it with: {install_hint(provider)}"
        ) from exc


def provider_kwargs(cfg: AgentConfig, url: str) -> dict[str, Any]:
    """The constructor arguments for ``cfg``'s chat model: only what the config sets."""
    kwargs: dict[str, Any] = {
        "timeout": cfg.timeout_s,
        "max_retries": 0,
        "temperature": cfg.temperature,
        "top_p": cfg.top_p,
        "max_tokens": cfg.max_tokens,
        "base_url": url or None,
        "api_key": cfg.api_key() or None,
        "stop": list(cfg.stop) or None,
    }
    renames = _RENAMES.get(cfg.provider, {})
    out: dict[str, Any] = {}
    for key, value in kwargs.items():
        target = renames.get(key, key)
        if value is not None and target is not None:
            out[target] = value
    if cfg.provider == "ollama":
        out.pop("timeout", None)
        out["client_kwargs"] = {"timeout": cfg.timeout_s}
    out.update(cfg.client_options)
    for path, value in reasoning_request(cfg.provider, **settings_of(cfg)).items():
        set_path(out, path, value)  # the config refuses one set in client_options too
    return out


def check_provider(cfg: AgentConfig) -> None:
    """Raise :class:`ProviderMissingError` (naming the extra to install) unless ``langchain``
    and ``cfg``'s provider package import (the pool checks this when it is built, so a
    missing package stops a run before its first prompt)."""
    module, _ = PROVIDERS[cfg.provider]
    _require("langchain.chat_models", cfg.provider, cfg.name)
    _require(module, cfg.provider, cfg.name)


def build_provider_chat_model(cfg: AgentConfig, url: str) -> BaseChatModel:
    """``init_chat_model(cfg.model, model_provider=cfg.provider, ...)`` for one replica URL
    (``""``: the provider's default endpoint). A missing package is a
    :class:`ProviderMissingError`; settings the provider's class rejects, a
    :class:`~toa_graph.errors.UserError` naming the agent."""
    check_provider(cfg)
    from langchain.chat_models import init_chat_model

    try:
        return init_chat_model(cfg.model, model_provider=cfg.provider, **provider_kwargs(cfg, url))
    except (ValueError, TypeError) as exc:  # pydantic's ValidationError is a ValueError
        raise UserError(
            f"agent {cfg.name!r}: provider {cfg.provider!r} rejected its settings: {exc}"
        ) from exc
