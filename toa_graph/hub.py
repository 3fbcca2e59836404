"""Exports to the Hugging Face Hub: the dataset card, the train/test split and the push.

:class:`CardFacts` gathers what the card states (method, agents, budget, config digest)
from the records while they stream into an export; :func:`dataset_card` and
:func:`split_rows` are pure; only :func:`push_dataset` touches the network.
"""

from __future__ import annotations

import os
import random
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from toa_graph.export_kinds import EXPORTS

__all__ = ["CITATIONS", "CardFacts", "dataset_card", "push_dataset", "split_rows"]


class _Citations(Mapping[str, str]):
    """Method -> BibTeX of its paper, read from the registry (each spec's ``citation``)."""

    def __getitem__(self, method: str) -> str:
        from toa_graph.registry import METHOD_SPECS, method_citation

        if method not in METHOD_SPECS:
            raise KeyError(method)
        return method_citation(method)

    def __iter__(self) -> Iterator[str]:
        from toa_graph.registry import METHOD_SPECS

        return iter(METHOD_SPECS)

    def __len__(self) -> int:
        from toa_graph.registry import METHOD_SPECS

        return len(METHOD_SPECS)


CITATIONS: Mapping[str, str] = _Citations()
"""Method -> BibTeX of its paper (the baselines, random, prs, ensemble and seq_refine,
follow the TOA paper's implementations, so they cite it)."""


def _arxiv(bibtex: str) -> str | None:
    found = re.search(r"(\d{4}\.\d{4,5})", bibtex)
    return found.group(1) if found else None


@dataclass
class CardFacts:
    """What the records say about how a dataset was made."""

    records: int = 0
    methods: Counter[str] = field(default_factory=Counter)
    agents: set[str] = field(default_factory=set)
    budgets: set[int] = field(default_factory=set)
    digests: set[str] = field(default_factory=set)

    def observe(self, records: Iterable[Mapping[str, Any]]) -> Iterator[Mapping[str, Any]]:
        """Pass ``records`` through unchanged, noting each one."""
        for rec in records:
            self.records += 1
            self.methods[str(rec.get("method"))] += 1
            self.agents.update(str(s["agent"]) for s in rec.get("samples") or [] if "agent" in s)
            budget = (rec.get("context") or {}).get("budget")
            if isinstance(budget, int) and not isinstance(budget, bool):
                self.budgets.add(budget)
            if rec.get("config_digest"):
                self.digests.add(str(rec["config_digest"]))
            yield rec


def _one_or_list(values: Sequence[Any]) -> Any:
    return values[0] if len(values) == 1 else list(values)


def dataset_card(
    kind: str,
    facts: CardFacts,
    counts: Mapping[str, int],
    *,
    reward: str | None = None,
    repo: str | None = None,
    reasoning: Mapping[str, Any] | None = None,
) -> str:
    """A dataset card (``README.md``): YAML header, what the rows are, how they were made,
    and the citation of each method's paper. ``reasoning``: how thinking traces were
    exported (``format``, rows ``with_trace``, DPO pairs ``one_sided``), for SFT and DPO."""
    methods = sorted(facts.methods)
    meta: dict[str, Any] = {
        "tags": ["synthetic", "toa-graph", kind],
        "task_categories": ["text-generation"],
        "size_categories": [_size_category(sum(counts.values()))],
        "toa_graph": {
            "export": kind,
            "method": _one_or_list(methods),
            "agents": sorted(facts.agents),
            "reward": reward or "not recorded (pass export --reward)",
            "budget": _one_or_list(sorted(facts.budgets)) if facts.budgets else None,
            "config_digest": _one_or_list(sorted(facts.digests)) if facts.digests else None,
            "records": facts.records,
            "rows": dict(counts),
        },
    }
    if reasoning is not None:
        meta["toa_graph"]["reasoning"] = dict(reasoning)
    from toa_graph.registry import method_citation

    arxiv = sorted({a for m in methods if (a := _arxiv(method_citation(m)))})
    if arxiv:
        meta["arxiv"] = _one_or_list(arxiv)
    header = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True)
    title = repo or f"toa-graph {kind} export"
    split_lines = "\n".join(f"| {name} | {n} |" for name, n in counts.items())
    cites = "\n\n".join(dict.fromkeys(method_citation(m) for m in methods))
    export = EXPORTS.get(kind)
    row_format = f"Rows: {export.row_format}.\nTrain: {export.training}.\n" if export else ""
    return f"""---
{header}---

# {title}

`{kind}` training data made by multi-agent sampling with `toa_graph`: method {", ".join(f"`{m}`" for m in methods) or "unknown"},
agents {", ".join(f"`{a}`" for a in sorted(facts.agents)) or "unknown"},
reward `{meta["toa_graph"]["reward"]}`, budget {meta["toa_graph"]["budget"]}
(config digest {meta["toa_graph"]["config_digest"]}), from {facts.records} prompt records.
{_reasoning_line(reasoning)}
{row_format}
| split | rows |
|---|---|
{split_lines}

```python
from datasets import load_dataset
ds = load_dataset("{repo or "PATH"}")
```

## Citation

```bibtex
{cites}
```
"""


def _reasoning_line(reasoning: Mapping[str, Any] | None) -> str:
    if reasoning is None:
        return ""
    where = {
        "field": "in each assistant turn's `reasoning_content` field",
        "tags": "as `<think>...</think>` before the answer in each assistant turn's `content`",
        "drop": "dropped: assistant turns hold the final answers only",
    }[str(reasoning["format"])]
    line = (
        f"\nThinking traces of reasoning models: {where}; {reasoning['with_trace']} rows carry one"
    )
    if reasoning.get("one_sided") is not None:
        line += f", {reasoning['one_sided']} pairs have a trace on one side only (kept)"
    return line + ".\n"


def _size_category(n: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K")):
        if n < limit:
            return name
    return "100K<n<1M" if n < 1_000_000 else "n>1M"


def split_rows(
    rows: Sequence[dict[str, Any]], test_size: float | None, *, seed: int = 0
) -> dict[str, list[dict[str, Any]]]:
    """``{"train": rows}``, or the rows cut into ``train`` / ``test`` by
    :func:`split_labels` (seeded; row order kept within each part)."""
    if test_size is None:
        return {"train": list(rows)}
    parts: dict[str, list[dict[str, Any]]] = {"train": [], "test": []}
    for label, row in zip(split_labels(len(rows), test_size, seed=seed), rows, strict=True):
        parts[label].append(row)
    return parts


def split_labels(n: int, test_size: float, *, seed: int = 0) -> Iterator[str]:
    """``"train"`` or ``"test"`` for each of ``n`` rows in order, with exactly
    ``round(test_size * n)`` test rows (at least one, and at least one left to train on),
    chosen by a seeded selection sample in one pass (no list of the rows or their order).
    Raises ValueError at once for a bad size or fewer than 2 rows."""
    if not 0 < test_size < 1:
        raise ValueError(f"test size must be between 0 and 1, got {test_size}")
    if n < 2:
        raise ValueError(f"a train/test split needs at least 2 rows, got {n}")
    return _selection_sample(n, min(n - 1, max(1, round(test_size * n))), random.Random(seed))


def _selection_sample(n: int, need: int, rng: random.Random) -> Iterator[str]:
    for i in range(n):
        if rng.random() * (n - i) < need:
            need -= 1
            yield "test"
        else:
            yield "train"


def push_dataset(
    splits: Mapping[str, str | os.PathLike[str]], repo: str, *, card: str, private: bool = False
) -> None:
    """Create the dataset repo, upload the card, then push the splits (JSONL or Parquet
    files, read by ``datasets`` into Arrow on disk, not into Python lists) as a
    ``DatasetDict``.

    The card goes first: ``push_to_hub`` keeps an existing README's text and only adds its
    ``dataset_info`` / ``configs`` to the YAML header.
    """
    from datasets import Dataset, DatasetDict
    from huggingface_hub import HfApi

    def load(path: str | os.PathLike[str]) -> Any:
        if str(path).endswith((".parquet", ".pq")):
            return Dataset.from_parquet(str(path))
        return Dataset.from_json(str(path))

    ds = DatasetDict({name: load(path) for name, path in splits.items()})
    api = HfApi()
    api.create_repo(repo, repo_type="dataset", private=private, exist_ok=True)
    api.upload_file(
        path_or_fileobj=card.encode("utf-8"),
        path_in_repo="README.md",
        repo_id=repo,
        repo_type="dataset",
        commit_message="dataset card (toa-graph export)",
    )
    ds.push_to_hub(repo, private=private, commit_message="data (toa-graph export)")
