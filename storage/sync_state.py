"""The uploader's own state, in a small SQLite file next to the store (``<store file>-sync``).

It records the *quarantined* events: events the server refused with a non-retryable 4xx (a
schema or size violation). They stay pending in the store (kept and counted, never silently
deleted; the outbox caps still apply to them) but the uploader passes over them so the rest of
the outbox proceeds. :meth:`SyncState.release` puts them back in the upload queue (e.g. after a
server fix). Kept outside the store's schema so the store file format is unchanged.

Table ``quarantine``: ``seq`` (the store's event seq, primary key), ``event_id``, ``status``
(the HTTP status), ``reason`` (the server's error text), ``quarantined_at`` (seconds since the
epoch, UTC).
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from pocketrec.storage.events import Event

SUFFIX = "-sync"


@dataclass(frozen=True)
class QuarantinedEvent:
    """An event the server refused (``quarantined_at`` in seconds since the epoch)."""

    seq: int
    event_id: str
    status: int
    reason: str
    quarantined_at: float


def state_path(store_path: str | os.PathLike[str]) -> Path:
    """Where the sync state of the store file ``store_path`` lives."""
    return Path(f"{os.fspath(store_path)}{SUFFIX}")


class SyncState:
    """The quarantine table; thread-safe (one connection behind a lock)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        """Open (creating) the state file at ``path``."""
        self.path = Path(path)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode = WAL")
        self._conn.execute("PRAGMA synchronous = FULL")
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS quarantine (seq INTEGER PRIMARY KEY, event_id TEXT NOT "
            "NULL, status INTEGER NOT NULL, reason TEXT NOT NULL, quarantined_at REAL NOT NULL)"
        )

    @classmethod
    def for_store(cls, store_path: str | os.PathLike[str]) -> SyncState:
        """The state file that belongs to the store file ``store_path``."""
        return cls(state_path(store_path))

    def quarantine(self, events: Iterable[Event], *, status: int, reason: str) -> int:
        """Quarantine ``events`` (one transaction); returns how many were not already."""
        rows = [(e.seq, e.event_id, status, reason[:2000], time.time()) for e in events]
        with self._lock:
            before = self._conn.total_changes
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._conn.executemany(
                    "INSERT OR IGNORE INTO quarantine VALUES (?, ?, ?, ?, ?)", rows
                )
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            return self._conn.total_changes - before

    def quarantined_seqs(self) -> set[int]:
        """The seq numbers of the quarantined events."""
        with self._lock:
            return {int(row[0]) for row in self._conn.execute("SELECT seq FROM quarantine")}

    def quarantined(self) -> list[QuarantinedEvent]:
        """Every quarantined event, by seq."""
        with self._lock:
            rows = self._conn.execute("SELECT * FROM quarantine ORDER BY seq").fetchall()
        return [QuarantinedEvent(*row) for row in rows]

    def release(self, seqs: Iterable[int] | None = None) -> int:
        """Put quarantined events (all, or those in ``seqs``) back in the upload queue; returns
        how many were released."""
        with self._lock:
            if seqs is None:
                return self._conn.execute("DELETE FROM quarantine").rowcount
            params = [(int(seq),) for seq in seqs]
            before = self._conn.total_changes
            self._conn.executemany("DELETE FROM quarantine WHERE seq = ?", params)
            return self._conn.total_changes - before

    def close(self) -> None:
        """Close the file (idempotent)."""
        with self._lock:
            self._conn.close()
