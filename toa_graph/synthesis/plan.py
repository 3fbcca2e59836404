"""What a synthesis run does around the runner: where its output goes by default, the
export commands that fit its records, and ``--estimate`` (a few prompts run for real into
the run's output, kept there, and extrapolated to the whole input)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

from toa_graph.synthesis.estimate import Estimate, extrapolate

__all__ = [
    "EXAMPLES",
    "default_output",
    "estimate_run",
    "export_commands",
    "input_label",
    "sample_prompts",
]

EXAMPLES = Path(__file__).resolve().parent.parent / "data" / "examples.jsonl"
"""The shipped example prompts (the input when none is given)."""


def input_label(source: str) -> str:
    """A directory-name-safe label for an input: a file's name without its suffix, or a
    Hub id (``hf:ORG/NAME`` -> ``ORG_NAME``)."""
    if source.startswith("hf:"):
        text = source[3:]
    else:
        text = Path(source.rstrip("/")).name
        for suffix in (".jsonl", ".json", ".parquet"):
            text = text.removesuffix(suffix)
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "input"


def default_output(method: str, source: str, shard: tuple[int, int] | None) -> Path:
    """``runs/METHOD/INPUT-NAME`` (``-shardKofN`` for a shard): stable, so running the
    same command again resumes instead of starting over."""
    name = input_label(source)
    if shard is not None:
        name += f"-shard{shard[0]}of{shard[1]}"
    return Path("runs") / method / name


def export_commands(method: str, output: Path) -> list[str]:
    """The export commands that fit ``method``'s records."""
    from toa_graph.registry import METHOD_SPECS

    spec = METHOD_SPECS.get(method)
    kinds = spec.export_kinds if spec is not None else ("sft", "dpo")
    return [
        f"toa-graph export {k} --input {shlex.quote(str(output))} "
        f"--output {shlex.quote(str(output / f'{k}.jsonl'))}"
        for k in kinds
    ]


def sample_prompts(
    input_path: Any, field_map: dict[str, str], limit: int | None, shard: Any, k: int
) -> tuple[list[Any], int]:
    """The first ``k`` usable prompts of this run's share of the input, and how many
    prompts that share holds."""
    from toa_graph.synthesis.dataset_input import iter_source
    from toa_graph.synthesis.inputs import BadLine, in_shard

    items: list[Any] = []
    seen = total = 0
    for it in iter_source(input_path, field_map=field_map):
        if isinstance(it, BadLine):
            continue
        if limit is not None and seen >= limit:
            break
        seen += 1
        if in_shard(it.id, shard):
            total += 1
            if len(items) < k:
                items.append(it)
    return items, total


async def estimate_run(
    items: list[Any],
    output: str | Path,
    *,
    total_prompts: int,
    in_flight: int,
    reward: Any,
    **run_opts: Any,
) -> tuple[Estimate, int]:
    """Run ``items`` for real into the run's ``output`` (``run_opts``: the run's
    :func:`~toa_graph.synthesis.run_synthesis` arguments; the records are kept, so the real
    run resumes after them) and extrapolate to ``total_prompts`` at ``in_flight`` prompts
    at once; the estimate and how many records the sample has."""
    from toa_graph.synthesis.records import read_records
    from toa_graph.synthesis.runner import run_synthesis

    summary = await run_synthesis(items, output, reward=reward, **{**run_opts, "limit": None})
    ids = {it.id for it in items}
    records = [r for r in read_records(output) if r.get("id") in ids]
    est = extrapolate(
        records,
        total_prompts=total_prompts,
        concurrency=in_flight,
        sample_wall_s=summary.wall_s,
        failed=summary.failed,
    )
    return est, len(records)
