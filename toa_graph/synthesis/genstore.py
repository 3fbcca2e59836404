"""The generation store of a run directory (``OUTPUT/generations.sqlite``): every
generation a prompt's run got back, kept until the prompt's record is written, so a run
killed mid-prompt pays on resume only for the requests that were in flight.

Entries are keyed by prompt id, request key and occurrence (see
:mod:`toa_graph.agents.memo`); only generations that returned without error are kept.
Each is written (SQLite, write-ahead log, committed per entry: a killed process loses
none) as it returns, read when its prompt starts again, and deleted once the prompt's
record is in the records file (or found there on resume). The store carries its format
version and the run's data digest; a store that cannot be read, of another version or
another data digest is set aside (``generations.sqlite.bad``) and rebuilt, with a warning.
Write failures (a full disk) never stop the run: the store stops keeping, with a warning.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
from collections.abc import Container
from pathlib import Path

from toa_graph.agents.memo import PromptMemo

logger = logging.getLogger(__name__)

STORE_FILE = "generations.sqlite"
STORE_VERSION = "1"


class GenerationStore:
    """The run directory's generation store (see the module docstring)."""

    def __init__(self, path: str | os.PathLike[str], data_digest: str) -> None:
        self.path = Path(path)
        self.data_digest = data_digest
        self.rebuilt: str | None = None
        """Why the store found was set aside, when it was."""
        self.broken = False
        self.reused = 0
        """Generations answered from the store this run (the runner adds each prompt's hits)."""
        try:
            self._db = self._open()
        except (sqlite3.DatabaseError, _Mismatch) as exc:
            self._set_aside(str(exc))
            self._db = self._open()

    def _open(self) -> sqlite3.Connection:
        fresh = not self.path.exists()
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            if fresh:
                db.executescript(
                    "CREATE TABLE meta (k TEXT PRIMARY KEY, v TEXT);"
                    "CREATE TABLE gens (prompt TEXT, key TEXT, occ INTEGER, data TEXT,"
                    " PRIMARY KEY (prompt, key, occ)) WITHOUT ROWID;"
                )
                db.executemany(
                    "INSERT INTO meta VALUES (?, ?)",
                    [("version", STORE_VERSION), ("data_digest", self.data_digest)],
                )
            meta = dict(db.execute("SELECT k, v FROM meta").fetchall())
            if meta.get("version") != STORE_VERSION:
                raise _Mismatch(f"format version {meta.get('version')!r}, not {STORE_VERSION}")
            if meta.get("data_digest") != self.data_digest:
                raise _Mismatch(f"data digest {meta.get('data_digest')!r}, not {self.data_digest}")
            check = db.execute("PRAGMA quick_check").fetchone()
            if not check or check[0] != "ok":
                raise sqlite3.DatabaseError(f"integrity check: {check}")
        except BaseException:
            db.close()
            raise
        return db

    def _set_aside(self, why: str) -> None:
        self.rebuilt = why
        bad = self.path.with_name(self.path.name + ".bad")
        logger.warning(
            "%s cannot be trusted (%s): set aside as %s and rebuilt; the prompts in flight "
            "when the last run stopped are generated again", self.path, why, bad.name,
        )  # fmt: skip
        os.replace(self.path, bad)
        for side in ("-wal", "-shm"):
            Path(str(self.path) + side).unlink(missing_ok=True)

    def memo(self, prompt_id: str) -> PromptMemo:
        """The prompt's memo, holding what the store kept for it."""
        entries: dict[tuple[str, int], str] = {}
        if not self.broken:
            try:
                rows = self._db.execute(
                    "SELECT key, occ, data FROM gens WHERE prompt = ?", (prompt_id,)
                ).fetchall()
                entries = {(k, int(o)): d for k, o, d in rows}
            except sqlite3.DatabaseError as exc:
                self._fail("read", exc)
        return PromptMemo(prompt_id, self, entries)

    def put(self, prompt_id: str, key: str, occurrence: int, data: str) -> None:
        if self.broken:
            return
        try:
            self._db.execute(
                "INSERT OR REPLACE INTO gens VALUES (?, ?, ?, ?)",
                (prompt_id, key, occurrence, data),
            )
        except sqlite3.DatabaseError as exc:
            self._fail("write", exc)

    def forget(self, prompt_id: str) -> None:
        """The prompt's record is written: drop its generations."""
        if self.broken:
            return
        try:
            self._db.execute("DELETE FROM gens WHERE prompt = ?", (prompt_id,))
        except sqlite3.DatabaseError as exc:
            self._fail("prune", exc)

    def prune(self, done: Container[str]) -> int:
        """Drop the generations of prompts whose record is already written; how many prompts."""
        gone = [p for (p,) in self._db.execute("SELECT DISTINCT prompt FROM gens") if p in done]
        for p in gone:
            self.forget(p)
        return len(gone)

    def prompts(self) -> int:
        return int(self._db.execute("SELECT COUNT(DISTINCT prompt) FROM gens").fetchone()[0])

    def _fail(self, what: str, exc: Exception) -> None:
        self.broken = True
        logger.warning(
            "generation store %s: %s failed (%s); the run goes on without keeping "
            "generations (a resume may pay again for the prompts in flight)", self.path, what, exc,
        )  # fmt: skip

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self._db.close()


class _Mismatch(Exception):
    pass
