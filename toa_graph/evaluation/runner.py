"""Run an evaluation: ask the model behind an OpenAI-compatible endpoint every item (bounded
concurrency, progress bar), score each answer, append one JSONL row per item, and write a
JSON summary with bootstrap 95% intervals.

Rows are written as they finish, so an interrupted run keeps them; a rerun with the same
output directory skips the items that already have a row without error (the last row of
an id wins in the summary). An item the model fails on (request error, empty answer)
counts as wrong and is listed in the summary's ``failed``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toa_graph.distill_errors import EvalError
from toa_graph.evaluation.stats import bootstrap_ci, length_controlled_winrate
from toa_graph.evaluation.tasks import ACCURACY_TASKS, EvalItem, EvalTask, chrf, score_accuracy
from toa_graph.reasoning import split_message
from toa_graph.rewards.base import RewardError, check_scores

__all__ = [
    "Endpoint",
    "EvalSpec",
    "check_endpoint",
    "format_table",
    "read_rows",
    "run_eval",
    "summarize",
]

logger = logging.getLogger(__name__)

ROWS_FILE = "rows.jsonl"
SUMMARY_FILE = "summary.json"


@dataclass(kw_only=True)
class Endpoint:
    """An OpenAI-compatible server (``.../v1``) and the model name to ask."""

    base_url: str
    model: str | None = None
    """None: the first model the server lists."""
    api_key: str | None = None


@dataclass(kw_only=True)
class EvalSpec:
    """One evaluation run.

    task: what is measured (see :mod:`toa_graph.evaluation.tasks`).
    items: the prompts with their gold answers / references.
    output_dir: ``rows.jsonl`` and ``summary.json`` go here (reuse it to resume).
    label: the model's name in the summary and table.
    concurrency: requests in flight at once.
    max_tokens, temperature: sampling (greedy by default, for repeatable numbers).
    reward: scores output vs. reference for ``winrate`` and the output for ``comet-kiwi``.
    """

    task: EvalTask
    items: Sequence[EvalItem]
    output_dir: Path
    endpoint: Endpoint
    label: str = "model"
    concurrency: int = 8
    max_tokens: int = 512
    temperature: float = 0.0
    timeout_s: float = 300.0
    reward: Any = None
    progress: bool = True


async def check_endpoint(endpoint: Endpoint, timeout_s: float = 10.0) -> str:
    """The model name to use; raises :class:`EvalError` naming the URL if it does not answer."""
    import httpx

    url = endpoint.base_url.rstrip("/") + "/models"
    headers = {"Authorization": f"Bearer {endpoint.api_key}"} if endpoint.api_key else {}
    try:
        async with httpx.AsyncClient(timeout=timeout_s) as client:
            resp = await client.get(url, headers=headers)
            resp.raise_for_status()
            listed = [m["id"] for m in resp.json().get("data", [])]
    except (httpx.HTTPError, ValueError, KeyError) as e:
        raise EvalError(f"endpoint {endpoint.base_url} is not reachable ({url}: {e})") from e
    if endpoint.model:
        return endpoint.model
    if not listed:
        raise EvalError(f"endpoint {endpoint.base_url} lists no model; pass --model")
    return str(listed[0])


def read_rows(path: Path) -> dict[str, dict[str, Any]]:
    """The rows of an output file by item id (the last row of an id wins)."""
    rows: dict[str, dict[str, Any]] = {}
    if not path.exists():
        return rows
    with path.open(encoding="utf-8") as f:
        for line in f:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a kill
            rows[str(row["id"])] = row
    return rows


async def _generate(client: Any, model: str, item: EvalItem, spec: EvalSpec) -> dict[str, Any]:
    t0 = time.monotonic()
    try:
        resp = await client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": item.prompt}],
            max_tokens=spec.max_tokens,
            temperature=spec.temperature,
        )
        split = split_message(resp.choices[0].message)  # answers are read from the answer
        text, reasoning = split.answer, split.reasoning
        tokens = resp.usage.completion_tokens if resp.usage else None
        error = None if text.strip() else "empty answer"
        if split.unfinished and not text.strip():
            error = "no answer after its thinking (raise --max-tokens)"
    except Exception as e:  # an item that fails counts as wrong, the run goes on
        text, reasoning, tokens, error = "", None, None, f"{type(e).__name__}: {e}"
    return {
        "output": text,
        **({"reasoning": reasoning} if reasoning else {}),
        "completion_tokens": tokens,
        "latency_s": round(time.monotonic() - t0, 3),
        "error": error,
    }


def _finite(result: Any, n: int) -> list[float]:
    """``n`` finite scores (the comparison needs every one of them), else RewardError."""
    scores = check_scores(result, n)
    if not all(math.isfinite(s) for s in scores):
        raise RewardError(f"reward returned a non-finite score: {scores}")
    return scores


async def _score(item: EvalItem, row: dict[str, Any], spec: EvalSpec) -> dict[str, Any]:
    out = row["output"]
    failed = row["error"] is not None
    if spec.task in ACCURACY_TASKS:
        extracted, ok = score_accuracy(spec.task, out, item.gold or "")
        return {"extracted": extracted, "score": float(ok and not failed)}
    if spec.task == "chrf":
        return {"score": 0.0 if failed else chrf(out, item.reference or "")}
    if spec.reward is None:
        raise EvalError(f"task {spec.task} needs a reward model or judge (--reward-config)")
    if spec.task == "comet-kiwi":
        if failed:
            return {"score": 0.0}
        (s,) = _finite(await spec.reward.ascore(item.source or item.prompt, [out], None), 1)
        return {"score": s}
    if failed:
        return {"score": 0.0, "reward": None, "reference_reward": None}
    ref = item.reference or ""
    r_out, r_ref = _finite(
        await spec.reward.ascore(item.source or item.prompt, [out, ref], [ref]), 2
    )
    win = 1.0 if r_out > r_ref else 0.5 if r_out == r_ref else 0.0
    return {"score": win, "reward": float(r_out), "reference_reward": float(r_ref)}


async def run_eval(spec: EvalSpec) -> dict[str, Any]:
    """Evaluate every item not done yet, then summarise all rows (see module doc)."""
    from openai import AsyncOpenAI
    from tqdm.auto import tqdm

    model = await check_endpoint(spec.endpoint)
    spec.output_dir.mkdir(parents=True, exist_ok=True)
    rows_path = spec.output_dir / ROWS_FILE
    done = {k for k, r in read_rows(rows_path).items() if r.get("error") is None}
    todo = [it for it in spec.items if it.id not in done]
    client = AsyncOpenAI(
        base_url=spec.endpoint.base_url,
        api_key=spec.endpoint.api_key or "EMPTY",
        timeout=spec.timeout_s,
        max_retries=2,
    )
    sem = asyncio.Semaphore(max(1, spec.concurrency))
    bar = tqdm(total=len(spec.items), initial=len(spec.items) - len(todo), disable=not spec.progress,
               desc=f"evaluate {spec.label}", unit="item")  # fmt: skip

    async def one(item: EvalItem, out: Any) -> None:
        async with sem:
            row: dict[str, Any] = {"id": item.id, "model": spec.label, "task": spec.task}
            row.update(await _generate(client, model, item, spec))
            row.update(await _score(item, row, spec))
            row.update(gold=item.gold, reference=item.reference)
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
            out.flush()
            bar.update(1)

    try:
        with rows_path.open("a", encoding="utf-8") as out:
            await asyncio.gather(*(one(it, out) for it in todo))
    finally:
        bar.close()
        await client.close()
    summary = summarize(spec.task, spec.items, read_rows(rows_path), label=spec.label)
    summary["endpoint"] = spec.endpoint.base_url
    (spec.output_dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=1), encoding="utf-8")
    return summary


def _metric(task: str) -> str:
    return {"winrate": "win_rate", "chrf": "chrf", "comet-kiwi": "comet_kiwi"}.get(task, "accuracy")


def summarize(
    task: str, items: Sequence[EvalItem], rows: dict[str, dict[str, Any]], *, label: str
) -> dict[str, Any]:
    """The summary of the rows of these items: mean score with a bootstrap 95% interval,
    failures listed; winrate adds the length-controlled win rate, chrf the corpus chrF."""
    got = [rows[it.id] for it in items if it.id in rows]
    scores = [float(r["score"]) for r in got]
    lo, hi = bootstrap_ci(scores)
    summary: dict[str, Any] = {
        "model": label,
        "task": task,
        "metric": _metric(task),
        "n": len(got),
        "missing": len(items) - len(got),
        "score": sum(scores) / len(scores) if scores else math.nan,
        "ci95": [lo, hi],
        "failed": [r["id"] for r in got if r.get("error")],
        "mean_output_chars": (sum(len(r["output"]) for r in got) / len(got)) if got else 0.0,
    }
    if task == "winrate":
        ok = [r for r in got if r.get("reference")]
        summary["lc_win_rate"] = length_controlled_winrate(
            [float(r["score"]) for r in ok],
            [len(r["output"]) for r in ok],
            [len(r["reference"]) for r in ok],
        )
    if task == "chrf" and got:
        from sacrebleu.metrics import CHRF

        refs = [r.get("reference") or "" for r in got]
        summary["corpus_chrf"] = CHRF().corpus_score([r["output"] for r in got], [refs]).score
    return summary


def format_table(summaries: Sequence[dict[str, Any]]) -> str:
    """A plain-text table: one line per summary."""
    head = f"{'model':<24} {'task':<10} {'metric':<10} {'n':>5} {'score':>8} {'95% CI':>17} {'failed':>6}"
    lines = [head, "-" * len(head)]
    for s in summaries:
        lo, hi = s["ci95"]
        extra = f"  LC {s['lc_win_rate']:.3f}" if "lc_win_rate" in s else ""
        lines.append(
            f"{s['model'][:24]:<24} {s['task']:<10} {s['metric']:<10} {s['n']:>5} "
            f"{s['score']:>8.3f} {f'[{lo:.3f}, {hi:.3f}]':>17} {len(s['failed']):>6}{extra}"
        )
    return "\n".join(lines)
