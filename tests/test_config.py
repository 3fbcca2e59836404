"""Config loading: the shipped configs load; bad ones name the file, field and line."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from toa_graph.config import AgentConfig, ConfigError, load_config

CONFIGS = Path(__file__).resolve().parents[1] / "model_configs"


def write(tmp_path: Path, text: str, name: str = "c.yaml") -> Path:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


@pytest.mark.parametrize(
    "name", ["paper-5x70b.yaml", "synthesis-4x8b.yaml", "wmt-5x70b.yaml", "embedded.yaml"]
)
def test_shipped_configs_load(name):
    cfg = load_config(CONFIGS / name)
    assert cfg.agents and len({a.name for a in cfg.agents}) == len(cfg.agents)
    assert all(isinstance(a.stop, list) for a in cfg.agents)


def test_paper_configs_match_the_paper():
    big = load_config(CONFIGS / "paper-5x70b.yaml")
    assert len(big.agents) == 5
    assert big.reward.kind == "hf" and "ArmoRM" in big.reward.model
    assert big.reward.trust_remote_code is True  # explicit opt-in for ArmoRM's custom head
    assert big.method.context["tau"] == 0.1 and big.method.context["alpha"] == 0.01
    small = load_config(CONFIGS / "synthesis-4x8b.yaml")
    assert len(small.agents) == 4
    wmt = load_config(CONFIGS / "wmt-5x70b.yaml")
    assert wmt.reward.kind == "comet" and "cometkiwi" in wmt.reward.model
    assert wmt.method.context["tau"] == 1.0 and wmt.method.context["alpha"] == 0.05


@pytest.mark.parametrize(
    "reward_file", sorted((CONFIGS / "rewards").glob("*.yaml")), ids=lambda p: p.name
)
def test_shipped_reward_configs_load_by_reference(reward_file, tmp_path):
    p = write(
        tmp_path,
        f"agents: [{{name: a, model: m, base_url: 'http://127.0.0.1:1/v1'}}]\nreward: {reward_file}\n",
    )
    assert load_config(p).reward.kind in {"hf", "vllm", "comet"}


def test_missing_field_names_file_field_and_line(tmp_path):
    p = write(
        tmp_path,
        """\
        agents:
          - name: a
            model: m
            base_url: http://127.0.0.1:1/v1
          - name: b
            base_url: http://127.0.0.1:2/v1
        reward:
          kind: math
        """,
    )
    with pytest.raises(ConfigError) as e:
        load_config(p)
    msg = str(e.value)
    assert f"{p}:5" in msg and "agents[1].model" in msg and "Field required" in msg


def test_unknown_field_is_rejected_with_its_line(tmp_path):
    p = write(
        tmp_path,
        """\
        agents:
          - name: a
            model: m
            base_url: http://127.0.0.1:1/v1
            temprature: 0.5
        reward: {kind: math}
        """,
    )
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert f"{p}:5" in str(e.value) and "agents[0].temprature" in str(e.value)
    assert "unknown field" in str(e.value)


def test_stop_as_string_is_rejected(tmp_path):
    p = write(
        tmp_path,
        """\
        agents:
          - {name: a, model: m, base_url: 'http://x/v1', stop: "<|eot_id|>"}
        reward: {kind: math}
        """,
    )
    with pytest.raises(ConfigError, match="stop must be a list"):
        load_config(p)


def test_reward_kind_fields_and_unknown_kind(tmp_path):
    p = write(
        tmp_path,
        """\
        agents: [{name: a, model: m, base_url: 'http://x/v1'}]
        reward:
          kind: hf
        """,
    )
    with pytest.raises(ConfigError, match=r"reward\.model"):
        load_config(p)
    p = write(
        tmp_path, "agents: [{name: a, model: m, base_url: 'http://x/v1'}]\nreward: {kind: oracle}\n"
    )
    with pytest.raises(ConfigError, match="reward"):
        load_config(p)


def test_included_reward_file_errors_name_that_file(tmp_path):
    (tmp_path / "r.yaml").write_text("reward:\n  kind: hf\n  modle: x\n")
    p = write(tmp_path, "agents: [{name: a, model: m, base_url: 'http://x/v1'}]\nreward: r.yaml\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert "r.yaml:3" in str(e.value) and "reward.modle" in str(e.value)


def test_yaml_syntax_error_and_missing_file(tmp_path):
    p = write(tmp_path, "agents: [\n  - name: a\n")
    with pytest.raises(ConfigError, match="YAML syntax error"):
        load_config(p)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")


def test_duplicate_agent_names_and_urls(tmp_path):
    p = write(
        tmp_path,
        """\
        agents:
          - {name: a, model: m, base_url: 'http://x/v1'}
          - {name: a, model: n, base_url: 'http://y/v1'}
        reward: {kind: math}
        """,
    )
    with pytest.raises(ConfigError, match="unique"):
        load_config(p)
    with pytest.raises(ValueError, match="base_url"):
        AgentConfig(name="a", model="m")
    assert AgentConfig(name="a", model="m", base_urls=["u1", "u2"]).urls == ["u1", "u2"]


def test_api_key_comes_only_from_the_named_env_var(monkeypatch):
    cfg = AgentConfig(name="a", model="m", base_url="http://x/v1", api_key_env="MY_TEST_KEY")
    monkeypatch.delenv("MY_TEST_KEY", raising=False)
    with pytest.raises(ConfigError, match="MY_TEST_KEY"):
        cfg.api_key()
    monkeypatch.setenv("MY_TEST_KEY", "sk-secret-123")
    assert cfg.api_key() == "sk-secret-123"
    assert "sk-secret-123" not in cfg.model_dump_json()
    assert AgentConfig(name="a", model="m", base_url="http://x/v1").api_key() == "EMPTY"


@pytest.mark.parametrize("name", ["paper-5x70b.yaml", "synthesis-4x8b.yaml", "wmt-5x70b.yaml"])
def test_paper_configs_set_the_papers_sampling_explicitly(name):
    """Unset sampling fields are not sent, so the paper configs must spell out 0.7 / 1.0."""
    for a in load_config(CONFIGS / name).agents:
        assert (a.temperature, a.top_p, a.max_tokens) == (0.7, 1.0, 2048), a.name


def test_sampling_fields_default_to_unset():
    a = AgentConfig(name="a", model="m", base_url="http://x/v1")
    assert a.temperature is a.top_p is a.max_tokens is None
    assert a.provider == "openai" and a.supports_n
    assert a.requests_per_second is None and a.max_concurrency is None


def test_provider_agents_from_yaml(tmp_path):
    p = write(
        tmp_path,
        """\
        agents:
          - {name: claude, model: claude-x, provider: anthropic, api_key_env: ANTHROPIC_API_KEY}
          - name: local
            model: llama3.2
            provider: ollama
            base_url: http://127.0.0.1:11434
            client_options: {num_ctx: 8192}
            requests_per_second: 2.5
            max_concurrency: 4
        reward: {kind: math}
        """,
    )
    claude, local = load_config(p).agents
    assert claude.urls == [""] and not claude.supports_n  # provider default endpoint
    assert local.client_options == {"num_ctx": 8192} and local.requests_per_second == 2.5
    assert AgentConfig(name="a", model="m", provider="anthropic").api_key() == ""


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ("provider: openia, base_url: 'http://x/v1'", "unknown provider 'openia'"),
        ("provider: anthropic, extra_body: {a: 1}", "use client_options"),
        ("base_url: 'http://x/v1', client_options: {a: 1}", "use extra_body"),
        ("base_url: 'http://x/v1', requests_per_second: 0", "greater than 0"),
        ("base_url: 'http://x/v1', max_concurrency: 0", "greater than or equal to 1"),
    ],
)
def test_bad_provider_and_limit_fields_name_the_line(tmp_path, fields, message):
    p = write(tmp_path, f"agents:\n  - {{name: a, model: m, {fields}}}\nreward: {{kind: math}}\n")
    with pytest.raises(ConfigError, match=message) as err:
        load_config(p)
    assert f"{p}:2" in str(err.value)
