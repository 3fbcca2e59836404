"""Agents of any provider from YAML: the OpenAI-compatible path sends only the sampling
fields a config sets; other providers are built through LangChain's ``init_chat_model``
(replaced here by a recording stand-in, so no provider package or network is needed),
and a missing package names the pip extra to install."""

from __future__ import annotations

import sys
import types
from collections.abc import Iterator
from typing import Any

import pytest

from tests.fake_servers import FakeServer
from tests.fakes import FakeAgent
from toa_graph.agents import AgentPool
from toa_graph.agents.providers import ProviderMissingError, install_hint
from toa_graph.config import AgentConfig
from toa_graph.errors import UserError

HI = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def server() -> Iterator[FakeServer]:
    with FakeServer(delay=0.0, capacity=16) as srv:
        yield srv


async def test_unset_sampling_fields_are_not_sent(server: FakeServer) -> None:
    pool = AgentPool([AgentConfig(name="m", model="m", base_url=server.url, max_retries=0)])
    (g,) = await pool.generate("m", HI)
    assert g.error is None
    body = server.stats()["last_body"]
    assert body["model"] == "m"
    assert not {"temperature", "top_p", "max_tokens", "max_completion_tokens"} & set(body)


async def test_sampling_fields_a_config_sets_are_sent(server: FakeServer) -> None:
    cfg = AgentConfig(
        name="m", model="m", base_url=server.url, temperature=0.7, top_p=0.9, max_tokens=64
    )
    (g,) = await AgentPool([cfg]).generate("m", HI)
    assert g.error is None
    body = server.stats()["last_body"]
    assert body["temperature"] == 0.7 and body["top_p"] == 0.9
    assert (body.get("max_tokens") or body.get("max_completion_tokens")) == 64


@pytest.fixture
def init_chat_model(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """A stand-in ``langchain.chat_models`` whose ``init_chat_model`` records its call and
    returns a fake chat model; the provider packages are present as empty modules."""
    calls: list[dict[str, Any]] = []

    def fake_init(model: str, *, model_provider: str, **kwargs: Any) -> FakeAgent:
        calls.append({"model": model, "model_provider": model_provider, **kwargs})
        return FakeAgent(name=model)

    chat_models = types.ModuleType("langchain.chat_models")
    chat_models.init_chat_model = fake_init  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "langchain.chat_models", chat_models)
    for pkg in ("langchain_anthropic", "langchain_ollama"):
        monkeypatch.setitem(sys.modules, pkg, types.ModuleType(pkg))
    return calls


async def test_anthropic_agent_goes_through_init_chat_model(
    init_chat_model: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TOA_TEST_ANTHROPIC_KEY", "sk-ant-test")
    cfg = AgentConfig(
        name="claude", model="claude-x", provider="anthropic", api_key_env="TOA_TEST_ANTHROPIC_KEY",
        max_tokens=512, stop=["END"], timeout_s=30,
    )  # fmt: skip
    pool = AgentPool([cfg])
    (g,) = await pool.generate("claude", HI)
    assert g.error is None and g.text.startswith("claude-x#0")
    (call,) = init_chat_model
    assert call == {
        "model": "claude-x", "model_provider": "anthropic", "timeout": 30, "max_retries": 0,
        "max_tokens": 512, "api_key": "sk-ant-test", "stop": ["END"],
    }  # fmt: skip
    assert not pool.supports_n("claude")  # n>1 becomes n requests for other providers


async def test_ollama_agent_gets_its_own_field_names(init_chat_model: list[dict[str, Any]]) -> None:
    cfg = AgentConfig(
        name="local", model="llama3.2", provider="ollama", base_url="http://127.0.0.1:11434",
        temperature=0.7, max_tokens=256, timeout_s=60, client_options={"num_ctx": 8192},
    )  # fmt: skip
    (g,) = await AgentPool([cfg]).generate("local", HI)
    assert g.error is None
    (call,) = init_chat_model
    assert call == {
        "model": "llama3.2", "model_provider": "ollama", "temperature": 0.7, "num_predict": 256,
        "base_url": "http://127.0.0.1:11434", "client_kwargs": {"timeout": 60}, "num_ctx": 8192,
    }  # fmt: skip


async def test_missing_provider_package_names_the_extra(
    init_chat_model: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "langchain_anthropic", None)  # import fails
    cfg = AgentConfig(name="c", model="claude-x", provider="anthropic")
    with pytest.raises(ProviderMissingError, match=r"toa-graph\[anthropic\]") as err:
        AgentPool([cfg])  # before any request: not a failed sample per call
    assert isinstance(err.value, UserError) and "'langchain-anthropic'" in str(err.value)
    assert init_chat_model == []


def test_missing_langchain_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "langchain.chat_models", None)
    cfg = AgentConfig(name="g", model="gemini-x", provider="google_genai")
    with pytest.raises(ProviderMissingError, match=r"'langchain'.*toa-graph\[google\]"):
        AgentPool([cfg])


def test_install_hint_without_an_extra_names_the_packages() -> None:
    assert install_hint("ollama") == 'pip install "toa-graph[ollama]"'
    assert install_hint("deepseek") == "pip install langchain langchain-deepseek"


def test_settings_a_provider_rejects_name_the_agent(monkeypatch: pytest.MonkeyPatch) -> None:
    def strict_init(model: str, *, model_provider: str, **kwargs: Any) -> FakeAgent:
        raise ValueError(f"unexpected field {sorted(kwargs)[0]!r}")

    chat_models = types.ModuleType("langchain.chat_models")
    chat_models.init_chat_model = strict_init  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "langchain.chat_models", chat_models)
    monkeypatch.setitem(sys.modules, "langchain_groq", types.ModuleType("langchain_groq"))
    pool = AgentPool([AgentConfig(name="q", model="llama", provider="groq")])
    with pytest.raises(UserError, match=r"agent 'q': provider 'groq' rejected its settings"):
        pool.build_clients()


def test_replicas_without_a_probe_are_back_on_trial_after_their_cooldown() -> None:
    import time

    from toa_graph.agents.replicas import ReplicaSet

    rs = ReplicaSet("x", ["u1", "u2"], cooldown_s=0.05, max_cooldown_s=1.0, probe=None)
    a, b = rs.replicas
    rs.take_out(a, "boom")
    a.outstanding, b.outstanding = 0, 5
    assert rs.choose() is b  # out while cooling down, however idle
    time.sleep(0.08)
    assert rs.choose() is a and a.healthy and a.strikes == 1  # next outage lasts longer
