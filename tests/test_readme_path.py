"""The README's "Your own models, end to end" path, run as written against the fake
OpenAI-compatible server: its config (agents pointed at the fake server, the GPU reward
swapped for chrF against the prompts' references), its `toa-graph synthesize` and
`toa-graph export` commands, and its `load_dataset` lines, through to TRL-format datasets."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.fake_servers import FakeServer
from toa_graph import cli

README = Path(__file__).resolve().parents[1] / "README.md"

PROMPTS = [
    {"id": "fr", "prompt": "What is the capital of France?", "reference": "Paris."},
    {"id": "bees", "prompt": "What do bees make?", "reference": "Honey and beeswax."},
    {"id": "boil", "prompt": "When does water boil?", "reference": "At 100 degrees Celsius."},
]


def section(title: str) -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index(f"## {title}")
    end = text.find("\n## ", start + 1)
    return text[start : end if end > 0 else None]


def blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", text, flags=re.S)


def commands(text: str, *names: str) -> list[list[str]]:
    """The `toa-graph NAME ...` lines of the section's bash blocks, comments dropped."""
    out = []
    for block in blocks(text, "bash"):
        for line in block.splitlines():
            words = shlex.split(line, comments=True)
            if len(words) > 1 and words[0] == "toa-graph" and words[1] in names:
                out.append(words[1:])
    return out


def test_readme_own_models_path_runs_to_trl_datasets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    datasets = pytest.importorskip("datasets")
    data_utils = pytest.importorskip("trl.data_utils")
    text = section("Your own models")
    (config,) = blocks(text, "yaml")
    cfg: dict[str, Any] = yaml.safe_load(config)
    assert len(cfg["agents"]) >= 2
    monkeypatch.chdir(tmp_path)
    for agent in cfg["agents"]:
        if "api_key_env" in agent:  # the key the README's config names is read from the env
            monkeypatch.setenv(agent["api_key_env"], "sk-test")
    (tmp_path / "prompts.jsonl").write_text("".join(json.dumps(p) + "\n" for p in PROMPTS))

    synth = commands(text, "synthesize")
    exports = commands(text, "export")
    assert [c[0] for c in synth] == ["synthesize", "synthesize"] and "--estimate" in synth[0]
    assert {c[1] for c in exports} == {"sft", "dpo"}

    with FakeServer(delay=0.005, capacity=16) as server:
        for agent in cfg["agents"]:
            agent["base_url"] = server.url
        cfg["reward"] = {"kind": "reference", "metric": "chrf"}  # no GPU reward model here
        Path("my-models.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
        for argv in synth:
            budget = argv.index("--budget") + 1
            argv[budget] = "6"  # the README's 40, cut for test time
            assert cli.main(argv) == 0, argv
    out = capsys.readouterr().out
    assert "estimate" in out.lower()
    records = Path("runs/mine/records.jsonl").read_text().splitlines()
    assert sorted(json.loads(r)["id"] for r in records) == sorted(p["id"] for p in PROMPTS)

    for argv in exports:
        assert cli.main(argv) == 0, argv
    assert Path("sft.jsonl").exists() and Path("dpo.jsonl").exists()

    (snippet,) = blocks(text, "python")
    loading = snippet.split("trainer =")[0]  # imports, load_dataset, the config (no model)
    scope: dict[str, Any] = {}
    exec(compile(loading, "README.md", "exec"), scope)  # the README's own lines
    dpo = scope["dpo"]
    assert scope["args"].bf16 is False  # the README's config builds on a CPU machine
    assert isinstance(dpo, datasets.Dataset) and dpo.num_rows == len(PROMPTS)
    assert {"prompt", "chosen", "rejected"} <= set(dpo.column_names)
    assert data_utils.is_conversational(dpo[0])
    sft = datasets.load_dataset("json", data_files="sft.jsonl", split="train")
    assert sft.num_rows == len(PROMPTS) and data_utils.is_conversational(sft[0])
    assert sft[0]["messages"][-1]["role"] == "assistant"
