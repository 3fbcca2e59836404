"""``toa-graph evaluate`` against a server with planted answers: exact accuracy, failures
counted wrong and listed, resume, an unreachable endpoint, and the pure parts."""

from __future__ import annotations

import json
import math
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fake_servers import spawn, stop_process
from toa_graph.cli import main
from toa_graph.distill_errors import EvalError
from toa_graph.evaluation import (
    EvalItem,
    bootstrap_ci,
    builtin_rows,
    length_controlled_winrate,
    make_items,
    summarize,
)

N = 10


@pytest.fixture(scope="module")
def gsm8k_answers() -> dict[str, str]:
    """Planted replies for the first N shipped GSM8K items: 6 right (in several formats),
    2 wrong, 1 empty, 1 server error."""
    rows = builtin_rows("gsm8k")[:N]
    replies = []
    for i, row in enumerate(rows):
        gold = row["answer"]
        replies.append(
            [
                f"Step by step...\nFinal answer: {gold}",
                f"So the total is \\boxed{{{gold}}}.",
                f"We get {int(gold):,} in all.\n#### {gold}",
                f"The answer is ${gold}.00.",
                f"Final answer: {gold} dollars",
                f"Final answer: **{gold}**",
                f"Final answer: {int(gold) + 1}",
                "I think it is 0.\nFinal answer: 0" if gold != "0" else "Final answer: 1",
                "",
                "__error__",
            ][i]
        )
    return {row["question"]: reply for row, reply in zip(rows, replies, strict=True)}


@pytest.fixture(scope="module")
def planted(
    gsm8k_answers: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    path = tmp_path_factory.mktemp("planted") / "answers.json"
    path.write_text(json.dumps(gsm8k_answers))
    proc, port = spawn("tests.planted_openai_server", "--answers", str(path))
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        stop_process(proc)


def _summary(out: Path) -> dict[str, Any]:
    return dict(json.loads((out / "summary.json").read_text()))


def test_gsm8k_accuracy_exact_with_failures_listed(planted: str, tmp_path: Path, capsys) -> None:
    out = tmp_path / "ev"
    rc = main(["evaluate", "--task", "gsm8k", "--base-url", planted, "--output", str(out),
               "--limit", str(N), "--no-progress", "--concurrency", "4"])  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    s = _summary(out)
    assert s["n"] == N and s["score"] == pytest.approx(0.6)
    lo, hi = s["ci95"]
    assert 0.0 <= lo < 0.6 < hi <= 1.0
    ids = [r["id"] for r in builtin_rows("gsm8k")[:N]]
    assert s["failed"] == [ids[8], ids[9]]  # in item order
    rows = [json.loads(line) for line in (out / "rows.jsonl").read_text().splitlines()]
    by_id = {r["id"]: r for r in rows}
    assert by_id[ids[8]]["error"] == "empty answer" and by_id[ids[8]]["score"] == 0.0
    assert "500" in by_id[ids[9]]["error"] or "Error" in by_id[ids[9]]["error"]
    assert by_id[ids[4]]["extracted"] == by_id[ids[4]]["gold"]  # "18 dollars" -> 18
    table = capsys.readouterr().out
    assert "accuracy" in table and "0.600" in table and "failed items (2" in table


def test_rerun_resumes_only_the_failed_items(planted: str, tmp_path: Path) -> None:
    out = tmp_path / "ev"
    args = ["evaluate", "--task", "gsm8k", "--base-url", planted, "--output", str(out),
            "--limit", str(N), "--no-progress"]  # fmt: skip
    assert main(args) == 0
    first = len((out / "rows.jsonl").read_text().splitlines())
    assert main(args) == 0
    lines = (out / "rows.jsonl").read_text().splitlines()
    assert first == N and len(lines) == N + 2  # only the 2 failed items were asked again
    assert _summary(out)["n"] == N and _summary(out)["score"] == pytest.approx(0.6)


def test_skip_selects_held_out_items(planted: str, tmp_path: Path) -> None:
    out = tmp_path / "ev"
    rc = main(["evaluate", "--task", "gsm8k", "--base-url", planted, "--output", str(out),
               "--skip", "6", "--limit", "4", "--no-progress"])  # fmt: skip
    assert rc == 0
    s = _summary(out)
    assert s["n"] == 4 and s["score"] == 0.0 and len(s["failed"]) == 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unreachable_endpoint_fails_early_with_its_url(tmp_path: Path, capsys) -> None:
    url = f"http://127.0.0.1:{_free_port()}/v1"
    rc = main(["evaluate", "--task", "gsm8k", "--base-url", url, "--output",
               str(tmp_path / "ev"), "--no-progress"])  # fmt: skip
    assert rc == 2
    assert url in capsys.readouterr().err
    assert not (tmp_path / "ev" / "rows.jsonl").exists()


def test_missing_field_names_row_and_field(tmp_path: Path, capsys) -> None:
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"q": "1+1?", "a": "2"}) + "\n" + json.dumps({"q": "x"}) + "\n")
    rc = main(["evaluate", "--task", "gsm8k", "--data", str(data), "--field-map", "prompt=q",
               "gold=a", "--base-url", "http://127.0.0.1:9/v1", "--output",
               str(tmp_path / "o")])  # fmt: skip
    assert rc == 2
    err = capsys.readouterr().err
    assert "row 2" in err and "'a'" in err


def test_choice_items_letter_the_options() -> None:
    rows = [{"question": "Pick one", "options": ["red", "blue", "green"], "answer": 1}]
    (item,) = make_items(rows, "choice")
    assert "A. red\nB. blue\nC. green" in item.prompt and item.gold == "B"
    with pytest.raises(EvalError, match="row 1"):
        make_items([{"question": "q", "options": list("ABCDEFGHIJK"), "answer": "A"}], "choice")


def test_summarize_winrate_and_chrf() -> None:
    items = [EvalItem(id=str(i), prompt="p", reference="r" * 10) for i in range(4)]
    rows = {
        str(i): {"id": str(i), "score": s, "output": "x" * n, "reference": "r" * 10}
        for i, (s, n) in enumerate([(1.0, 30), (1.0, 25), (0.0, 5), (0.5, 10)])
    }
    s = summarize("winrate", items, rows, label="m")
    assert s["score"] == pytest.approx(0.625) and s["metric"] == "win_rate"
    assert s["lc_win_rate"] < s["score"]  # the wins came with longer answers
    rows_c = {"0": {"id": "0", "score": 50.0, "output": "the cat", "reference": "the cat"}}
    c = summarize("chrf", items[:1], rows_c, label="m")
    assert c["corpus_chrf"] == pytest.approx(100.0)


def test_bootstrap_and_lc_helpers() -> None:
    lo, hi = bootstrap_ci([0.0, 1.0] * 50)
    assert 0.35 < lo < 0.5 < hi < 0.65
    assert all(math.isnan(v) for v in bootstrap_ci([]))
    wins = [1.0] * 10 + [0.0] * 10
    same = length_controlled_winrate(wins, [100] * 20, [100] * 20)
    assert same == pytest.approx(0.5, abs=1e-6)


def length_reward(prompt: Any, responses: list[str]) -> list[float]:
    """A reward for the win-rate test: longer is better (so wins are planted by length)."""
    return [float(len(r)) for r in responses]


def test_winrate_with_a_configured_reward(tmp_path: Path, capsys) -> None:
    rows = [
        {"id": "w1", "instruction": "Describe a cat.", "output": "A cat."},
        {"id": "w2", "instruction": "Describe a dog.", "output": "A loyal, friendly dog."},
        {"id": "w3", "instruction": "Describe a fish.", "output": "A fish swims."},
    ]
    data = tmp_path / "alpaca.json"
    data.write_text(json.dumps(rows))
    answers = {
        "Describe a cat.": "A small, furry, independent animal.",  # longer: win
        "Describe a dog.": "A dog.",  # shorter: loss
        "Describe a fish.": "Fish swim.",  # shorter: loss
    }
    (tmp_path / "a.json").write_text(json.dumps(answers))
    cfg = tmp_path / "judge.yaml"
    # a reward-only file, like model_configs/rewards/*.yaml
    cfg.write_text("reward:\n  kind: python\n  target: tests.test_evaluate:length_reward\n")
    proc, port = spawn("tests.planted_openai_server", "--answers", str(tmp_path / "a.json"))
    try:
        rc = main(["evaluate", "--task", "winrate", "--data", str(data), "--base-url",
                   f"http://127.0.0.1:{port}/v1", "--reward-config", str(cfg), "--output",
                   str(tmp_path / "ev"), "--no-progress"])  # fmt: skip
    finally:
        stop_process(proc)
    assert rc == 0, capsys.readouterr().err
    s = _summary(tmp_path / "ev")
    assert s["metric"] == "win_rate" and s["n"] == 3
    assert s["score"] == pytest.approx(1 / 3)
    assert 0.0 < s["lc_win_rate"] < 1.0


def test_doctests() -> None:
    import doctest

    from toa_graph.evaluation import stats, tasks

    for module in (stats, tasks):
        result = doctest.testmod(module)
        assert result.attempted > 0 and result.failed == 0, module.__name__
