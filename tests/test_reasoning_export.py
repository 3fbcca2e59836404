"""Exports of reasoning models' samples: traces kept (as ``reasoning_content`` or ``<think>``
tags) or dropped, DPO pairs with a trace on one side counted on the dataset card, and TRL's
SFT trainer reading the trace into the example's ``input_ids``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from toa_graph.cli import main

TRACE = "Two and two: count them, that makes four."


def _sample(sid: str, text: str, reward: float, reasoning: str | None) -> dict[str, Any]:
    s: dict[str, Any] = {
        "id": sid, "agent": "a", "text": text, "reward": reward, "parent": None,
        "kind": "fresh", "layer": 0, "usage": {}, "latency_s": 0.0, "error": None,
        "stage": None, "scored": True,
    }  # fmt: skip
    if reasoning:
        s["reasoning"] = reasoning
    return s


def _records(n: int = 4) -> list[dict[str, Any]]:
    out = []
    for i in range(n):
        best = _sample("s0", f"The answer is {i + 4}.", 1.0, f"{TRACE} ({i})")
        # the rejected side of every other pair comes from a model that gave no trace
        worse = _sample("s1", f"It is {i}.", 0.1, None if i % 2 else f"guessing {i}")
        out.append(
            {"id": f"p{i}", "method": "random", "prompt": f"What is {i} + 4?",
             "samples": [best, worse], "best": best}
        )  # fmt: skip
    return out


@pytest.fixture
def records(tmp_path: Path) -> Path:
    path = tmp_path / "records.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in _records()), encoding="utf-8")
    return path


def _export(records: Path, out: Path, kind: str, *flags: str) -> list[dict[str, Any]]:
    assert main(["export", kind, "--input", str(records), "--output", str(out), *flags]) == 0
    return [json.loads(line) for line in out.read_text().splitlines()]


def test_sft_keeps_the_trace_in_reasoning_content_by_default(records: Path, tmp_path: Path):
    rows = _export(records, tmp_path / "sft.jsonl", "sft")
    turn = rows[0]["messages"][-1]
    assert turn == {"role": "assistant", "content": "The answer is 4.",
                    "reasoning_content": f"{TRACE} (0)"}  # fmt: skip
    card = (tmp_path / "sft.README.md").read_text()
    assert "format: field" in card and "`reasoning_content` field" in card


def test_sft_tags_and_drop(records: Path, tmp_path: Path) -> None:
    rows = _export(records, tmp_path / "t.jsonl", "sft", "--reasoning-format", "tags")
    turn = rows[0]["messages"][-1]
    assert turn["content"] == f"<think>\n{TRACE} (0)\n</think>\n\nThe answer is 4."
    assert "reasoning_content" not in turn
    rows = _export(records, tmp_path / "d.jsonl", "sft", "--reasoning", "drop")
    assert rows[0]["messages"][-1] == {"role": "assistant", "content": "The answer is 4."}
    assert "format: drop" in (tmp_path / "d.README.md").read_text()


def test_dpo_keeps_one_sided_pairs_and_counts_them(records: Path, tmp_path: Path) -> None:
    rows = _export(records, tmp_path / "dpo.jsonl", "dpo")
    assert len(rows) == 4  # the pairs with no trace on the rejected side are kept
    one_sided = [r for r in rows if "reasoning_content" not in r["rejected"][0]]
    assert len(one_sided) == 2
    assert all(r["chosen"][0]["reasoning_content"].startswith(TRACE) for r in rows)
    card = (tmp_path / "dpo.README.md").read_text()
    assert "one_sided: 2" in card and "2 pairs have a trace on one side only" in card


def test_reasoning_flags_refused_for_other_kinds(records: Path, tmp_path: Path, capsys) -> None:
    rc = main(["export", "samples", "--input", str(records), "--output",
               str(tmp_path / "x.jsonl"), "--reasoning", "drop"])  # fmt: skip
    assert rc == 2 and "sft and dpo" in capsys.readouterr().err


# ---------------------------------------------------------------- TRL reads the trace

# a chat template that renders each assistant turn's reasoning_content before its answer,
# as Qwen3's and DeepSeek-R1's templates do
REASONING_TEMPLATE = (
    "{% for m in messages %}[{{ m['role'] }}]"
    "{% if m['role'] == 'assistant' %}{% generation %}"
    "{% if m.reasoning_content is defined and m.reasoning_content %}"
    "<think>{{ m.reasoning_content }}</think>{% endif %}{{ m['content'] }}<|end|>"
    "{% endgeneration %}{% else %}{{ m['content'] }}<|end|>{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}[assistant]{% endif %}"
)


def _contains(ids: list[int], part: list[int]) -> bool:
    return any(ids[i : i + len(part)] == part for i in range(len(ids) - len(part) + 1))


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    ("fmt", "renders_field", "trace_in_ids"),
    [
        ("field", True, True),  # reasoning_content, a template that renders it
        ("tags", False, True),  # <think> in the content: any template keeps it
        ("field", False, False),  # a content-only template loses the field (the check bites)
    ],
)
def test_trl_sft_step_on_an_export_with_kept_reasoning(
    records: Path, tmp_path: Path, fmt: str, renders_field: bool, trace_in_ids: bool
) -> None:
    pytest.importorskip("trl")
    import datasets
    import trl

    from tests.tiny_lm import tiny_model_and_tokenizer

    rows = _export(records, tmp_path / "sft.jsonl", "sft", "--reasoning-format", fmt)
    model, tok = tiny_model_and_tokenizer()
    if renders_field:
        tok.chat_template = REASONING_TEMPLATE
    args = trl.SFTConfig(
        output_dir=str(tmp_path / "ckpt"), max_steps=1, per_device_train_batch_size=2,
        learning_rate=1e-3, max_length=512, report_to=[], save_strategy="no", use_cpu=True,
        logging_steps=1,
    )  # fmt: skip
    trainer = trl.SFTTrainer(
        model=model, args=args, train_dataset=datasets.Dataset.from_list(rows),
        processing_class=tok,
    )  # fmt: skip
    ids = list(trainer.train_dataset[0]["input_ids"])
    trace = tok.encode(f"{TRACE} (0)", add_special_tokens=False)
    answer = tok.encode("The answer is 4.", add_special_tokens=False)
    assert _contains(ids, answer)
    assert _contains(ids, trace) is trace_in_ids
    out = trainer.train()
    assert out.global_step == 1


def test_readme_reasoning_section_config_and_commands(tmp_path: Path) -> None:
    """The README's "Reasoning models" config loads as written and its export commands
    parse (flags that exist, values they take)."""
    from tests.test_readme_path import blocks, commands, section
    from toa_graph.cli import build_parser
    from toa_graph.config import load_config

    text = section("Reasoning models")
    (config,) = blocks(text, "yaml")
    path = tmp_path / "reasoning.yaml"
    path.write_text(config, encoding="utf-8")
    cfg = load_config(path)
    assert cfg.agents[0].enable_thinking is True and cfg.agents[1].reasoning_effort == "low"
    exports = commands(text, "export")
    assert len(exports) == 3
    for words in exports:
        args = build_parser().parse_args(words)
        assert args.kind in ("sft", "dpo")


def test_synthesize_toa_then_export_keeps_traces(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``synthesize --method toa`` against the fake server answering as two reasoning
    models (tags inline, a reasoning_content field): records hold answers in ``text`` and
    traces in ``reasoning``; the SFT export carries the best answer's trace."""
    import yaml

    from tests.fake_servers import FakeServer

    monkeypatch.chdir(tmp_path)
    prompts = [{"id": f"p{i}", "prompt": f"Say {i}.", "reference": f"{i}"} for i in range(2)]
    Path("prompts.jsonl").write_text("".join(json.dumps(p) + "\n" for p in prompts))
    with FakeServer(delay=0.0, capacity=16) as server:
        cfg = {
            "agents": [
                {"name": n, "model": n, "base_url": server.url, "extra_body": {"fake_reasoning": s}}
                for n, s in (("inline", "tags"), ("field", "reasoning_content"))
            ],
            "reward": {"kind": "reference", "metric": "chrf"},
        }
        Path("c.yaml").write_text(yaml.safe_dump(cfg))
        argv = ["synthesize", "--config", "c.yaml", "--input", "prompts.jsonl", "--method",
                "toa", "--budget", "6", "--output", "runs", "--no-progress"]  # fmt: skip
        assert main(argv) == 0
    records = [json.loads(x) for x in Path("runs/records.jsonl").read_text().splitlines()]
    samples = [s for r in records for s in r["samples"]]
    assert len(samples) == 12 and all(s["error"] is None for s in samples)
    assert all(
        "think" not in s["text"] and s["reasoning"].startswith("Let me think") for s in samples
    )
    assert all(s["usage"]["reasoning_tokens"] > 0 for s in samples)
    assert all(r["totals"]["tokens"]["reasoning_tokens"] > 0 for r in records)
    rows = _export(Path("runs"), tmp_path / "sft.jsonl", "sft")
    assert all(r["messages"][-1]["reasoning_content"].startswith("Let me think") for r in rows)
