"""``toa-graph train``: row checks before any model loads, and 2 real TRL steps each of SFT,
DPO and T-DPO on the CPU with a tiny random model built here."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from toa_graph.cli import main
from toa_graph.distill_errors import TrainError
from toa_graph.training import check_rows, row_error, spec_from_recipe

REPO = Path(__file__).resolve().parent.parent


def _write(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _sft_rows(n: int = 6) -> list[dict[str, Any]]:
    return [
        {
            "messages": [
                {"role": "user", "content": f"What is {i} + {i}?"},
                {"role": "assistant", "content": f"{i} + {i} = {2 * i}.\nFinal answer: {2 * i}"},
            ]
        }
        for i in range(n)
    ]


def _dpo_rows(n: int = 6) -> list[dict[str, Any]]:
    return [
        {
            "prompt": [{"role": "user", "content": f"What is {i} + 1?"}],
            "chosen": [{"role": "assistant", "content": f"Final answer: {i + 1}"}],
            "rejected": [{"role": "assistant", "content": f"Final answer: {i + 2}"}],
        }
        for i in range(n)
    ]


def _tdpo_rows(n: int = 6) -> list[dict[str, Any]]:
    # later debate rounds: the prompt is the shared debate context, not the bare question
    return [
        {
            "prompt": [
                {
                    "role": "user",
                    "content": f"Question: {i} * 2?\nAnswer 1: {2 * i}\nAnswer 2: {2 * i + 1}\n"
                    "Feedback: check the product. Answer again.",
                }
            ],
            "chosen": [{"role": "assistant", "content": f"Final answer: {2 * i}"}],
            "rejected": [{"role": "assistant", "content": f"Final answer: {2 * i + 1}"}],
        }
        for i in range(n)
    ]


@pytest.mark.parametrize(
    ("row", "kind", "needle"),
    [
        ({"prompt": "q", "chosen": "a"}, "dpo", "'rejected'"),
        ({"chosen": "a", "rejected": "b"}, "tdpo", "'prompt'"),
        ({"prompt": "q", "chosen": "", "rejected": "b"}, "dpo", "'chosen' is empty"),
        ({"messages": [{"role": "user", "content": "q"}]}, "sft", "assistant turn"),
        ({"messages": [{"role": "bot", "content": "q"}]}, "sft", "messages'[0].role"),
        ({"messages": [{"role": "user", "content": 3}]}, "sft", "content must be a string"),
        ({"prompt": "q", "chosen": "a", "rejected": "b"}, "sft", "'completion'"),
        ({"instruction": "q"}, "sft", "missing field 'messages'"),
        ([1, 2], "sft", "not a JSON object"),
    ],
)
def test_row_error_names_the_field(row: Any, kind: Any, needle: str) -> None:
    err = row_error(row, kind)
    assert err is not None and needle in err


@pytest.mark.parametrize(
    ("rows", "kind"),
    [
        (_sft_rows(2), "sft"),
        ([{"prompt": "q", "completion": "a"}, {"text": "plain"}], "sft"),
        (_dpo_rows(2), "dpo"),
        (_tdpo_rows(2), "tdpo"),
        ([{"chosen": _sft_rows(1)[0]["messages"], "rejected": _sft_rows(1)[0]["messages"]}], "dpo"),
    ],
)
def test_good_rows_pass(rows: list[Any], kind: Any) -> None:
    assert check_rows(rows, kind, "x.jsonl") == len(rows)


def test_check_rows_names_the_row_and_refuses_empty() -> None:
    rows = [*_dpo_rows(3), {"prompt": "q", "chosen": "a"}]
    with pytest.raises(TrainError, match=r"d\.jsonl: row 4 .*'rejected'"):
        check_rows(rows, "dpo", "d.jsonl")
    with pytest.raises(TrainError, match="empty"):
        check_rows([], "sft", "e.jsonl")


def test_recipe_fields_and_overrides() -> None:
    import yaml

    recipe = yaml.safe_load((REPO / "model_configs/train/toa-dpo.yaml").read_text())
    spec = spec_from_recipe(
        recipe, {"kind": "dpo", "data": "d.jsonl", "output_dir": "o", "trl": {"beta": 0.2}}
    )
    assert spec.kind == "dpo" and spec.model and spec.trl["beta"] == 0.2
    with pytest.raises(TrainError, match="unknown field"):
        spec_from_recipe({"lr": 1}, {"kind": "sft"})
    with pytest.raises(TrainError, match="not 'sft'"):
        spec_from_recipe(recipe, {"kind": "sft", "data": "d", "output_dir": "o"})


def test_every_shipped_recipe_loads() -> None:
    import importlib.util

    import yaml

    from toa_graph.training.run import trl_config

    trl_available = importlib.util.find_spec("trl") is not None
    recipes = sorted((REPO / "model_configs/train").glob("*.yaml"))
    assert len(recipes) >= 4
    for path in recipes:
        recipe = yaml.safe_load(path.read_text())
        spec = spec_from_recipe(recipe, {"data": "d.jsonl", "output_dir": "o"}, str(path))
        assert spec.kind in {"sft", "dpo", "tdpo"}, path
        if trl_available:  # every 'trl:' field is one this TRL knows
            assert trl_config(spec, gpu=False).learning_rate == spec.learning_rate, path


def test_bad_row_refused_before_the_model_loads(tmp_path: Path, capsys) -> None:
    data = _write(tmp_path / "bad.jsonl", [*_sft_rows(2), {"messages": []}])
    out = tmp_path / "ckpt"
    # the model does not exist: reaching it would be a different error
    rc = main(["train", "sft", "--data", str(data), "--model", str(tmp_path / "none"),
               "--output", str(out)])  # fmt: skip
    assert rc == 2
    err = capsys.readouterr().err
    assert "row 3" in err and "'messages'" in err
    assert not out.exists()


def test_empty_data_exits_2_without_checkpoint(tmp_path: Path, capsys) -> None:
    data = tmp_path / "empty.jsonl"
    data.write_text("")
    out = tmp_path / "ckpt"
    rc = main(["train", "dpo", "--data", str(data), "--model", "x", "--output", str(out)])
    assert rc == 2 and "empty" in capsys.readouterr().err
    assert not out.exists()


def test_unknown_trl_field_refused(tmp_path: Path, capsys) -> None:
    pytest.importorskip("trl")
    data = _write(tmp_path / "sft.jsonl", _sft_rows(2))
    rc = main(["train", "sft", "--data", str(data), "--model", "x", "--output",
               str(tmp_path / "o"), "--set", "no_such_field=1"])  # fmt: skip
    assert rc == 2 and "no_such_field" in capsys.readouterr().err


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("trl")
    from tests.tiny_lm import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


def _reload_and_generate(ckpt: Path) -> str:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(ckpt)
    model = AutoModelForCausalLM.from_pretrained(ckpt)
    ids = tok.apply_chat_template(
        [{"role": "user", "content": "What is 2 + 2?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    out = model.generate(**ids, max_new_tokens=5, do_sample=False)
    return str(tok.decode(out[0][ids["input_ids"].shape[1] :]))


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    ("kind", "rows", "extra"),
    [
        ("sft", _sft_rows(), []),
        ("dpo", _dpo_rows(), []),
        ("tdpo", _tdpo_rows(), ["--lora", "--lora-r", "4"]),
    ],
)
def test_two_steps_on_cpu(
    tiny_dir: Path, tmp_path: Path, kind: str, rows: list[Any], extra: list[str], capsys
) -> None:
    data = _write(tmp_path / f"{kind}.jsonl", rows)
    out = tmp_path / "ckpt"
    rc = main(["train", kind, "--data", str(data), "--model", str(tiny_dir), "--output",
               str(out), "--steps", "2", "--batch-size", "2", "--lr", "1e-3",
               "--set", "max_length=128", *extra])  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    assert "2 steps" in capsys.readouterr().out
    log = json.loads((out / "train_log.json").read_text())
    losses = [h["loss"] for h in log if "loss" in h]
    assert len(losses) == 2 and all(math.isfinite(v) for v in losses)
    assert (out / "loss.png").stat().st_size > 1000
    assert not (out / "adapter_config.json").exists()  # LoRA merged: a plain checkpoint
    assert len(_reload_and_generate(out)) > 0


def test_doctests() -> None:
    import doctest

    from toa_graph.training import data

    result = doctest.testmod(data)
    assert result.attempted > 0 and result.failed == 0
