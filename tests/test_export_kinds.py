"""The export registry: the ``export`` command, ``train`` and the dataset card read one
table, and every exported format is either trainable by ``toa-graph train`` (its rows pass
that trainer's row check) or says why not."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_exports import debated, record  # noqa: F401  (debated: a fixture)
from toa_graph.cli import build_parser, subparsers
from toa_graph.export_kinds import EXPORTS, TRAIN_KINDS, describe_exports
from toa_graph.exports import ExportStats
from toa_graph.hub import CardFacts, dataset_card
from toa_graph.registry import METHOD_SPECS
from toa_graph.synthesis import read_records
from toa_graph.training.data import row_error
from toa_graph.training.run import spec_from_recipe

FLAGS = {"rejected_rank": None, "min_gap": None, "keep_id": True, "max_prompt_tokens": None}


def _choices(command: str) -> list[str]:
    parser = subparsers(build_parser())[command]
    (action,) = [a for a in parser._actions if a.dest == "kind"]
    return list(action.choices or [])


def test_export_and_train_choices_come_from_the_registry() -> None:
    assert _choices("export") == list(EXPORTS)
    assert _choices("train") == list(TRAIN_KINDS)
    for spec in METHOD_SPECS.values():  # what a run suggests exporting exists
        assert set(spec.export_kinds) <= set(EXPORTS), spec.name
    help_text = describe_exports()
    for kind in EXPORTS.values():
        assert kind.train in TRAIN_KINDS or (kind.train is None and kind.not_trained), kind.name
        assert kind.name in help_text


def _rows(kind: str, records: list[dict]) -> list[dict]:
    flags = {**FLAGS, "count_tokens": None}
    return list(EXPORTS[kind].rows(records, flags, ExportStats()))


def test_every_trainable_export_passes_its_trainers_row_check(debated: Path) -> None:  # noqa: F811
    plain = [record([0.1, 0.9, 0.5, 0.3], prompt=[{"role": "user", "content": "Q?"}])]
    debate = list(read_records(debated))
    for kind in EXPORTS.values():
        rows = _rows(kind.name, debate if kind.methods == ("debate",) else plain)
        assert rows, kind.name
        if kind.train is not None:
            errors = [row_error(r, kind.train) for r in rows]  # type: ignore[arg-type]
            assert errors == [None] * len(rows), (kind.name, errors)


def test_an_untrainable_kind_is_refused_by_train_saying_what_trains_it() -> None:
    with pytest.raises(ValueError, match="KTOTrainer"):
        spec_from_recipe(None, {"kind": "kto", "data": "d", "model": "m", "output_dir": "o"}, "x")


def test_the_dataset_card_says_how_to_train_on_the_rows() -> None:
    facts = CardFacts()
    list(facts.observe([record([0.5, 0.9])]))
    card = dataset_card("sft-completion", facts, {"train": 1})
    assert "Train: toa-graph train sft." in card
    card = dataset_card("rm", facts, {"train": 1})
    assert "RewardTrainer" in card
