"""A compact table of prompt ids: the done set of a run and the input's duplicate check.

At the paper's scale (60,000 prompts a run, 10^6 in a sharded one) a ``set`` or ``dict`` of
id strings costs 90-115 bytes an id, and its growth was most of a long run's RSS growth.
An :class:`IdTable` keeps each id as its 8-byte blake2b digest (and, optionally, one
8-byte value such as the input line it was first seen on) in sorted ``array`` runs:
8 bytes an id (16 with values), whatever the ids' length.

New ids go to a small dict; when it holds :data:`BUFFER` ids it is sorted into a run, and
runs are merged size-tiered (the newest run into the one before it while it is at least
as large), so there are at most ~log2(n / BUFFER) runs to search and each id is merged
~log2(n / BUFFER) times over the table's life. A lookup is a dict probe plus one
``bisect`` per run. Two different ids share a 64-bit digest with probability ~n^2 / 2^65
(under 10^-7 at 10^6 ids). Pure: no I/O.
"""

from __future__ import annotations

import bisect
import hashlib
import heapq
from array import array
from collections.abc import Iterator

BUFFER = 4096
"""Ids kept in the dict before they are sorted into a run (about 400 KB at most)."""


def id_key(rid: str) -> int:
    """An id's 64-bit key: the first 8 bytes of its blake2b digest."""
    return int.from_bytes(hashlib.blake2b(rid.encode("utf-8"), digest_size=8).digest(), "little")


class IdTable:
    """A set of id strings (``in``, ``len``, :meth:`add`); with ``values=True`` also a map
    from each to a signed 64-bit value (:meth:`get`; the first value added for an id is
    kept). The ids themselves are not stored."""

    def __init__(self, *, values: bool = False) -> None:
        self.values = values
        self._buf: dict[int, int] = {}
        self._keys: list[array[int]] = []
        self._vals: list[array[int]] = []
        """Parallel to ``_keys`` with ``values``; empty arrays without."""
        self._n = 0

    def add(self, rid: str, value: int = 0) -> bool:
        """Add ``rid`` (with ``value`` if new); whether it was new."""
        k = id_key(rid)
        if self._find(k) is not None:
            return False
        self._buf[k] = value if self.values else 0
        self._n += 1
        if len(self._buf) >= BUFFER:
            self._flush()
        return True

    def get(self, rid: str) -> int | None:
        """The value first added with ``rid`` (0 without ``values``); ``None`` when it is
        not in the table."""
        return self._find(id_key(rid))

    def __contains__(self, rid: object) -> bool:
        return isinstance(rid, str) and self._find(id_key(rid)) is not None

    def __len__(self) -> int:
        return self._n

    def __iter__(self) -> Iterator[int]:
        """The keys (digests), unordered across runs: for tests and diagnostics."""
        yield from self._buf
        for keys in self._keys:
            yield from keys

    def nbytes(self) -> int:
        """Bytes held by the sorted runs (the dict buffer aside)."""
        return sum(k.itemsize * len(k) + v.itemsize * len(v) for k, v in self.runs())

    def runs(self) -> list[tuple[array[int], array[int]]]:
        return list(zip(self._keys, self._vals, strict=True))

    def _find(self, k: int) -> int | None:
        v = self._buf.get(k)
        if v is not None:
            return v
        for keys, vals in zip(self._keys, self._vals, strict=True):
            i = bisect.bisect_left(keys, k)
            if i < len(keys) and keys[i] == k:
                return vals[i] if self.values else 0
        return None

    def _flush(self) -> None:
        order = sorted(self._buf)
        self._keys.append(array("Q", order))
        self._vals.append(array("q", (self._buf[k] for k in order) if self.values else ()))
        self._buf = {}
        while len(self._keys) > 1 and len(self._keys[-1]) >= len(self._keys[-2]):
            self._merge_last_two()

    def _merge_last_two(self) -> None:
        """Merge the newest run into the one before it (no key is in both: :meth:`add`
        checks every run first)."""
        kb, vb = self._keys.pop(), self._vals.pop()
        ka, va = self._keys.pop(), self._vals.pop()
        keys: array[int] = array("Q")
        vals: array[int] = array("q")
        if self.values:
            for k, v in heapq.merge(zip(ka, va, strict=True), zip(kb, vb, strict=True)):
                keys.append(k)
                vals.append(v)
        else:
            keys.extend(heapq.merge(ka, kb))
        self._keys.append(keys)
        self._vals.append(vals)
