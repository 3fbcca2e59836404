"""The compact id table behind the done set and the input's duplicate check."""

from __future__ import annotations

import random

import pytest

from toa_graph.synthesis import idtable
from toa_graph.synthesis.idtable import IdTable


@pytest.mark.parametrize("values", [False, True])
def test_matches_a_dict_across_many_flushes_and_merges(
    monkeypatch: pytest.MonkeyPatch, values: bool
) -> None:
    monkeypatch.setattr(idtable, "BUFFER", 7)  # many runs and merges from few ids
    rng = random.Random(3)
    table, ref = IdTable(values=values), {}
    for i in range(2_000):
        rid = f"id-{rng.randrange(1_500)}"
        new = table.add(rid, i)
        assert new == (rid not in ref)
        ref.setdefault(rid, i)
    assert len(table) == len(ref)
    for rid, first in ref.items():
        assert rid in table
        assert table.get(rid) == (first if values else 0)
    for j in range(1_500, 1_700):
        assert f"id-{j}" not in table and table.get(f"id-{j}") is None
    assert 42 not in table  # only strings are ids
    table.add("still-in-the-buffer", 5)  # 1,092 ids so far: 156 full buffers, then this one
    assert table.get("still-in-the-buffer") == (5 if values else 0)
    # size-tiered: runs shrink from oldest to newest, few of them
    sizes = [len(k) for k, _ in table.runs()]
    assert sizes == sorted(sizes, reverse=True) and len(sizes) <= 12
    assert sorted(table) == sorted(set(table))  # no key stored twice
    assert table.nbytes() == 8 * sum(sizes) * (2 if values else 1)


def test_memory_per_id_is_a_few_bytes() -> None:
    import tracemalloc

    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        table = IdTable()
        for i in range(50_000):
            table.add(f"prompt-{i:08d}-with-a-longish-id")
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    # a set of the same strings costs ~150 bytes an id; the buffer dict adds at most
    # BUFFER entries, so the per-id share stays small at 50,000 ids
    assert (after - before) / 50_000 < 20, (after - before) / 50_000
