"""The prompt/completion SFT, KTO, reward-model and all-samples exports, the dataset card,
``--push-to-hub`` (monkeypatched: no network), empty exports, estimated n>1 usage, and one
TRL step on each new format (SFT completion-only, KTO, reward model) on CPU."""

from __future__ import annotations

import asyncio
import copy
import json
from pathlib import Path
from typing import Any

import pytest

from tests.fakes import fake_agents, hash_reward
from tests.test_exports import record, tiny_model_and_tokenizer
from toa_graph.agents.client import Generation, split_shared_usage
from toa_graph.cli import main
from toa_graph.exports import (
    EmptyExportError,
    ExportStats,
    kto_rows,
    rm_rows,
    samples_rows,
    sft_completion_rows,
    write_rows,
)
from toa_graph.hub import CITATIONS, CardFacts, dataset_card, split_rows
from toa_graph.synthesis import read_records, run_synthesis

# ---------------------------------------------------------------- row builders


def test_sft_completion_splits_prompt_and_best_answer() -> None:
    rec = record(
        [0.2, 0.9, 0.5],
        prompt=[{"role": "system", "content": "S"}, {"role": "user", "content": "Q"}],
    )
    stats = ExportStats()
    [row] = sft_completion_rows([rec, record([None])], keep_id=True, stats=stats)
    assert row == {
        "prompt": [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"}],
        "completion": [{"role": "assistant", "content": "answer 1"}],
        "id": "r1",
    }
    assert stats.written == 1 and stats.skipped["without a usable best response"] == 1


def test_kto_rows_are_the_dpo_pair_unpaired() -> None:
    rec = record([0.1, 0.9, 0.5, 0.3])
    rows = list(kto_rows([rec], rejected_rank=3))
    assert [(r["completion"][0]["content"], r["label"]) for r in rows] == [
        ("answer 1", True),
        ("answer 3", False),  # rank 3 of 0.9, 0.5, 0.3, 0.1
    ]
    assert rows[0]["prompt"] == [{"role": "user", "content": "Q?"}]
    stats = ExportStats()
    assert list(kto_rows([record([0.5, 0.5])], stats=stats)) == []
    assert stats.skipped["with every usable sample tied with the best"] == 1


def test_rm_rows_carry_the_reward_margin() -> None:
    [row] = rm_rows([record([0.1, 0.9, 0.5])], rejected_rank=3)
    assert row["chosen"] == [{"role": "assistant", "content": "answer 1"}]
    assert row["rejected"] == [{"role": "assistant", "content": "answer 0"}]
    assert row["margin"] == pytest.approx(0.8)
    assert set(row) == {"prompt", "chosen", "rejected", "margin"}
    assert list(rm_rows([record([0.1, 0.9, 0.5])], min_gap=2.0)) == []


def test_samples_rows_keep_every_scored_sample_in_order() -> None:
    rec = record([0.3, None, 0.7])
    rec["samples"][2]["agent"] = "b"
    [row] = samples_rows([rec])
    assert row["completions"] == [
        {"model": "a", "text": "answer 0", "reward": 0.3},
        {"model": "b", "text": "answer 2", "reward": 0.7},
    ]


def test_write_rows_with_no_rows_writes_nothing(tmp_path: Path) -> None:
    for name in ("e.jsonl", "e.parquet"):
        with pytest.raises(EmptyExportError, match="nothing was written"):
            write_rows(iter([]), tmp_path / name)
    assert list(tmp_path.iterdir()) == []


def test_n_gt_1_usage_is_marked_estimated() -> None:
    gens = [
        Generation(f"t{i}", {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0}, 0.1)
        for i in range(3)
    ]
    split_shared_usage(gens, {"token_usage": {"prompt_tokens": 10, "completion_tokens": 7}})
    assert [g.usage["estimated"] for g in gens] == [True, True, True]  # type: ignore[typeddict-item]
    assert sum(g.usage["total_tokens"] for g in gens) == 17
    one = [Generation("t", {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0}, 0.1)]
    split_shared_usage(one, {"token_usage": {"prompt_tokens": 10, "completion_tokens": 7}})
    assert "estimated" not in one[0].usage


# ---------------------------------------------------------------- card and split


def test_split_rows_is_seeded_and_disjoint() -> None:
    rows = [{"i": i} for i in range(20)]
    parts = split_rows(rows, 0.25)
    assert len(parts["test"]) == 5 and len(parts["train"]) == 15
    assert sorted(r["i"] for p in parts.values() for r in p) == list(range(20))
    assert parts == split_rows(rows, 0.25)
    assert split_rows(rows, None) == {"train": rows}
    assert len(split_rows(rows[:2], 0.01)["test"]) == 1  # at least one row each side
    with pytest.raises(ValueError, match="at least 2 rows"):
        split_rows(rows[:1], 0.5)


@pytest.mark.parametrize(
    ("method", "arxiv"),
    [
        ("toa", "2412.17061"),
        ("moa", "2406.04692"),
        ("debate", "2506.03541"),
        ("abmcts", "2503.04412"),
    ],
)
def test_card_names_how_the_data_was_made(method: str, arxiv: str) -> None:
    import yaml

    rec = record([0.1, 0.9], method=method, context={"budget": 8}, config_digest="abc123")
    facts = CardFacts()
    list(facts.observe([rec]))
    card = dataset_card("dpo", facts, {"train": 9, "test": 1}, reward="rm-x", repo="me/ds")
    header = yaml.safe_load(card.split("---\n")[1])
    assert header["toa_graph"] == {
        "export": "dpo", "method": method, "agents": ["a"], "reward": "rm-x", "budget": 8,
        "config_digest": "abc123", "records": 1, "rows": {"train": 9, "test": 1},
    }  # fmt: skip
    assert header["arxiv"] == arxiv
    assert CITATIONS[method] in card and arxiv in CITATIONS[method]
    assert "| test | 1 |" in card


# ---------------------------------------------------------------- CLI, datasets, Hub


@pytest.fixture(scope="module")
def synthesized(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("synth")
    inp = d / "in.jsonl"
    inp.write_text(
        "".join(json.dumps({"id": i, "prompt": f"Tell me about {i}."}) + "\n" for i in range(8))
    )
    asyncio.run(
        run_synthesis(
            inp, d / "out", method="toa", agents=fake_agents(), reward=hash_reward,
            context={"budget": 6}, progress=False,
        )
    )  # fmt: skip
    return d / "out"


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sft-completion", "kto", "rm", "samples"])
@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_new_formats_load_with_datasets(
    synthesized: Path, tmp_path: Path, kind: str, fmt: str
) -> None:
    datasets = pytest.importorskip("datasets")
    out = tmp_path / f"{kind}.{fmt}"
    assert main(["export", kind, "--input", str(synthesized), "--output", str(out)]) == 0
    ds = datasets.load_dataset(
        "json" if fmt == "jsonl" else "parquet", data_files=str(out), split="train"
    )
    expected = {
        "sft-completion": ({"prompt", "completion"}, 8),
        "kto": ({"prompt", "completion", "label"}, 16),
        "rm": ({"prompt", "chosen", "rejected", "margin"}, 8),
        "samples": ({"prompt", "completions"}, 8),
    }[kind]
    assert (set(ds.column_names), len(ds)) == expected
    if kind == "kto":
        assert sorted(set(ds["label"])) == [False, True]
    if kind == "rm":
        assert all(m > 0 for m in ds["margin"])
    if kind == "samples":
        assert len(ds[0]["completions"]) == 6 and set(ds[0]["completions"][0]) == {
            "model",
            "text",
            "reward",
        }
    card = (tmp_path / f"{kind}.README.md").read_text()
    assert "method: toa" in card and "budget: 6" in card


def test_export_with_no_rows_exits_2_and_writes_nothing(synthesized: Path, tmp_path: Path) -> None:
    # toa records are not debate records: dr-sft gives no rows
    out = tmp_path / "x.parquet"
    assert main(["export", "dr-sft", "--input", str(synthesized), "--output", str(out)]) == 2
    assert list(tmp_path.iterdir()) == []


def test_push_to_hub_with_test_split(
    synthesized: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    datasets = pytest.importorskip("datasets")
    huggingface_hub = pytest.importorskip("huggingface_hub")
    calls: list[tuple[str, Any, dict[str, Any]]] = []

    def create_repo(self: Any, repo_id: str, **kw: Any) -> None:
        calls.append(("create_repo", repo_id, kw))

    def upload_file(self: Any, **kw: Any) -> None:
        calls.append(("upload_file", kw["path_in_repo"], kw))

    def push_to_hub(self: Any, repo_id: str, **kw: Any) -> None:
        calls.append(
            ("push_to_hub", repo_id, {"splits": {k: len(v) for k, v in self.items()}, **kw})
        )

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", create_repo)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_file", upload_file)
    monkeypatch.setattr(datasets.DatasetDict, "push_to_hub", push_to_hub)
    out = tmp_path / "dpo.jsonl"
    rc = main(["export", "dpo", "--input", str(synthesized), "--output", str(out),
               "--push-to-hub", "me/toa-dpo", "--private", "--test-size", "0.25",
               "--reward", "hash"])  # fmt: skip
    assert rc == 0
    assert [c[0] for c in calls] == ["create_repo", "upload_file", "push_to_hub"]
    assert calls[0][1] == "me/toa-dpo" and calls[0][2]["private"] is True
    assert calls[0][2]["repo_type"] == "dataset"
    card = calls[1][2]["path_or_fileobj"].decode()
    assert calls[1][1] == "README.md" and "reward: hash" in card and "2412.17061" in card
    assert "rows:\n    train: 6\n    test: 2" in card
    assert calls[2][1] == "me/toa-dpo" and calls[2][2]["splits"] == {"train": 6, "test": 2}
    assert calls[2][2]["private"] is True
    # the same split and card locally
    assert len((tmp_path / "dpo.train.jsonl").read_text().splitlines()) == 6
    assert len((tmp_path / "dpo.test.jsonl").read_text().splitlines()) == 2
    assert (tmp_path / "dpo.README.md").read_text() == card


def test_export_flag_errors(synthesized: Path, tmp_path: Path) -> None:
    base = ["export", "sft", "--input", str(synthesized)]
    assert main(base) == 2  # neither --output nor --push-to-hub
    assert main([*base, "--output", str(tmp_path / "a.jsonl"), "--test-size", "1.5"]) == 2
    assert main([*base, "--output", str(tmp_path / "a.jsonl"), "--private"]) == 2
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- TRL acceptance


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_trl_trainers_take_a_step_on_the_new_formats(synthesized: Path, tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    trl = pytest.importorskip("trl")
    from transformers import LlamaForSequenceClassification

    recs = list(read_records(synthesized))

    def load(rows: Any, name: str) -> Any:
        write_rows(rows, tmp_path / name)
        return datasets.load_dataset("json", data_files=str(tmp_path / name), split="train")

    common: dict[str, Any] = dict(
        max_steps=1, per_device_train_batch_size=2, report_to=[], use_cpu=True, save_strategy="no",
        logging_steps=1, max_length=256, disable_tqdm=True,
    )  # fmt: skip
    model, tok = tiny_model_and_tokenizer()

    sft_args = trl.SFTConfig(output_dir=str(tmp_path / "sft"), **common)
    sft = trl.SFTTrainer(
        model=model, args=sft_args, train_dataset=load(sft_completion_rows(recs), "sft.jsonl"),
        processing_class=tok,
    )  # fmt: skip
    first = sft.train_dataset[0]
    labels = first["labels"]  # completion-only loss: the prompt's tokens are masked out
    assert labels[0] == -100 and any(t != -100 for t in labels)
    assert sft.train().global_step == 1

    kto = trl.KTOTrainer(
        model=model, ref_model=copy.deepcopy(model),
        args=trl.KTOConfig(output_dir=str(tmp_path / "kto"), **common),
        train_dataset=load(kto_rows(recs), "kto.jsonl"), processing_class=tok,
    )  # fmt: skip
    out = kto.train()
    assert out.global_step == 1 and out.training_loss > 0

    rm_config = copy.deepcopy(model.config)
    rm_config.num_labels = 1
    rm_model = LlamaForSequenceClassification(rm_config)
    rm = trl.RewardTrainer(
        model=rm_model, args=trl.RewardConfig(output_dir=str(tmp_path / "rm"), **common),
        train_dataset=load(rm_rows(recs), "rm.jsonl"), processing_class=tok,
    )  # fmt: skip
    assert "margin" in rm.train_dataset.column_names
    out = rm.train()
    assert out.global_step == 1 and out.training_loss > 0
