"""SFT / DPO / T-DPO exports: ranking rules, file formats, `datasets` loading and one TRL
training step each (SFTTrainer, DPOTrainer) on CPU with a tiny model built in the test."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from tests.fakes import fake_agents, hash_reward
from toa_graph.exports import (
    ExportStats,
    default_rejected_rank,
    dpo_pair,
    dpo_rows,
    dr_sft_rows,
    ranked_samples,
    sft_example,
    sft_rows,
    tdpo_rows,
    write_rows,
)
from toa_graph.synthesis import read_records, run_synthesis


def sample(
    i: int, reward: float | None, text: str | None = None, error: str | None = None
) -> dict[str, Any]:
    return {
        "id": f"s{i}", "agent": "a", "text": text if text is not None else f"answer {i}", "reward": reward,
        "parent": None, "kind": "fresh", "layer": 0, "usage": {}, "latency_s": 0.0, "error": error,
    }  # fmt: skip


def record(rewards: list[float | None], prompt: Any = "Q?", **kw: Any) -> dict[str, Any]:
    samples = [sample(i, r) for i, r in enumerate(rewards)]
    ok = [s for s in samples if s["reward"] is not None]
    best = max(ok, key=lambda s: s["reward"]) if ok else None
    return {"id": "r1", "prompt": prompt, "samples": samples, "best": best, "method": "toa", **kw}


def test_default_rejected_rank_scales_the_papers_30_of_160() -> None:
    assert default_rejected_rank(160) == 30
    assert default_rejected_rank(16) == 3
    assert default_rejected_rank(40) == 8
    assert default_rejected_rank(2) == 2  # never the chosen one
    assert default_rejected_rank(5) == 2


def test_ranking_skips_errored_and_unscored_samples() -> None:
    rec = record([0.1, 0.9, None, 0.5])
    rec["samples"].append(sample(4, 5.0, error="reward: boom"))
    rec["samples"].append(sample(5, 4.0, text="  "))
    assert [s["id"] for s in ranked_samples(rec)] == ["s1", "s3", "s0"]


def test_dpo_pair_best_vs_kth() -> None:
    rec = record([0.1 * i for i in range(16)])  # s15 best; default k = 3 -> s13
    row, reason = dpo_pair(rec)
    assert reason is None and row is not None
    assert row["prompt"] == [{"role": "user", "content": "Q?"}]
    assert row["chosen"] == [{"role": "assistant", "content": "answer 15"}]
    assert row["rejected"] == [{"role": "assistant", "content": "answer 13"}]
    assert row["score_chosen"] > row["score_rejected"]
    row, _ = dpo_pair(rec, rejected_rank=16)
    assert row is not None and row["rejected"][0]["content"] == "answer 0"
    row, _ = dpo_pair(rec, rejected_rank=99)  # clamped to the last usable
    assert row is not None and row["rejected"][0]["content"] == "answer 0"
    assert dpo_pair(rec, rejected_rank=2, min_gap=0.5) == (None, "with reward gap < 0.5")
    assert dpo_pair(record([0.5]))[1] == "with fewer than 2 usable samples"
    same = record([0.9, 0.1])
    same["samples"][1]["text"] = same["samples"][0]["text"]
    assert dpo_pair(same)[1] == "with identical chosen/rejected text"


def test_sft_example_and_chat_prompts() -> None:
    msgs = [{"role": "system", "content": "sys"}, {"role": "user", "content": "hi"}]
    row = sft_example(record([0.2, 0.7], prompt=msgs), keep_id=True)
    assert row == {"messages": [*msgs, {"role": "assistant", "content": "answer 1"}], "id": "r1"}
    assert sft_example(record([None, None])) is None
    stats = ExportStats()
    rows = list(sft_rows([record([0.3]), record([None])], stats=stats))
    assert (
        len(rows) == 1
        and stats.written == 1
        and stats.skipped["without a usable best response"] == 1
    )
    stats = ExportStats()
    list(dpo_rows([record([0.3]), record([0.1, 0.2, 0.3])], stats=stats))
    assert "1 rows from 2 records" in stats.describe()


def test_debate_exports_skip_other_methods() -> None:
    for rows_of in (tdpo_rows, dr_sft_rows):
        stats = ExportStats()
        assert list(rows_of([record([0.1, 0.2])], stats=stats)) == []
        assert stats.skipped["not from the debate method"] == 1


@pytest.fixture(scope="module")
def debated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Synthesis records of a debate on two GSM8K-style items (gold from "answer")."""
    import asyncio

    from tests.fakes import FakeAgent

    def reply(name: str, k: int, messages: Any) -> str:
        # the first agent is always right, the others wrong: pairs in every round
        if "provide a feedback" in str(messages[-1].content):
            return f"{name} feedback {k}"
        return f"{name} works it out.\nFinal answer: {4 if name == 'a' else 5 + k}"

    d = tmp_path_factory.mktemp("debate")
    inp = d / "in.jsonl"
    rows = [{"id": f"d{i}", "question": f"What is 2 + 2? ({i})", "answer": "4"} for i in (1, 2)]
    inp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    agents = {n: FakeAgent(name=n, reply=reply) for n in ("a", "b", "c")}
    asyncio.run(
        run_synthesis(
            inp, d / "out", method="debate", agents=agents, reward=hash_reward,
            context={"budget": 14, "rounds": 1}, progress=False,
        )
    )  # fmt: skip
    return d / "out"


def test_tdpo_and_dr_sft_from_a_real_debate_run(debated: Path) -> None:
    records = list(read_records(debated))
    assert all(len(r["samples"]) == 14 for r in records)  # 2 rounds of 3 answers + 4 notes
    rows = list(tdpo_rows(records))
    assert len(rows) == 2 * 2 * 2  # per record and round: a (right) x b, c (wrong)
    assert all(set(r) == {"prompt", "chosen", "rejected"} for r in rows)
    assert all(r["chosen"][0]["content"].startswith("a works") for r in rows)
    sft = list(dr_sft_rows(records))
    assert len(sft) == 2 * 2 and all(r["messages"][-1]["role"] == "assistant" for r in sft)
    assert all("### Question" in r["messages"][0]["content"] for r in sft)


def test_debate_export_cli(debated: Path, tmp_path: Path) -> None:
    from toa_graph.cli import main

    out = tmp_path / "sft.jsonl"
    assert main(["export", "dr-sft", "--input", str(debated), "--output", str(out)]) == 0
    assert len(out.read_text().splitlines()) == 4
    whole, cut = tmp_path / "t.jsonl", tmp_path / "t_cut.jsonl"
    assert main(["export", "tdpo", "--input", str(debated), "--output", str(whole)]) == 0
    assert main(["export", "tdpo", "--input", str(debated), "--output", str(cut),
                 "--max-prompt-tokens", "200"]) == 0  # fmt: skip
    n_whole, n_cut = (len(p.read_text().splitlines()) for p in (whole, cut))
    assert n_whole == 8 and n_cut > n_whole  # round-1 prompts split into chunks
    assert main(["export", "tdpo", "--input", str(debated), "--output", str(cut),
                 "--max-prompt-tokens", "0"]) == 2  # fmt: skip


# ---------------------------------------------------------------- datasets + TRL


def tiny_model_and_tokenizer() -> tuple[Any, Any]:
    """A 1-layer Llama and a character-level tokenizer with a chat template, built here."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    chars = [chr(i) for i in range(32, 127)] + ["\n"]
    special = ["<pad>", "<s>", "</s>", "<unk>", "<|end|>"]
    vocab = {t: i for i, t in enumerate(special + chars)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    tok.decoder = decoders.Fuse()
    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="<|end|>",
        unk_token="<unk>",
    )
    hf_tok.chat_template = (
        "{% for m in messages %}[{{ m['role'] }}]"
        "{% if m['role'] == 'assistant' %}{% generation %}{{ m['content'] }}<|end|>{% endgeneration %}"
        "{% else %}{{ m['content'] }}<|end|>{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}[assistant]{% endif %}"
    )
    cfg = LlamaConfig(
        vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=1024,
        pad_token_id=0, bos_token_id=1, eos_token_id=vocab["<|end|>"],
    )  # fmt: skip
    return LlamaForCausalLM(cfg), hf_tok


@pytest.fixture(scope="module")
def synthesized(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import asyncio

    d = tmp_path_factory.mktemp("synth")
    inp = d / "in.jsonl"
    rows = [{"id": i, "instruction": f"Say something about {i}."} for i in range(6)]
    rows.append(
        {
            "id": "chat",
            "messages": [
                {"role": "system", "content": "Be kind."},
                {"role": "user", "content": "Hi!"},
            ],
        }
    )
    inp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    asyncio.run(
        run_synthesis(
            inp, d / "out", method="toa", agents=fake_agents(), reward=hash_reward,
            context={"budget": 6}, progress=False,
        )
    )  # fmt: skip
    return d / "out"


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_exports_load_with_datasets(synthesized: Path, tmp_path: Path, fmt: str) -> None:
    datasets = pytest.importorskip("datasets")
    recs = list(read_records(synthesized))
    sft_path = tmp_path / f"sft.{fmt}"
    dpo_path = tmp_path / f"dpo.{fmt}"
    assert write_rows(sft_rows(recs), sft_path) == 7
    assert write_rows(dpo_rows(recs), dpo_path) == 7
    loader = "json" if fmt == "jsonl" else "parquet"
    sft = datasets.load_dataset(loader, data_files=str(sft_path), split="train")
    dpo = datasets.load_dataset(loader, data_files=str(dpo_path), split="train")
    assert sft.column_names == ["messages"] and len(sft) == 7
    assert sft[6]["messages"][0] == {"role": "system", "content": "Be kind."}
    assert sft[0]["messages"][-1]["role"] == "assistant"
    assert {"prompt", "chosen", "rejected"} <= set(dpo.column_names) and len(dpo) == 7
    assert dpo[0]["chosen"][0]["role"] == "assistant"


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_trl_sft_and_dpo_trainers_take_a_step(synthesized: Path, tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    trl = pytest.importorskip("trl")
    recs = list(read_records(synthesized))
    write_rows(sft_rows(recs), tmp_path / "sft.jsonl")
    write_rows(dpo_rows(recs), tmp_path / "dpo.parquet")
    sft = datasets.load_dataset("json", data_files=str(tmp_path / "sft.jsonl"), split="train")
    dpo = datasets.load_dataset("parquet", data_files=str(tmp_path / "dpo.parquet"), split="train")
    model, tok = tiny_model_and_tokenizer()
    common: dict[str, Any] = dict(
        max_steps=1, per_device_train_batch_size=2, report_to=[], use_cpu=True, save_strategy="no",
        logging_steps=1, max_length=256, disable_tqdm=True,
    )  # fmt: skip

    sft_trainer = trl.SFTTrainer(
        model=model, args=trl.SFTConfig(output_dir=str(tmp_path / "sft-out"), **common),
        train_dataset=sft, processing_class=tok,
    )  # fmt: skip
    out = sft_trainer.train()
    assert out.global_step == 1 and out.training_loss > 0

    dpo_trainer = trl.DPOTrainer(
        model=model, ref_model=copy.deepcopy(model),
        args=trl.DPOConfig(output_dir=str(tmp_path / "dpo-out"), **common),
        train_dataset=dpo, processing_class=tok,
    )  # fmt: skip
    out = dpo_trainer.train()
    assert out.global_step == 1 and out.training_loss > 0


def test_export_cli(synthesized: Path, tmp_path: Path) -> None:
    from toa_graph.cli import main

    assert (
        main(["export", "sft", "--input", str(synthesized), "--output", str(tmp_path / "s.jsonl")])
        == 0
    )
    assert len((tmp_path / "s.jsonl").read_text().splitlines()) == 7
    rc = main(["export", "dpo", "--input", str(synthesized), str(synthesized), "--output",
               str(tmp_path / "d.parquet"), "--rejected-rank", "6", "--keep-id"])  # fmt: skip
    assert rc == 0
    import pyarrow.parquet as pq

    t = pq.read_table(tmp_path / "d.parquet")
    assert t.num_rows == 7 and "id" in t.column_names  # shards merged by id: no duplicates
    assert main(["export", "dpo", "--input", str(synthesized), "--output", str(tmp_path / "x.jsonl"),
                 "--rejected-rank", "1"]) == 2  # fmt: skip
