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
